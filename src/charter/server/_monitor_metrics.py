"""Prometheus series of what the service watches: figures, alerts, autonomy and halts.

Two sources, set up by `Metrics.watch`:

- `FleetFigures`, a collector: each agent's autonomy level (in force and assigned) and
  the halts in force, read from the service's folded state at every scrape (dictionary
  reads).
- `MonitorFigures`: every figure of `charter.monitors.Figures` of each agent-action
  group, agent and the fleet (`level` action, agent, fleet) as `charter_monitor_<figure>`,
  the headline figures of each model too (`MODEL_FIGURES`), drift per watched field, the
  alerts firing, the controller's demotions and open proposals. Only for a bundle that
  watches (a `monitors`, `alerts` or `autonomy_rules` section): building the service's
  `Monitors` folds the ledger's horizon, which a server whose bundle watches nothing
  should not pay for because someone scrapes it.

The names are stable and documented in docs/api.md#metrics. A figure of an empty sample
(None) is left out, never exported as NaN or 0; each rate's sample is its own series.

Cost. The figures of the four levels take about 4 ms per agent-action group, drift being
most of it: about 1.05 s for a 50-agent fleet of 250 groups (`bench/bench_monitors.py`,
its four `figures` rows summed), and rendering that fleet's 23,000 series (3 MB) another
0.2 s. `/metrics` is answered on the server's event loop, so a scrape computes none of
that: the series are rendered to text when they are computed, and a snapshot that took
more than `INLINE_SECONDS` is refreshed in a thread of its own, at most every
`REFRESH_SECONDS`, scrapes being answered meanwhile with the last one
(`charter_monitor_refresh_timestamp_seconds` says when it was computed). A cheap
snapshot, a small fleet's, is recomputed at every scrape, so it is never stale.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from charter.monitors import FIGURE_FIELDS, Figures
from charter.policy import Bundle

if TYPE_CHECKING:
    from charter.service import Charter

__all__ = [
    "DRIFT_FIGURES",
    "DRIFT_LEVELS",
    "FIGURE_GAUGES",
    "GROUP_LABELS",
    "INLINE_SECONDS",
    "LEVELS",
    "MODEL_FIGURES",
    "REFRESH_SECONDS",
    "FleetFigures",
    "MonitorFigures",
    "watches",
]

_log = logging.getLogger("charter.server.metrics")

#: The levels exported, each group's series labelled with its level.
LEVELS = ("model", "action", "agent", "fleet")
#: The levels whose drift is exported. An agent's drift is its actions' drift, field by
#: field, so the agent level would repeat the action level's series; each model's would
#: double the action level's for the rarer question of one model's inputs.
DRIFT_LEVELS = ("action", "fleet")
#: The labels of every figure's series; empty above the group's level (`agent` empty for
#: the fleet, `model_id` and `model_version` empty but at the model level).
GROUP_LABELS = ("level", "agent", "action", "model_id", "model_version")
_DRIFT_LABELS = (*GROUP_LABELS, "field")
#: The fields of `Figures` that name the group or hold lists rather than one number.
_NOT_GAUGES = frozenset(
    {
        "level",
        "agent",
        "action",
        "model_id",
        "model_version",
        "window_seconds",
        "end",
        "reliability",
        "drift",
        "worst_sources",
        "worst_fields",
    }
)
#: The figures exported as `charter_monitor_<name>`, in `FIGURE_FIELDS` order.
FIGURE_GAUGES: tuple[str, ...] = tuple(n for n in FIGURE_FIELDS if n not in _NOT_GAUGES)
#: The figures also exported per model (`level="model"`): what a model upgrade moves,
#: with their samples. A model is a slice of one agent's action, so its every figure
#: would double the action level's series; the API has them all (`level=model`).
MODEL_FIGURES = frozenset(
    {
        "decisions",
        "autonomous_rate",
        "approval_rate",
        "escalation_rate",
        "deny_rate",
        "approvals_ended",
        "rejection_rate",
        "outcomes",
        "success_rate",
        "calibration_samples",
        "brier_score",
        "expected_calibration_error",
    }
)
#: Each drift figure exported as `charter_monitor_drift_<name>`, with its meaning.
DRIFT_FIGURES: dict[str, str] = {
    "psi": "population stability index of the field, recent window against its baseline",
    "ks_statistic": "two-sample Kolmogorov-Smirnov statistic (numeric fields)",
    "new_value_share": "share of recent values the baseline never had (categorical fields)",
    "recent_samples": "values of the field observed in the recent window",
}
#: A snapshot that took longer than this is refreshed in a thread, not by the scrape.
INLINE_SECONDS = 0.05
#: Seconds between two refreshes in a thread, at the least (an evaluation tick).
REFRESH_SECONDS = 5.0


def watches(bundle: Bundle) -> bool:
    """Whether `bundle` has a `monitors`, `alerts` or `autonomy_rules` section."""
    watch = bundle.spec.watch
    return watch.monitors is not None or bool(watch.alerts) or bool(watch.autonomy_rules)


def _label(value: str | None) -> str:
    return value or ""


def _number(value: object) -> float | None:
    """`value` as a sample, or None for what is no finite number (an empty sample's None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class FleetFigures(Collector):
    """Each agent's autonomy level and the halts in force, read at every scrape."""

    def __init__(self, charter: Charter) -> None:
        self._charter = charter

    def collect(self) -> Iterator[Metric]:
        """The agents' levels and the halts, from the service's folded state."""
        level = GaugeMetricFamily(
            "charter_autonomy_level",
            "Each agent's autonomy level in force: a person's or the controller's change, "
            "else its profile's.",
            labels=["agent"],
        )
        assigned = GaugeMetricFamily(
            "charter_autonomy_assigned_level",
            "Each agent's autonomy level in its profile (the registry's, else the bundle's).",
            labels=["agent"],
        )
        halts = GaugeMetricFamily("charter_halts_in_force", "Halts in force.")
        halt = GaugeMetricFamily(
            "charter_halt_in_force",
            "1 for each halt in force, by scope (all, agent, action, role) and target.",
            labels=["scope", "target"],
        )
        charter = self._charter
        try:
            for profile in charter.agents():
                now = charter.autonomy(profile.id)
                level.add_metric([profile.id], profile.autonomy if now is None else now)
                assigned.add_metric([profile.id], profile.autonomy)
            in_force = charter.halts
        except Exception:  # a scrape must answer; the figures are absent meanwhile
            _log.warning("could not read the agents and halts for /metrics", exc_info=True)
            in_force = ()
        halts.add_metric([], len(in_force))
        for each in in_force:
            halt.add_metric([each.scope, _label(each.target)], 1)
        yield from (level, assigned, halts, halt)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The monitor series of one refresh, as text: when (monotonic) and how long it took."""

    text: bytes
    taken: float
    seconds: float


class _Fixed(Collector):
    """Families already filled, for rendering them once."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class _Families:
    """Empty metric families of every monitor series, filled by one refresh."""

    def __init__(self) -> None:
        self.figures = {
            name: GaugeMetricFamily(
                f"charter_monitor_{name}", _figure_help(name), labels=GROUP_LABELS
            )
            for name in FIGURE_GAUGES
        }
        self.drift = {
            name: GaugeMetricFamily(
                f"charter_monitor_drift_{name}",
                f"Monitors, per watched field of each action: {meaning}.",
                labels=_DRIFT_LABELS,
            )
            for name, meaning in DRIFT_FIGURES.items()
        }
        self.window = GaugeMetricFamily(
            "charter_monitor_window_seconds",
            "The window the charter_monitor_* figures cover, in seconds (whole buckets).",
        )
        self.firing = GaugeMetricFamily(
            "charter_alerts_firing",
            "1 for each alert of the bundle firing, by rule, group, figure and runbook.",
            labels=["alert", "severity", "agent", "action", "figure", "runbook"],
        )
        self.demoted = GaugeMetricFamily(
            "charter_autonomy_demoted",
            "1 while the autonomy controller's demotion of the agent stands, else 0.",
            labels=["agent"],
        )
        self.proposals = GaugeMetricFamily(
            "charter_autonomy_proposals",
            "The controller's open proposals to give demoted agents their level back.",
        )
        self.proposed = GaugeMetricFamily(
            "charter_autonomy_proposed_level",
            "The level each open proposal would give the agent back.",
            labels=["agent"],
        )
        self.refresh_seconds = GaugeMetricFamily(
            "charter_monitor_refresh_duration_seconds",
            "How long computing these monitor series took.",
        )
        self.refreshed_at = GaugeMetricFamily(
            "charter_monitor_refresh_timestamp_seconds",
            "When these monitor series were computed (Unix time).",
        )

    def all(self) -> tuple[Metric, ...]:
        """Every family, in a fixed order."""
        return (
            *self.figures.values(),
            *self.drift.values(),
            self.window,
            self.firing,
            self.demoted,
            self.proposals,
            self.proposed,
            self.refresh_seconds,
            self.refreshed_at,
        )

    def add_group(self, figures: Figures) -> None:
        """One group's figures; its drift too at the levels that export drift."""
        labels = [
            figures.level,
            _label(figures.agent),
            _label(figures.action),
            _label(figures.model_id),
            _label(figures.model_version),
        ]
        model = figures.level == "model"
        for name, family in self.figures.items():
            if model and name not in MODEL_FIGURES:
                continue
            value = _number(getattr(figures, name))
            if value is not None:
                family.add_metric(labels, value)
        if figures.level not in DRIFT_LEVELS:
            return
        for drift in figures.drift:
            where = [labels[0], labels[1], drift.action, labels[3], labels[4], drift.field]
            for name, family in self.drift.items():
                value = _number(getattr(drift, name))
                if value is not None:
                    family.add_metric(where, value)


def _figure_help(name: str) -> str:
    field = FIGURE_FIELDS[name]
    sample = f" (sample: charter_monitor_{field.sample})" if field.sample else ""
    return f"Monitors, per group at `level` over the window: {field.help}{sample}."


def _families_of(charter: Charter) -> _Families:
    """The monitor series of the service now (builds its `Monitors` on first use)."""
    monitors = charter.monitors
    out = _Families()
    for level in LEVELS:
        groups: Sequence[Figures] = monitors.figures(level=level)
        for group in groups:
            out.add_group(group)
        if level == "fleet" and groups:
            out.window.add_metric([], groups[0].window_seconds)
    for alert in monitors.alerts():
        labels = ("alert", "severity", "agent", "action", "figure", "runbook")
        out.firing.add_metric([str(alert.get(k) or "") for k in labels], 1)
    for profile in charter.agents():
        out.demoted.add_metric([profile.id], 0 if monitors.demotion(profile.id) is None else 1)
    proposals = monitors.proposals()
    out.proposals.add_metric([], len(proposals))
    for proposal in proposals:
        out.proposed.add_metric([str(proposal["agent"])], float(proposal["level"]))
    return out


class MonitorFigures:
    """The monitors' series for a bundle that watches, refreshed without stalling scrapes.

    Args:
        charter: the service whose monitors are read.
        inline_seconds: a snapshot that took at most this long is recomputed by each
            scrape; a slower one in a thread (the scrape answers with the last one).
            `INLINE_SECONDS` when None, as it stands when the collector is made.
        every: seconds between two refreshes in a thread, at the least.
    """

    def __init__(
        self,
        charter: Charter,
        *,
        inline_seconds: float | None = None,
        every: float = REFRESH_SECONDS,
    ) -> None:
        self._charter = charter
        self._inline = INLINE_SECONDS if inline_seconds is None else inline_seconds
        self._every = every
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._refreshing: threading.Thread | None = None

    def render(self) -> bytes:
        """The series in the Prometheus text format; empty for a bundle that watches nothing.

        The last snapshot's, refreshed first when that is cheap.
        """
        if not watches(self._charter.bundle):
            return b""
        snapshot = self._current()
        return snapshot.text if snapshot is not None else b""

    def refresh(self) -> None:
        """Compute and render the series now, in the calling thread.

        Raises:
            CharterError: the ledger cannot be read now (the last snapshot stays).
        """
        started = time.perf_counter()
        families = _families_of(self._charter)
        seconds = time.perf_counter() - started
        families.refresh_seconds.add_metric([], seconds)
        families.refreshed_at.add_metric([], time.time())
        registry = CollectorRegistry()
        registry.register(_Fixed(families.all()))
        text = generate_latest(registry)
        snapshot = _Snapshot(text, time.monotonic(), time.perf_counter() - started)
        with self._lock:
            self._snapshot = snapshot

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a refresh running in a thread, if any; whether none runs any more."""
        with self._lock:
            running = self._refreshing
        if running is not None:
            running.join(timeout)
            return not running.is_alive()
        return True

    def _current(self) -> _Snapshot | None:
        with self._lock:
            snapshot = self._snapshot
            inline = snapshot is None or snapshot.seconds <= self._inline
            stale = snapshot is not None and time.monotonic() - snapshot.taken >= self._every
            if not inline and stale and self._refreshing is None:
                self._refreshing = threading.Thread(
                    target=self._in_thread, name="charter-metrics-monitors", daemon=True
                )
                self._refreshing.start()
        if not inline:
            return snapshot
        try:
            self.refresh()
        except Exception:  # a scrape must answer: with the last figures, or without them
            _log.warning("could not compute the monitors' series for /metrics", exc_info=True)
        with self._lock:
            return self._snapshot

    def _in_thread(self) -> None:
        try:
            self.refresh()
        except Exception:  # the thread ends; the next stale scrape starts another
            _log.warning("could not refresh the monitors' series for /metrics", exc_info=True)
        finally:
            with self._lock:
                self._refreshing = None
