"""Circuit breakers at the service: what outcomes count towards, and what they trip.

It says which circuits an outcome counts towards, records each transition the figures
call for, and records the outcomes that never came.

The figures and states are the controls' (`charter.controls.BreakerBook`, folded into
the session's state); this module is the part that needs the live bundle, the lock and
the writer. A transition is recorded under the lock, like a halt, so every decision
after it in the ledger saw it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from charter.controls import CircuitKey, circuit_key
from charter.ledger import NewEvent, events
from charter.model import BreakerState
from charter.policy import BreakerSpec
from charter.service._clock import format_time
from charter.service._session import Session
from charter.service._ticker import Ticker
from charter.store import IndexChange, SetOnceConflict

__all__ = ["Breakers", "CircuitView"]

_log = logging.getLogger("charter.service")
_OVERDUE_BATCH = 200


@dataclass(frozen=True, slots=True)
class CircuitView:
    """One circuit as operators see it: its breaker, where it stands, its live figures."""

    breaker: str
    action: str
    agent: str | None
    status: str  # closed, open or half_open
    then: str
    reason: str
    generation: int
    since: str | None
    until: str | None
    trials_left: int | None
    #: Trials that succeeded and failed so far (None while closed).
    trials_succeeded: int | None
    trials_failed: int | None
    #: Outcomes in the window and the failures among them while closed; the figures that
    #: tripped it while open or half-open.
    sample: int
    failures: int
    window_seconds: int
    min_sample: int
    failure_rate: float

    def to_json(self) -> dict[str, Any]:
        """The circuit as plain JSON."""
        return {
            "breaker": self.breaker,
            "action": self.action,
            "agent": self.agent,
            "status": self.status,
            "then": self.then,
            "reason": self.reason,
            "generation": self.generation,
            "since": self.since,
            "until": self.until,
            "trials_left": self.trials_left,
            "trials_succeeded": self.trials_succeeded,
            "trials_failed": self.trials_failed,
            "sample": self.sample,
            "failures": self.failures,
            "window_seconds": self.window_seconds,
            "min_sample": self.min_sample,
            "failure_rate": self.failure_rate,
        }


class Breakers:
    """The service's side of circuit breakers."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._timers = Ticker("charter-outcome-timers", self.fire_overdue)

    # -- what outcomes count towards ---------------------------------------------------

    def watching(self, agent: str, action: str) -> tuple[BreakerSpec, ...]:
        """The live bundle's breakers over `agent` doing `action`."""
        s = self._s
        profile = s.state.profile(agent, s.bundle.agents)
        if profile is None:
            return ()
        plan = s.bundle.plan_for(agent, profile.role, action)
        return plan.breakers if plan is not None else ()

    def timeout(self, agent: str, action: str) -> int | None:
        """Seconds `agent`'s `action` may run before its outcome is overdue (None: never)."""
        s = self._s
        profile = s.state.profile(agent, s.bundle.agents)
        plan = s.bundle.plan_for(agent, profile.role, action) if profile else None
        return plan.timeout if plan is not None else None

    def circuits_of(self, agent: str, action: str) -> list[dict[str, Any]]:
        """The circuits an outcome of `agent`'s `action` counts towards, as recorded."""
        return [
            {"id": b.id, "agent": agent if b.per_agent else None}
            for b in self.watching(agent, action)
        ]

    def after_outcome(self, agent: str, action: str, cause: str) -> None:
        """Record what the figures call for now that an outcome was folded in.

        The caller holds the lock; the outcome's entry is committed and folded.
        """
        s = self._s
        now = s.clock()
        for breaker in self.watching(agent, action):
            key = circuit_key(breaker, action, agent)
            proposal = s.state.breakers.propose(breaker, key, now, cause)
            if proposal is None:
                continue
            kind, payload = proposal
            try:
                s.record(NewEvent(kind, format_time(now), payload))  # folds it too
            except BaseException:
                s.state.breakers.given_up(key)
                raise
            _log.warning(
                "breaker %s on %s%s: %s",
                breaker.id,
                action,
                f" by {agent}" if breaker.per_agent else "",
                "opened" if kind == events.BREAKER_OPENED else "closed",
            )

    # -- outcomes that never came ------------------------------------------------------

    def fire_overdue(self, now: dt.datetime | None = None) -> int:
        """Record every redeemed action whose outcome is past due; returns how many.

        Each is an `outcome.overdue` entry, once per decision across every process on
        the ledger (the index refuses a second, as it refuses a second outcome), and
        counts as a failure for the breakers over the action.
        """
        s = self._s
        moment = now or s.clock()
        at = format_time(moment)
        with s.lock:
            owed = s.state.breakers.overdue(at, _OVERDUE_BATCH)
        fired = 0
        for decision_id, agent, action, due in owed:
            with s.lock:
                event = events.outcome_overdue(
                    at, decision_id, agent, action, due, self.circuits_of(agent, action)
                )
                change = IndexChange(
                    decision_id, {"outcome_success": False}, seq_column="outcome_seq"
                )
                try:
                    entry = s.writer.submit(event, change, awaited=True).result()
                except SetOnceConflict:  # its outcome came, or another process fired it
                    s.state.breakers.arrived(decision_id)
                    continue
                s.state = s.state.apply_event(event, entry.seq)
                s.own_outcomes.add(decision_id)
                self.after_outcome(agent, action, decision_id)
                fired += 1
        return fired

    def start_timers(self, interval: float) -> None:
        """Look for overdue outcomes every `interval` seconds in a background thread."""
        self._timers.start(interval)

    def stop_timers(self) -> None:
        """Stop the overdue thread, if running."""
        self._timers.stop()

    # -- what operators see ------------------------------------------------------------

    def circuits(self, now: dt.datetime | None = None) -> list[CircuitView]:
        """Every circuit of the live bundle's breakers that has figures, by key."""
        s = self._s
        moment = now or s.clock()
        with s.lock:
            book = s.state.breakers
            out = []
            for key, circuit in book.items():
                breaker = s.bundle.breaker(key[0])
                if breaker is None:  # a breaker the live bundle no longer has
                    continue
                view = book.view(breaker, key, moment)
                out.append(self._view(breaker, key, view, circuit, moment))
        return out

    @staticmethod
    def _view(
        breaker: BreakerSpec,
        key: CircuitKey,
        state: BreakerState | None,
        circuit: Any,
        now: dt.datetime,
    ) -> CircuitView:
        if state is None:
            start = now - dt.timedelta(seconds=breaker.window_seconds)
            live = [failed for at, failed in circuit.outcomes if at > start]
            sample, failures = len(live), sum(live)
        else:
            sample, failures = state.sample, state.failures
        trials = state is not None
        return CircuitView(
            breaker=breaker.id,
            action=key[1],
            agent=key[2],
            status=state.status if state is not None else "closed",
            then=breaker.then,
            reason=breaker.reason,
            generation=circuit.generation,
            since=state.since if state is not None else None,
            until=state.until if state is not None else None,
            trials_left=state.trials_left if state is not None else None,
            trials_succeeded=circuit.succeeded if trials else None,
            trials_failed=circuit.failed if trials else None,
            sample=sample,
            failures=failures,
            window_seconds=breaker.window_seconds,
            min_sample=breaker.min_sample,
            failure_rate=breaker.failure_rate,
        )
