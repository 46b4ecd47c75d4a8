"""Prometheus figures for one app, in a registry of its own.

Each `create_app` gets its own `CollectorRegistry`, so two apps in one process (tests,
or an embedded server beside another) never share or double-register series. Counted
here: decisions, latency, ledger appends, replays, grants. Read at each scrape: circuit
breakers (below), and agents' levels, halts and the monitors' figures, alerts and
proposals (`charter.server._monitor_metrics`). docs/api.md#metrics lists every name.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from charter.server._monitor_metrics import FleetFigures, MonitorFigures
from charter.store import LedgerLog

if TYPE_CHECKING:
    from charter.service import Charter

__all__ = ["BREAKER_STATES", "CONTENT_TYPE_LATEST", "Metrics"]

# Decisions are answered in well under a millisecond to tens of milliseconds.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """The server's figures: decisions, latency, ledger appends, replays, grants."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "charter_decisions",
            "Decisions made, by verdict (idempotent replays not counted).",
            ["verdict"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "charter_decision_seconds",
            "Time to decide and durably record one decision, as the HTTP handler sees it.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "charter_ledger_append_seconds",
            "Time of one ledger append transaction (a group commit of one or more entries).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.replays = Counter(
            "charter_idempotent_replays",
            "Decision requests answered from an earlier decision with the same key.",
            registry=self.registry,
        )
        self.grants_redeemed = Counter(
            "charter_grants_redeemed", "Grants redeemed.", registry=self.registry
        )
        self.grants_refused = Counter(
            "charter_grants_refused",
            "Grant redemptions refused, by reason code.",
            ["code"],
            registry=self.registry,
        )
        #: Each verdict's child of `decisions`, looked up once: `labels()` costs more
        #: than the increment on the hot route.
        self.decided: dict[str, Counter] = {
            verdict: self.decisions.labels(verdict)
            for verdict in ("allow", "require_approval", "escalate", "deny")
        }
        for code in ("grant_unknown", "grant_used", "grant_expired", "args_mismatch"):
            self.grants_refused.labels(code)
        #: The monitors' series of the service `watch` was given (None before).
        self.monitor_figures: MonitorFigures | None = None

    def watch(self, charter: Charter) -> None:
        """Report `charter`'s breakers, agents, halts and monitors at every scrape.

        They are read then, not counted; the monitors' figures only for a bundle that
        watches, from a snapshot refreshed as `MonitorFigures` says.
        """
        self.registry.register(_BreakerFigures(charter))
        self.registry.register(FleetFigures(charter))
        self.monitor_figures = MonitorFigures(charter)

    def render(self) -> bytes:
        """The figures in the Prometheus text format.

        The monitors' series come rendered already (`MonitorFigures.render`): there are
        thousands in a large fleet, too many to format on the event loop at each scrape.
        """
        watched = self.monitor_figures
        return generate_latest(self.registry) + (watched.render() if watched else b"")

    def time_appends(self, store: LedgerLog) -> None:
        """Observe every `append` transaction of `store` in `append_seconds`.

        The ledger writer calls the store it was given, so the store object itself is
        wrapped; a store that is already timed by another app is left alone.
        """
        append = store.append
        if getattr(append, "_charter_timed", False):
            return
        histogram = self.append_seconds

        @functools.wraps(append)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return append(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

        marked: Callable[..., Any] = timed
        marked._charter_timed = True  # type: ignore[attr-defined]
        setattr(store, "append", marked)  # noqa: B010 - assigning a method is the point


#: `charter_breaker_state`'s value for each status: higher is more held back.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class _BreakerFigures(Collector):
    """Each circuit's state, figures and transitions, read from the service per scrape."""

    def __init__(self, charter: Charter) -> None:
        self._charter = charter

    def collect(self) -> Iterator[Metric]:
        labels = ["breaker", "action", "agent"]
        state = GaugeMetricFamily(
            "charter_breaker_state",
            "Each circuit's state: 0 closed, 1 half-open (trials), 2 open.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "charter_breaker_failures",
            "Failed outcomes in the circuit's window (closed), or that tripped it (open).",
            labels=labels,
        )
        sample = GaugeMetricFamily(
            "charter_breaker_outcomes",
            "Outcomes in the circuit's window (closed), or the sample that tripped it (open).",
            labels=labels,
        )
        transitions = CounterMetricFamily(
            "charter_breaker_transitions",
            "Transitions the circuit has had (opened, closed), as the ledger records them.",
            labels=labels,
        )
        try:
            circuits = self._charter.circuits()
        except Exception:  # a scrape must answer; the figures are absent meanwhile
            circuits = []
        for circuit in circuits:
            values = [circuit.breaker, circuit.action, circuit.agent or ""]
            state.add_metric(values, BREAKER_STATES[circuit.status])
            failures.add_metric(values, circuit.failures)
            sample.add_metric(values, circuit.sample)
            transitions.add_metric(values, circuit.generation)
        yield from (state, failures, sample, transitions)
