"""The service's state as a fold over the ledger: halts, autonomy, agents, budgets.

`ServiceState.apply` is the one reducer: the service applies each event it commits, and
opening a ledger folds every entry through the same function, so what a restarted
service holds is exactly what the running one held. Nothing here reads a clock or a
store; the state is the function of the entries it was given.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from charter.controls._breakers import BreakerBook
from charter.controls._budgets import BudgetSpending
from charter.ledger import LedgerEntry, NewEvent, events
from charter.model import AgentProfile, AgentState, Halt, Verdict
from charter.policy import BreakerSpec

__all__ = ["FOLDED_KINDS", "ServiceState"]

#: An outcome's own `decision_id` key (canonical JSON: a key follows `{` or `,`; one
#: inside a string value would follow an escaped quote).
_DECISION_ID = re.compile(r'[{,]"decision_id":"([^"\\]+)"')
_COUNTED = frozenset({events.OUTCOME, events.OUTCOME_OVERDUE})
_TRANSITIONS = frozenset({events.BREAKER_OPENED, events.BREAKER_CLOSED})


def _profile(obj: Mapping[str, Any]) -> AgentProfile | None:
    """The agent an `agent.updated` payload registers."""
    return AgentState.from_json({"profile": obj}).profile


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What later decisions depend on, as the ledger's history says it stands.

    Halts, autonomy overrides, the run-time agent registry and the deployed version
    change by replacement: `apply` returns a new state and leaves this one as it was.
    Budget spending only ever grows by allowed decisions and is read by windows that
    move forward, so it is one accumulator that a state shares with its successors
    (copying it per decision would cost more than the decision); so is the breaker book.
    """

    halts: Mapping[tuple[str, str | None], Halt] = field(default_factory=dict)
    autonomy: Mapping[str, int] = field(default_factory=dict)
    registry: Mapping[str, AgentProfile] = field(default_factory=dict)
    deployed: str | None = None
    spending: BudgetSpending = field(default_factory=BudgetSpending)
    breakers: BreakerBook = field(default_factory=BreakerBook)
    #: The ledger position of the last change of each halt, autonomy override and
    #: registry entry: a change older than the one in force is ignored, so a replica that
    #: reads another's entries after its own ends where the ledger's order says.
    versions: Mapping[tuple[str, str | None, str | None], int] = field(default_factory=dict)

    @classmethod
    def fold(cls, entries: Iterable[LedgerEntry], *, budget_cutoff: str = "") -> ServiceState:
        """The state after `entries`, in order.

        Decision entries before `budget_cutoff` (an RFC 3339 UTC time, the ledger's one
        form, so text order is time order) can count against no budget of the live
        bundle any more: they are skipped without being decoded, which keeps opening a
        large ledger quick, unless they are a breaker's trial. Outcomes that name no
        breaker are skipped the same way.
        """
        state = cls()
        for entry in entries:
            kind = entry.kind
            if kind == events.DECISION:
                if entry.at < budget_cutoff and '"breaker_trial"' not in entry.payload:
                    continue
            elif kind == events.OUTCOME and '"breakers"' not in entry.payload:
                # Read for its decision's id alone, when that decision owes it.
                if state.breakers.awaited:
                    found = _DECISION_ID.search(entry.payload)
                    if found is not None:
                        state.breakers.arrived(found.group(1))
                continue
            elif kind == events.GRANT_REDEEMED and '"outcome_due"' not in entry.payload:
                continue
            if kind in FOLDED_KINDS:
                state = state.apply(entry.kind, entry.at, entry.payload_object(), entry.seq)
        return state

    def apply_event(self, event: NewEvent, seq: int | None = None) -> ServiceState:
        """`apply` for an event as the service queues it (committed at `seq`, if known)."""
        return self.apply(event.kind, event.at, event.payload, seq)

    def apply_entry(self, entry: LedgerEntry) -> ServiceState:
        """`apply` for an entry read back from the ledger."""
        if entry.kind not in FOLDED_KINDS:
            return self
        return self.apply(entry.kind, entry.at, entry.payload_object(), entry.seq)

    def apply(
        self, kind: str, at: str, payload: Mapping[str, Any], seq: int | None = None
    ) -> ServiceState:
        """The state after one event; kinds that carry no state leave it as it is.

        With `seq` (the entry's ledger position), a halt, resume, autonomy change, agent
        update or deploy that is not newer than the last change of the same halt, agent,
        override or deployment is ignored: folding entries out of order, or one twice,
        ends where the ledger's order does.
        """
        if kind == events.DECISION:
            decision = payload["decision"]
            budgets = payload.get("budgets")
            if decision["verdict"] == Verdict.ALLOW.value:
                if budgets:
                    self.spend(
                        decision["agent"], dt.datetime.fromisoformat(at), decision["risk"], budgets
                    )
                state = payload.get("state")
                if state and state.get("breakers") and "modifies" not in payload:
                    self.breakers.note_trials(payload["decision_id"], decision, state)
            return self
        if kind == events.GRANT_REDEEMED:
            due = payload.get("outcome_due")
            if due is not None:
                self.breakers.expect(
                    payload["decision_id"], payload["agent"], payload["action"], due
                )
            return self
        if kind in _COUNTED:
            self.breakers.arrived(payload["decision_id"])
            circuits = payload.get("breakers")
            if circuits:
                overdue = kind == events.OUTCOME_OVERDUE
                self.breakers.count(
                    circuits,
                    payload["action"],
                    payload["decision_id"],
                    dt.datetime.fromisoformat(payload["due"] if overdue else at),
                    failed=overdue or not payload["success"],
                )
            return self
        if kind in _TRANSITIONS:
            self.breakers.apply(kind, payload)
            return self
        if kind in (events.HALT, events.RESUME):
            key = (payload["scope"], payload.get("target"))
            versions = self._newer(("halt", *key), seq)
            if versions is None:
                return self
            if kind == events.RESUME:
                halts = {k: v for k, v in self.halts.items() if k != key}
                return replace(self, halts=halts, versions=versions)
            halt = Halt(key[0], key[1], payload.get("reason", ""))
            return replace(self, halts={**self.halts, key: halt}, versions=versions)
        if kind == events.AUTONOMY_CHANGED:
            agent, level = payload["agent"], payload["level"]
            versions = self._newer(("autonomy", agent, None), seq)
            if versions is None:
                return self
            levels = {k: v for k, v in self.autonomy.items() if k != agent}
            if level is not None:
                levels[agent] = int(level)
            return replace(self, autonomy=levels, versions=versions)
        if kind == events.AGENT_UPDATED:
            profile = _profile(payload["agent"])
            if profile is None:
                return self
            versions = self._newer(("agent", profile.id, None), seq)
            if versions is None:
                return self
            return replace(self, registry={**self.registry, profile.id: profile}, versions=versions)
        if kind == events.POLICY_DEPLOYED:
            versions = self._newer(("deployed", None, None), seq)
            if versions is None:
                return self
            return replace(self, deployed=payload["version"], versions=versions)
        return self

    def _newer(
        self, key: tuple[str, str | None, str | None], seq: int | None
    ) -> Mapping[tuple[str, str | None, str | None], int] | None:
        """The versions with `key` at `seq`; None when the change in force is as new."""
        if seq is None:
            return self.versions
        if self.versions.get(key, 0) >= seq:
            return None
        return {**self.versions, key: seq}

    def spend(self, agent: str, at: dt.datetime, risk: int, budgets: Iterable[str]) -> None:
        """Count an allowed decision against its budgets.

        The service calls this when it decides, before the entry commits, so the next
        decision (perhaps in the same commit) sees it; the fold calls it for each
        recorded decision. Both pass the recorded time.
        """
        self.spending.add(agent, at, int(risk), tuple(budgets))

    def unspend(self, agent: str, at: dt.datetime, risk: int, budgets: Iterable[str]) -> None:
        """Take back `spend` for a decision whose entry was never committed."""
        self.spending.remove(agent, at, int(risk), tuple(budgets))

    def profile(self, agent: str, bundle_agents: Mapping[str, AgentProfile]) -> AgentProfile | None:
        """The agent as decisions see it: the registry's entry, else the bundle's."""
        return self.registry.get(agent) or bundle_agents.get(agent)

    def agent_state(
        self,
        agent: str,
        budgets: Iterable[tuple[str, int]],
        now: dt.datetime,
        *,
        action: str = "",
        breakers: Iterable[BreakerSpec] = (),
    ) -> AgentState:
        """The state a decision for `agent` sees at `now`: what the ledger records beside it.

        `budgets` are the (id, window seconds) pairs of the budgets the decision falls
        under, `breakers` the breakers over its `action`.
        """
        windows = list(budgets)
        return AgentState(
            profile=self.registry.get(agent),
            autonomy=self.autonomy.get(agent),
            budgets=self.spending.state(agent, windows, now) if windows else {},
            halts=tuple(self.halts.values()),
            breakers=self.breakers.states(breakers, action, agent, now) if breakers else (),
        )


#: The kinds that change the state; every other kind passes through `apply` as it is.
FOLDED_KINDS = frozenset(
    {
        events.DECISION,
        events.HALT,
        events.RESUME,
        events.AUTONOMY_CHANGED,
        events.AGENT_UPDATED,
        events.POLICY_DEPLOYED,
        events.GRANT_REDEEMED,
        events.OUTCOME,
        events.OUTCOME_OVERDUE,
        events.BREAKER_OPENED,
        events.BREAKER_CLOSED,
    }
)
