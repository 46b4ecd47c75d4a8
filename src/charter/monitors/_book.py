"""The monitor book: the ledger's events folded into per-slice time buckets.

`MonitorBook.apply` takes each event once, in ledger order (or nearly: another
replica's entries may come late), and costs O(1) amortized: it finds the bucket of the
event's slice and time, adds to its counters and samples, and joins outcomes and
approval steps to their decision through a table of decisions still awaited. Nothing
is ever rescanned; queries sum the buckets they cover.

What the book holds is bounded by its horizon (`MonitorConfig.horizon_seconds`,
measured back from the newest event seen, since the book reads no clock): older
buckets, slices with no bucket left, and decisions or approvals opened before it are
forgotten, every eighth of a horizon; and at most `max_open` decisions are awaited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from charter.ledger import events
from charter.monitors._awaited import Awaited, OpenApproval, OpenDecision
from charter.monitors._calibration import BINS
from charter.monitors._config import ActionPlan, MonitorConfig
from charter.monitors._figures import Figures, Level, Series, SeriesPoint
from charter.monitors._report import Span, group_figures, grouped_figures, members
from charter.monitors._windows import (
    ALLOWED,
    APPROVAL_REQUIRED,
    APPROVALS_ENDED,
    APPROVALS_REJECTED,
    AUTONOMOUS_OUTCOMES,
    AUTONOMOUS_SUCCESSES,
    CALIBRATION,
    CALIBRATION_SQUARED_ERROR,
    DECISIONS,
    DENIED,
    ESCALATED,
    GRANTS_REDEEMED,
    OUTCOMES,
    OVERDUE,
    REVIEWER_LATENCY,
    SECOND,
    SUCCESSES,
    TIME_TO_OUTCOME,
    Slice,
    SliceKey,
    micros,
)

__all__ = ["OUTCOME_OVERDUE", "MonitorBook"]

#: An outcome that did not come by its due time: counted as a failure (a timeout).
OUTCOME_OVERDUE = "outcome.overdue"

#: The approval steps that end an approval, and whether they end it refused.
_ENDS = {
    events.APPROVAL_APPROVED: False,
    events.APPROVAL_MODIFIED: False,
    events.APPROVAL_DENIED: True,
    events.APPROVAL_EXPIRED: True,
}
_VERDICTS = {
    "allow": ALLOWED,
    "require_approval": APPROVAL_REQUIRED,
    "escalate": ESCALATED,
    "deny": DENIED,
}


def _confidence(context: Mapping[str, Any]) -> float | None:
    value = context.get("confidence")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


class MonitorBook:
    """Rolling figures per agent, action and model, folded from the ledger's events.

    A mutable accumulator, like `BudgetSpending`: the service applies each event it
    commits, and a fresh book folds a ledger's entries through the same `apply`. Every
    query takes `now` (an aware `datetime` or RFC 3339 text) and reads no clock.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config = config or MonitorConfig()
        self._bucket_seconds = config.bucket_seconds
        self._bucket = config.bucket_seconds * SECOND
        self._horizon = config.buckets(config.horizon_seconds)
        self._sweep_every = max(1, self._horizon // 8)
        self._sample_size = config.sample_size
        self._slices: dict[SliceKey, Slice] = {}
        self._plans: dict[str, ActionPlan] = {}
        self._open: Awaited[OpenDecision] = Awaited()
        self._approvals: Awaited[OpenApproval] = Awaited()
        self._newest: int | None = None
        self._swept = 0
        #: Events that named a decision or approval the book does not hold, by kind.
        self.unmatched: dict[str, int] = {}

    # -- folding ---------------------------------------------------------------------------

    def apply(self, kind: str, at: str, payload: Mapping[str, Any]) -> None:
        """Fold one ledger event (its kind, its `at`, its payload); other kinds pass."""
        if kind == events.DECISION:
            self._decision(at, payload)
        elif kind == events.OUTCOME:
            self._outcome(at, payload, overdue=False)
        elif kind == OUTCOME_OVERDUE:
            self._outcome(at, payload, overdue=True)
        elif kind == events.APPROVAL_OPENED:
            self._opened(at, payload)
        elif kind in _ENDS:
            # A vote or a modification ends the approval only once the quorum is met.
            if _ENDS[kind] or payload.get("complete") is True:
                self._ended(kind, at, payload)
        elif kind == events.GRANT_REDEEMED:
            self._redeemed(at, payload)

    def _redeemed(self, at: str, payload: Mapping[str, Any]) -> None:
        held = self._open.get(payload.get("decision_id", ""))
        if held is None:
            self._miss(events.GRANT_REDEEMED)
            return
        found = self._index(at)
        if found is not None:
            counts = self._slice(held.key).tally.current(found[1])
            counts[GRANTS_REDEEMED] = counts.get(GRANTS_REDEEMED, 0.0) + 1

    def _miss(self, kind: str) -> None:
        self.unmatched[kind] = self.unmatched.get(kind, 0) + 1

    def _index(self, at: str) -> tuple[int, int] | None:
        """The event's time and bucket; None when it is older than the book keeps."""
        moment = micros(at)
        index = moment // self._bucket
        newest = self._newest
        if newest is None or index > newest:
            self._newest = index
            if newest is None:
                self._swept = index
            elif index - self._swept >= self._sweep_every:
                self._sweep(index)
        elif index <= newest - self._horizon:
            return None
        return moment, index

    def _slice(self, key: SliceKey) -> Slice:
        found = self._slices.get(key)
        if found is None:
            found = self._slices[key] = Slice(key)
        return found

    def _decision(self, at: str, payload: Mapping[str, Any]) -> None:
        if payload.get("modifies") is not None:
            return  # a reviewer's modified request decided again: audit only, no new action
        request = payload["request"]
        action = request["action"]
        provenance = payload.get("provenance") or {}
        key = (
            request["agent"],
            action,
            provenance.get("model_id"),
            provenance.get("model_version"),
        )
        found = self._index(at)
        if found is None:
            return
        moment, index = found
        piece = self._slice(key)
        counts = piece.tally.current(index)
        get = counts.get
        counts[DECISIONS] = get(DECISIONS, 0.0) + 1
        verdict = payload["decision"]["verdict"]
        code = _VERDICTS.get(verdict)
        if code is not None:
            counts[code] = get(code, 0.0) + 1
        plan = self._plans.get(action)
        if plan is None:
            plan = self._plans[action] = self.config.plan(action)
        args = request.get("args") or {}
        context = request.get("context") or {}
        plan.observe(piece, index, args, context)
        if plan.quality:
            plan.quality.record(counts, args, context)
        if verdict == "deny":
            return  # refused: no approval, grant or outcome follows
        held = OpenDecision(key, moment, index, _confidence(context), reviewed=verdict != "allow")
        self._open.add(payload["decision_id"], held, self.config.max_open)

    def _outcome(self, at: str, payload: Mapping[str, Any], *, overdue: bool) -> None:
        held = self._open.pop(payload.get("decision_id", ""))
        if held is None:
            self._miss(OUTCOME_OVERDUE if overdue else events.OUTCOME)
            return
        found = self._index(at)
        if found is None:
            return
        moment, index = found
        piece = self._slice(held.key)
        counts = piece.tally.current(index)
        get = counts.get
        success = not overdue and payload.get("success") is True
        counts[OUTCOMES] = get(OUTCOMES, 0.0) + 1
        if success:
            counts[SUCCESSES] = get(SUCCESSES, 0.0) + 1
        if overdue:
            counts[OVERDUE] = get(OVERDUE, 0.0) + 1
        else:
            # Replicas' clocks differ a little: an outcome never takes negative time.
            took = max(0, moment - held.at) / SECOND
            piece.column(TIME_TO_OUTCOME).add(index, took, self._sample_size)
        if not held.reviewed:
            counts[AUTONOMOUS_OUTCOMES] = get(AUTONOMOUS_OUTCOMES, 0.0) + 1
            if success:
                counts[AUTONOMOUS_SUCCESSES] = get(AUTONOMOUS_SUCCESSES, 0.0) + 1
        confidence = held.confidence
        if confidence is not None:
            # The sums `CalibrationCounts` keeps, as counters of the calibration bins.
            base = CALIBRATION + 3 * min(int(confidence * BINS), BINS - 1)
            counts[base] = get(base, 0.0) + 1
            counts[base + 1] = get(base + 1, 0.0) + confidence
            if success:
                counts[base + 2] = get(base + 2, 0.0) + 1
            error = (success - confidence) ** 2
            counts[CALIBRATION_SQUARED_ERROR] = get(CALIBRATION_SQUARED_ERROR, 0.0) + error

    def _opened(self, at: str, payload: Mapping[str, Any]) -> None:
        held = self._open.get(payload.get("decision_id", ""))
        if held is None:
            self._miss(events.APPROVAL_OPENED)
            return
        found = self._index(at)
        if found is None:
            return
        held.reviewed = True
        approval = OpenApproval(held, found[0], found[1])
        # An approval ends before its decision's horizon passes, or is forgotten with it.
        self._approvals.add(payload["approval_id"], approval, self.config.max_open)

    def _ended(self, kind: str, at: str, payload: Mapping[str, Any]) -> None:
        decision_id = payload.get("decision_id", "")
        approval = self._approvals.pop(payload.get("approval_id", ""))
        held = approval.decision if approval is not None else self._open.get(decision_id)
        if held is None:
            self._miss(kind)
            return
        found = self._index(at)
        if found is None:
            return
        moment, index = found
        piece = self._slice(held.key)
        counts = piece.tally.current(index)
        counts[APPROVALS_ENDED] = counts.get(APPROVALS_ENDED, 0.0) + 1
        if _ENDS[kind]:
            counts[APPROVALS_REJECTED] = counts.get(APPROVALS_REJECTED, 0.0) + 1
            self._open.pop(decision_id)  # refused: no outcome will come
        if approval is not None:
            took = max(0, moment - approval.at) / SECOND
            piece.column(REVIEWER_LATENCY).add(index, took, self._sample_size)

    # -- forgetting ------------------------------------------------------------------------

    def _sweep(self, newest: int) -> None:
        """Forget what the horizon has passed; runs every eighth of a horizon of events."""
        self._swept = newest
        first = newest - self._horizon + 1
        live_codes: dict[str, set[int]] = {}
        live_categories: dict[str, set[int]] = {}
        for key in list(self._slices):
            piece = self._slices[key]
            if not piece.drop_before(first):
                del self._slices[key]
                continue
            live_codes.setdefault(key[1], set()).update(piece.tally.live_codes())
            live_categories.setdefault(key[1], set()).update(piece.categories.live_codes())
        for action in list(self._plans):
            if action in live_codes:
                self._plans[action].forget(live_codes[action], live_categories[action])
            else:
                del self._plans[action]
        self._open.expire(first)
        self._approvals.expire(first)

    # -- reading ---------------------------------------------------------------------------

    def agents(self) -> list[str]:
        """The agents the book holds figures of, sorted."""
        return sorted({key[0] for key in self._slices})

    def actions(self, agent: str | None = None) -> list[str]:
        """The actions the book holds figures of (of `agent`, if given), sorted."""
        return sorted({k[1] for k in self._slices if agent is None or k[0] == agent})

    def figures(
        self,
        now: str | dt.datetime,
        *,
        agent: str | None = None,
        action: str | None = None,
        window: int | None = None,
        level: Level = "action",
    ) -> list[Figures]:
        """The figures of each group at `level` over the `window` seconds ending at `now`.

        `level` is `model` (per agent, action, model id and version), `action` (per agent
        and action), `agent` or `fleet`; `agent` and `action` keep only the slices they
        name, and the groups come sorted by key. The fleet level always gives one
        `Figures`, empty if nothing matched. `window` (default the config's) is rounded up
        to whole buckets: the last bucket that began before `now` and those before it
        (so at a bucket's edge the window ends there; otherwise it takes in the current,
        partial bucket). Drift always compares the config's recent window with its
        baseline, bucketed alike.

        Raises:
            ValueError: `now` has no timezone, or the window is longer than the book keeps.
        """
        config = self.config
        seconds_ = window if window is not None else config.window_seconds
        if config.buckets(seconds_) > self._horizon:
            raise ValueError(
                f"a window of {seconds_} s is longer than the book keeps "
                f"({config.horizon_seconds} s); raise `retain_seconds`"
            )
        span = Span.at(config, micros(now), seconds_)
        return grouped_figures(
            self._slices.values(), self._plans, config, span, agent, action, level
        )

    def series(
        self,
        now: str | dt.datetime,
        agent: str,
        action: str | None = None,
        *,
        points: int = 60,
        step_seconds: int | None = None,
    ) -> Series:
        """An agent's (or one action's) figures over `points` steps ending at `now`.

        Each point covers one step (default one bucket; a whole number of buckets),
        oldest first; a step with no events is a point of zeros and Nones.

        Raises:
            ValueError: the step is no whole number of buckets, or the series reaches
                back further than the book keeps.
        """
        step = step_seconds if step_seconds is not None else self._bucket_seconds
        if points < 1 or step < 1 or step % self._bucket_seconds:
            raise ValueError(
                f"a series needs points >= 1 and a step of whole buckets "
                f"({self._bucket_seconds} s); got {points} points of {step} s"
            )
        if points * step > self._horizon * self._bucket_seconds:
            raise ValueError(
                f"{points} points of {step} s reach back further than the book keeps "
                f"({self.config.horizon_seconds} s); raise `retain_seconds`"
            )
        end = micros(now)
        level: Level = "agent" if action is None else "action"
        key = (agent, action, None, None)
        slices = members(self._slices.values(), agent, action)
        out = []
        for k in range(points):
            span = Span.at(self.config, end - (points - 1 - k) * step * SECOND, step)
            out.append(
                SeriesPoint.of(group_figures(level, key, slices, self._plans, self.config, span))
            )
        return Series(agent, action, step, tuple(out))

    def footprint(self) -> dict[str, int]:
        """What the book holds, counted: slices, buckets, kept sample values, awaited items.

        For tests and the metrics endpoint: each number stays bounded under any stream.
        """
        slices = self._slices.values()
        return {
            "slices": len(self._slices),
            "buckets": sum(s.tally.distinct_buckets() for s in slices),
            "tally_entries": sum(len(s.tally) + len(s.categories) for s in slices),
            "samples": sum(len(c.values) for s in slices for c in s.columns.values()),
            "segments": sum(len(c.buckets) for s in slices for c in s.columns.values()),
            "actions": len(self._plans),
            "codes": sum(len(p.codes.keys) + len(p.categories.keys) for p in self._plans.values()),
            "open_decisions": len(self._open),
            "open_decision_order": len(self._open.order),
            "open_approvals": len(self._approvals),
            "open_approval_order": len(self._approvals.order),
        }
