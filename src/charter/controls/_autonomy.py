"""The autonomy controller: demote an agent when the evidence turns, propose it back later.

An `AutonomyRule` of the bundle (`charter.monitors`) names thresholds over an agent's
figures (rejection rate, drift, success rate, ...): when one holds over the rule's
window, the agent loses `demote` levels (never below `floor`). The controller demotes by
itself, each time a ledger event naming the rule and the figures. It never promotes:
once `restore_after` decisions since the demotion are clean (no rule of the agent's
holds, and each has cleared), it proposes the level back, and a person accepts or
declines the proposal.

Hysteresis, so it does not flap: after a demotion, a rule judges only the decisions made
since (the bad window that demoted the agent does not demote it again at every tick),
and a threshold clears only past its `clear` value. A person's own autonomy change
replaces the controller's: it is not undone, and nothing is proposed over it.

Pure: the controller's memory is folded from the ledger (`apply`), figures are given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charter.ledger import events
from charter.monitors import AutonomyRule, Figures, Reading, Threshold

__all__ = ["CONTROLLER", "AutonomyController", "Demotion"]

#: Who the controller's entries name as their author.
CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class Demotion:
    """The controller's last demotion of an agent, as the ledger records it."""

    agent: str
    rule: str
    at: dt.datetime
    before: int
    after: int

    def to_json(self) -> dict[str, Any]:
        """As the API, the UI and `charter monitors --json` give it (`at` in the ledger's form)."""
        return {
            "agent": self.agent,
            "rule": self.rule,
            "at": self.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "from": self.before,
            "level": self.after,
        }


class AutonomyController:
    """What the controller did and proposed, folded from the ledger; what it does next."""

    def __init__(self) -> None:
        self._demoted: dict[str, Demotion] = {}
        self._proposed: dict[str, Mapping[str, Any]] = {}
        self._declined: dict[str, dt.datetime] = {}

    # -- memory --------------------------------------------------------------------------

    def apply(self, kind: str, at: str, payload: Mapping[str, Any]) -> None:
        """Fold an `autonomy.changed`, `autonomy.proposed` or `autonomy.declined` entry."""
        agent = payload.get("agent")
        if not isinstance(agent, str):
            return
        when = dt.datetime.fromisoformat(at)
        if kind == events.AUTONOMY_CHANGED:
            self._proposed.pop(agent, None)
            if payload.get("by") == CONTROLLER and payload.get("rule"):
                self._demoted[agent] = Demotion(
                    agent,
                    str(payload["rule"]),
                    when,
                    int(payload.get("from", payload["level"])),
                    int(payload["level"]),
                )
            else:  # a person decided: the controller's demotion is theirs to keep or undo
                self._demoted.pop(agent, None)
                self._declined.pop(agent, None)
        elif kind == events.AUTONOMY_PROPOSED:
            self._proposed[agent] = dict(payload, at=at)
        elif kind == events.AUTONOMY_DECLINED:
            self._proposed.pop(agent, None)
            self._declined[agent] = when

    def demotion(self, agent: str) -> Demotion | None:
        """The controller's demotion of `agent` still standing, if any."""
        return self._demoted.get(agent)

    def proposal(self, agent: str) -> Mapping[str, Any] | None:
        """The open proposal to give `agent` a level back, if any."""
        return self._proposed.get(agent)

    def proposals(self) -> list[Mapping[str, Any]]:
        """Every open proposal, by agent."""
        return [self._proposed[a] for a in sorted(self._proposed)]

    def judged_since(self, agent: str, now: dt.datetime, window_seconds: int) -> dt.datetime:
        """Where the figures a rule judges `agent` on begin: the window, or the demotion."""
        start = now - dt.timedelta(seconds=window_seconds)
        demoted = self._demoted.get(agent)
        return max(start, demoted.at) if demoted is not None else start

    def clean_since(self, agent: str) -> dt.datetime | None:
        """Since when decisions count towards a proposal: the demotion, or a decline."""
        demoted = self._demoted.get(agent)
        if demoted is None:
            return None
        declined = self._declined.get(agent)
        return max(demoted.at, declined) if declined is not None else demoted.at

    # -- judging -------------------------------------------------------------------------

    def demote(
        self,
        rule: AutonomyRule,
        agent: str,
        level: int,
        lowest: int,
        figures: Figures | None,
    ) -> dict[str, Any] | None:
        """The `autonomy.changed` payload demoting `agent` by `rule`, or None.

        `figures` are the agent's over `judged_since`; `level` the one in force, `lowest`
        the bundle's lowest level.
        """
        floor = max(rule.floor if rule.floor is not None else lowest, lowest)
        if figures is None or level <= floor:
            return None
        held = [(t, r) for t, r in ((t, t.read(figures)) for t in rule.thresholds) if r.holds]
        if not held:
            return None
        after = max(level - rule.demote, floor)
        why = "; ".join(_said(t, r) for t, r in held)
        reason = f"{rule.reason or f'autonomy rule `{rule.id}`'}: {why}"
        return {
            "agent": agent,
            "level": after,
            "from": level,
            "reason": reason,
            "by": CONTROLLER,
            "rule": rule.id,
            "figures": [r.to_json() for _, r in held],
            "window": rule.window_seconds,
        }

    def propose(
        self,
        agent: str,
        level: int,
        rules: Sequence[AutonomyRule],
        figures: Figures | None,
    ) -> dict[str, Any] | None:
        """The `autonomy.proposed` payload giving `agent` its level back, or None.

        `figures` are the agent's since `clean_since`; proposed once every rule that
        judges it is clean on them and enough decisions were made.
        """
        demoted = self._demoted.get(agent)
        if demoted is None or agent in self._proposed or figures is None or level >= demoted.before:
            return None
        needed = max((r.restore_after for r in rules), default=0)
        if figures.decisions < needed:
            return None
        readings = [(t, t.read(figures)) for rule in rules for t in rule.thresholds]
        if any(r.holds for _, r in readings):
            return None
        # past the line but not back across `clear`: not clean yet (too small a sample is)
        if any(
            not r.clear and r.value is not None and r.sample >= t.min_sample for t, r in readings
        ):
            return None
        return {
            "agent": agent,
            "level": demoted.before,
            "from": level,
            "rule": demoted.rule,
            "decisions": figures.decisions,
            "reason": (
                f"{figures.decisions} decisions since autonomy rule `{demoted.rule}` demoted it, "
                "and no rule holds on them"
            ),
            "figures": [r.to_json() for _, r in readings],
            "by": CONTROLLER,
        }


def _said(threshold: Threshold, reading: Reading) -> str:
    value = f"{reading.value:.3g}" if reading.value is not None else "none"
    return f"{threshold.figure} is {value} on {reading.sample} (limit {threshold.line:g})"
