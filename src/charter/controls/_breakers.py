"""Circuit breakers on outcomes: each circuit's figures and state, folded from the ledger.

A circuit is one breaker of the bundle over one action, shared by every agent or, with
`per_agent`, one per agent. While closed it counts the outcomes in its window; the
service asks `propose` after each outcome, and when the failure share reaches the
breaker's rate over at least `min_sample` outcomes the answer is a `breaker.opened`
payload, which the service records. Only recorded transitions change a circuit: `apply`
reads them back, ordered by their `generation`, so a transition proposed twice (two
replicas at once) or read twice counts once.

The book also keeps the outcomes still awaited: a redeemed action whose envelope declares
a `timeout` owes its outcome by then (`expect`), and `overdue` lists those past due for
the service to record as `outcome.overdue`, a failure.

An open circuit holds its action back until `until`; from then on it is half-open and the
next `half_open` decisions that the policy allows are its trials (the engine marks them
`breaker_trial`). One failed trial opens it again; when every trial succeeded it closes.
Outcomes of actions decided before the circuit opened do not count while it is open.

Pure: times are given; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from charter.ledger import events
from charter.model import BreakerState
from charter.policy import BreakerSpec

__all__ = ["BreakerBook", "Circuit", "CircuitKey", "circuit_key"]

#: (breaker id, action, agent), agent None for a circuit every agent shares.
CircuitKey = tuple[str, str, str | None]


def circuit_key(breaker: BreakerSpec, action: str, agent: str) -> CircuitKey:
    """The circuit of `breaker` that a request of `agent` for `action` falls in."""
    return (breaker.id, action, agent if breaker.per_agent else None)


def _text(moment: dt.datetime) -> str:
    """The ledger's time form (RFC 3339 UTC, microseconds, `Z`)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Circuit:
    """One circuit's state: its last recorded transition and the counts since."""

    generation: int = 0
    #: The last `breaker.opened` payload while open or half-open; None while closed.
    opened: Mapping[str, Any] | None = None
    #: Outcomes counted while closed: (time, failed), oldest first.
    outcomes: deque[tuple[dt.datetime, bool]] = field(default_factory=deque)
    failures: int = 0
    #: Trial decisions whose outcome has not come yet.
    trials: set[str] = field(default_factory=set)
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    #: The generation a proposal is out for, until it is recorded (or given up).
    proposing: int = 0

    @property
    def status(self) -> str:
        """`closed` or `open` (an open circuit past `until` is half-open: see `view`)."""
        return "closed" if self.opened is None else "open"


class BreakerBook:
    """Every circuit the ledger has figures for, by `CircuitKey`."""

    def __init__(self) -> None:
        self._circuits: dict[CircuitKey, Circuit] = {}
        #: decision id -> (due, agent, action) of outcomes still awaited
        self._awaited: dict[str, tuple[str, str, str]] = {}
        self._due: list[tuple[str, str]] = []  # (due, decision id), a heap

    def __len__(self) -> int:
        return len(self._circuits)

    # -- outcomes awaited ---------------------------------------------------------------

    @property
    def awaited(self) -> int:
        """How many redeemed actions still owe their outcome by a due time."""
        return len(self._awaited)

    def expect(self, decision_id: str, agent: str, action: str, due: str) -> None:
        """A redeemed action owes its outcome by `due` (the ledger's time form)."""
        if decision_id not in self._awaited:
            self._awaited[decision_id] = (due, agent, action)
            heapq.heappush(self._due, (due, decision_id))

    def arrived(self, decision_id: str) -> None:
        """The outcome came (or was recorded overdue): nothing is owed any more."""
        self._awaited.pop(decision_id, None)

    def overdue(self, now: str, limit: int) -> list[tuple[str, str, str, str]]:
        """Up to `limit` outcomes due at or before `now`: (decision id, agent, action, due).

        They stay awaited until `arrived`; asking again lists them again.
        """
        out: list[tuple[str, str, str, str]] = []
        heap = self._due
        while heap and heap[0][0] <= now and len(out) < limit:
            due, decision_id = heap[0]
            owed = self._awaited.get(decision_id)
            if owed is None or owed[0] != due:  # arrived meanwhile: drop it
                heapq.heappop(heap)
                continue
            out.append((decision_id, owed[1], owed[2], due))
            heapq.heappop(heap)
        for decision_id, _, _, due in out:  # still owed until recorded
            heapq.heappush(heap, (due, decision_id))
        return out

    def items(self) -> Iterator[tuple[CircuitKey, Circuit]]:
        """Every circuit with its key, in key order."""
        return iter(
            sorted(self._circuits.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))
        )

    def circuit(self, key: CircuitKey) -> Circuit | None:
        """The circuit of `key`, if the book has one."""
        return self._circuits.get(key)

    # -- what decisions see ------------------------------------------------------------

    def states(
        self, breakers: Iterable[BreakerSpec], action: str, agent: str, now: dt.datetime
    ) -> tuple[BreakerState, ...]:
        """The breakers over (`agent`, `action`) that are not closed, as of `now`."""
        out = []
        for breaker in breakers:
            circuit = self._circuits.get(circuit_key(breaker, action, agent))
            if circuit is not None and circuit.opened is not None:
                out.append(self._state(breaker, action, agent, circuit, now))
        return tuple(out)

    def view(self, breaker: BreakerSpec, key: CircuitKey, now: dt.datetime) -> BreakerState | None:
        """The circuit of `key` as a decision at `now` would see it; None while closed."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened is None:
            return None
        return self._state(breaker, key[1], key[2] or "", circuit, now)

    @staticmethod
    def _state(
        breaker: BreakerSpec, action: str, agent: str, circuit: Circuit, now: dt.datetime
    ) -> BreakerState:
        opened = circuit.opened
        assert opened is not None
        half_open = now >= dt.datetime.fromisoformat(opened["until"])
        return BreakerState(
            id=breaker.id,
            action=action,
            agent=agent if breaker.per_agent else None,
            status="half_open" if half_open else "open",
            since=opened["since"],
            until=opened["until"],
            trials_left=max(breaker.half_open - circuit.started, 0) if half_open else 0,
            then=breaker.then,
            reason=breaker.reason,
            failures=int(opened["failures"]),
            sample=int(opened["sample"]),
            generation=circuit.generation,
        )

    # -- folding events ----------------------------------------------------------------

    def note_trials(
        self, decision_id: str, decision: Mapping[str, Any], state: Mapping[str, Any]
    ) -> None:
        """Count a decision that is a trial of a half-open breaker (`breaker_trial`)."""
        trials = {
            r.get("rule") for r in decision.get("reasons", ()) if r.get("code") == "breaker_trial"
        }
        if not trials:
            return
        for seen in state.get("breakers") or ():
            if seen["id"] not in trials:
                continue
            key = (seen["id"], seen["action"], seen.get("agent"))
            circuit = self._circuits.get(key)
            # a trial of a generation since replaced counts for nothing
            if circuit is not None and circuit.generation == int(seen["generation"]):
                circuit.started += 1
                circuit.trials.add(decision_id)

    def count(
        self,
        circuits: Iterable[Mapping[str, Any]],
        action: str,
        decision_id: str,
        at: dt.datetime,
        failed: bool,
    ) -> None:
        """Count an outcome (or an overdue one: `failed`) towards the circuits it names."""
        for named in circuits:
            key = (str(named["id"]), action, named.get("agent"))
            circuit = self._circuits.setdefault(key, Circuit())
            if decision_id in circuit.trials:
                circuit.trials.discard(decision_id)
                if failed:
                    circuit.failed += 1
                else:
                    circuit.succeeded += 1
            elif circuit.opened is None:
                if circuit.outcomes and at < circuit.outcomes[-1][0]:
                    # another replica's outcome read late: its place is in time order
                    ordered = sorted([*circuit.outcomes, (at, failed)])
                    circuit.outcomes = deque(ordered)
                else:
                    circuit.outcomes.append((at, failed))
                circuit.failures += failed

    def apply(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Apply a recorded transition; one not newer than the circuit's is ignored."""
        key = (payload["breaker"], payload["action"], payload.get("agent"))
        circuit = self._circuits.setdefault(key, Circuit())
        generation = int(payload["generation"])
        if generation <= circuit.generation:
            return
        circuit.generation = generation
        circuit.opened = dict(payload) if kind == events.BREAKER_OPENED else None
        circuit.outcomes.clear()
        circuit.failures = 0
        circuit.trials.clear()
        circuit.started = circuit.succeeded = circuit.failed = 0
        if circuit.proposing <= generation:
            circuit.proposing = 0

    # -- what the service records ------------------------------------------------------

    def propose(
        self, breaker: BreakerSpec, key: CircuitKey, now: dt.datetime, cause: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The transition the circuit's figures call for at `now`, as (kind, payload).

        None when it stays as it is, or a proposal for the next generation is out
        already (`given_up` withdraws one that could not be recorded).
        """
        circuit = self._circuits.get(key)
        if circuit is None or circuit.proposing > circuit.generation:
            return None
        base = {
            "breaker": key[0],
            "action": key[1],
            "agent": key[2],
            "generation": circuit.generation + 1,
            "cause": cause,
        }
        if circuit.opened is None:
            start = now - dt.timedelta(seconds=breaker.window_seconds)
            while circuit.outcomes and circuit.outcomes[0][0] <= start:
                circuit.failures -= circuit.outcomes.popleft()[1]
            sample = len(circuit.outcomes)
            if sample < breaker.min_sample or circuit.failures < breaker.failure_rate * sample:
                return None
            proposal = self._opening(breaker, base, now, circuit.failures, sample)
            proposal["window"] = breaker.window_seconds
        elif circuit.failed:
            proposal = self._opening(
                breaker, base, now, circuit.failed, circuit.failed + circuit.succeeded
            )
            proposal["window"] = None
            proposal["reason"] = f"{breaker.reason} (a half-open trial failed)"
        elif circuit.succeeded >= breaker.half_open:
            closed = {**base, "trials": circuit.succeeded}
            circuit.proposing = circuit.generation + 1
            return events.BREAKER_CLOSED, closed
        else:
            return None
        circuit.proposing = circuit.generation + 1
        return events.BREAKER_OPENED, proposal

    @staticmethod
    def _opening(
        breaker: BreakerSpec, base: dict[str, Any], now: dt.datetime, failures: int, sample: int
    ) -> dict[str, Any]:
        return {
            **base,
            "since": _text(now),
            "until": _text(now + dt.timedelta(seconds=breaker.cool_down_seconds)),
            "then": breaker.then,
            "failures": failures,
            "sample": sample,
            "reason": breaker.reason,
        }

    def given_up(self, key: CircuitKey) -> None:
        """Withdraw a proposal that was not recorded, so the next outcome proposes again."""
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.proposing = 0
