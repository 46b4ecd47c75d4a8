"""Rules over the monitors' figures: alerts (and when one fires, resolves), autonomy rules.

A `Threshold` reads one figure of a `Figures` (any number `FIGURE_FIELDS` publishes, or
`drift_psi`, the largest PSI of any watched field) and says whether it holds: beyond
`above` (or `below`) with at least `min_sample` behind it. It clears only once the
figure is back across `clear` (the threshold itself unless set), so a figure hovering at
the line does not flap. With too small a sample it neither holds nor clears: what was
firing keeps firing, and nothing new fires.

An `AlertBook` is what alerts are firing, folded from the ledger's `alert.fired` and
`alert.resolved` entries; `transitions` compares each rule's readings with it and says
which alerts fire and which resolve. Each fires once while its condition lasts.

Pure: figures and times are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from charter.ledger import events
from charter.monitors._figures import FIGURE_FIELDS, Figures

__all__ = [
    "ALERT_FIRED",
    "ALERT_RESOLVED",
    "DRIFT_PSI",
    "RULE_FIGURES",
    "SEVERITIES",
    "AlertBook",
    "AlertRule",
    "AutonomyRule",
    "Reading",
    "Threshold",
    "figure_value",
    "selects",
]

ALERT_FIRED = events.ALERT_FIRED
ALERT_RESOLVED = events.ALERT_RESOLVED

#: The largest PSI of any field the group watches (its sample: that field's recent values).
DRIFT_PSI = "drift_psi"

#: The figures a rule may name: every number `Figures` publishes, and `drift_psi`.
RULE_FIGURES: frozenset[str] = frozenset(
    {
        name
        for name in FIGURE_FIELDS
        if name
        not in {
            *("level", "agent", "action", "model_id", "model_version", "end"),
            *("reliability", "drift", "worst_sources", "worst_fields"),
        }
    }
    | {DRIFT_PSI}
)

SEVERITIES = ("info", "warning", "critical")


def figure_value(figures: Figures, name: str) -> tuple[float | None, int]:
    """The value of figure `name` in `figures` and the sample behind it."""
    if name == DRIFT_PSI:
        scored = [(d.psi, d) for d in figures.drift if d.psi is not None]
        if not scored:
            return None, 0
        psi, worst = max(scored, key=lambda pair: pair[0])
        return psi, min(worst.recent_samples, worst.baseline_samples)
    value = getattr(figures, name)
    meta = FIGURE_FIELDS[name]
    sample = getattr(figures, meta.sample) if meta.sample else value
    return (None if value is None else float(value)), int(sample or 0)


@dataclass(frozen=True, slots=True)
class Reading:
    """A threshold read on one group's figures."""

    figure: str
    value: float | None
    sample: int
    holds: bool
    clear: bool

    def to_json(self) -> dict[str, Any]:
        """The reading as plain JSON."""
        return {"figure": self.figure, "value": self.value, "sample": self.sample}


@dataclass(frozen=True, slots=True)
class Threshold:
    """A condition over one figure: beyond `above` or `below`, on `min_sample` or more."""

    figure: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    min_sample: int = 1

    def __post_init__(self) -> None:
        if self.figure not in RULE_FIGURES:
            raise ValueError(f"`{self.figure}` is not a figure a rule can read")
        if (self.above is None) == (self.below is None):
            raise ValueError("a threshold has exactly one of `above` and `below`")

    @property
    def line(self) -> float:
        """The value it holds beyond."""
        line = self.above if self.above is not None else self.below
        assert line is not None  # one of the two, checked when made
        return line

    def describe(self) -> str:
        """The condition in words: `rejection_rate > 0.2 (on ≥ 50)`."""
        sign = ">" if self.above is not None else "<"
        return f"{self.figure} {sign} {self.line:g} (on at least {self.min_sample})"

    def read(self, figures: Figures) -> Reading:
        """Whether the threshold holds, or has cleared, on these figures."""
        value, sample = figure_value(figures, self.figure)
        if value is None or sample < self.min_sample:
            return Reading(self.figure, value, sample, holds=False, clear=False)
        back = self.clear if self.clear is not None else self.line
        if self.above is not None:
            return Reading(self.figure, value, sample, value > self.above, value <= back)
        assert self.below is not None
        return Reading(self.figure, value, sample, value < self.below, value >= back)


def selects(patterns: Sequence[str], value: str | None) -> bool:
    """Whether `value` matches one of the glob `patterns` (none given: everything)."""
    if not patterns:
        return True
    return value is not None and any(fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """An alert: a threshold over a window, per group of `level`, with its runbook.

    `agents` and `actions` are glob patterns narrowing the groups it watches (none: all).
    """

    id: str
    threshold: Threshold
    window_seconds: int
    severity: str = "warning"
    level: str = "agent"
    agents: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    runbook: str | None = None
    summary: str = ""

    def watches(self, figures: Figures) -> bool:
        """Whether a group's figures are this rule's to judge."""
        if figures.level != self.level:
            return False
        if self.agents and not selects(self.agents, figures.agent):
            return False
        return not self.actions or selects(self.actions, figures.action)


@dataclass(frozen=True, slots=True)
class AutonomyRule:
    """When to demote an agent, how far, and how much clean work earns a proposal back.

    `agents` and `roles` narrow the agents it judges (glob patterns; none: every agent).
    """

    id: str
    thresholds: tuple[Threshold, ...]
    window_seconds: int
    demote: int = 1
    floor: int | None = None
    restore_after: int = 100
    agents: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    reason: str = ""

    def judges(self, agent: str, role: str | None) -> bool:
        """Whether the rule applies to `agent` (of `role`)."""
        if self.agents and not selects(self.agents, agent):
            return False
        return not self.roles or selects(self.roles, role)


#: (rule id, agent, action): one alert per rule and group.
AlertKey = tuple[str, str | None, str | None]


class AlertBook:
    """The alerts firing now, as the ledger records them."""

    def __init__(self) -> None:
        self._firing: dict[AlertKey, Mapping[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._firing)

    def firing(self) -> list[Mapping[str, Any]]:
        """The `alert.fired` payload of every alert firing, by rule and group."""
        return [self._firing[k] for k in sorted(self._firing, key=_order)]

    def apply(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Fold an `alert.fired` or `alert.resolved` entry."""
        key = (payload["alert"], payload.get("agent"), payload.get("action"))
        if kind == ALERT_FIRED:
            self._firing[key] = dict(payload)
        elif kind == ALERT_RESOLVED:
            self._firing.pop(key, None)

    def transitions(
        self, rules: Iterable[AlertRule], figures: Mapping[str, Sequence[Figures]], now: str
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The alerts that fire and resolve on these figures, as (kind, payload).

        `figures` holds each rule's groups, by rule id, over the rule's window. A firing
        alert whose group has no figures any more (it went quiet) resolves.
        """
        for rule in rules:
            seen: set[AlertKey] = set()
            for group in figures.get(rule.id, ()):
                if not rule.watches(group):
                    continue
                key = (rule.id, group.agent, group.action)
                seen.add(key)
                reading = rule.threshold.read(group)
                firing = self._firing.get(key)
                if firing is None and reading.holds:
                    yield ALERT_FIRED, _fired(rule, group, reading, now)
                elif firing is not None and reading.clear:
                    yield ALERT_RESOLVED, _resolved(firing, reading, now)
            for key, firing in list(self._firing.items()):
                if key[0] == rule.id and key not in seen:
                    yield ALERT_RESOLVED, _resolved(firing, None, now)


def _order(key: AlertKey) -> tuple[str, str, str]:
    return key[0], key[1] or "", key[2] or ""


def _fired(rule: AlertRule, group: Figures, reading: Reading, now: str) -> dict[str, Any]:
    return {
        "alert": rule.id,
        "agent": group.agent,
        "action": group.action,
        "severity": rule.severity,
        "condition": rule.threshold.describe(),
        "figure": reading.figure,
        "value": reading.value,
        "sample": reading.sample,
        "window": rule.window_seconds,
        "runbook": rule.runbook,
        "summary": rule.summary,
        "since": now,
    }


def _resolved(firing: Mapping[str, Any], reading: Reading | None, now: str) -> dict[str, Any]:
    return {
        "alert": firing["alert"],
        "agent": firing.get("agent"),
        "action": firing.get("action"),
        "severity": firing.get("severity"),
        "figure": firing.get("figure"),
        "value": reading.value if reading is not None else None,
        "sample": reading.sample if reading is not None else 0,
        "fired_at": firing.get("since"),
        "runbook": firing.get("runbook"),
    }
