"""The monitor book: ledger events folded into windowed figures, per slice and rolled up."""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _monitor_events import T0, Event, at, decision, fold, outcome, overdue, redeemed, step
from hypothesis import given, settings
from hypothesis import strategies as st

import charter.monitors
from charter.ledger import events
from charter.monitors import (
    FIGURE_FIELDS,
    Figures,
    MonitorBook,
    MonitorConfig,
    brier_score,
    expected_calibration_error,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
CONFIG = MonitorConfig(bucket_seconds=60, window_seconds=3600, recent_seconds=600)


def only(book: MonitorBook, now: float, **query: Any) -> Figures:
    """The one group's figures at T0 + `now`."""
    found = book.figures(at(now), **query)
    assert len(found) == 1, found
    return found[0]


class TestVerdicts:
    def test_verdict_counts_and_rates(self) -> None:
        """Ten decisions give the shares of each verdict, and their sample is the count."""
        verdicts = ["allow"] * 5 + ["require_approval"] * 2 + ["escalate"] * 2 + ["deny"]
        book = fold(
            MonitorBook(CONFIG),
            [decision(f"d{i}", 30 * i, verdict=v) for i, v in enumerate(verdicts)],
        )
        f = only(book, 1200)
        assert (f.decisions, f.decisions_allowed, f.decisions_require_approval) == (10, 5, 2)
        assert (f.decisions_escalated, f.decisions_denied) == (2, 1)
        assert (f.autonomous_rate, f.approval_rate, f.escalation_rate, f.deny_rate) == (
            0.5,
            0.2,
            0.2,
            0.1,
        )
        assert FIGURE_FIELDS["escalation_rate"].sample == "decisions"

    def test_a_reviewers_redecision_is_not_a_decision(self) -> None:
        """A modified request decided again (`modifies`) is audit, not a new proposal."""
        book = fold(
            MonitorBook(CONFIG),
            [decision("d1", 0, verdict="require_approval"), decision("d2", 5, modifies="apr_d1")],
        )
        assert only(book, 60).decisions == 1

    def test_an_empty_sample_gives_none_not_zero(self) -> None:
        """A window with no decisions has no rates: None, so no alert reads 0% as a figure."""
        book = fold(MonitorBook(CONFIG), [decision("d1", 0)])
        f = only(book, 2 * 3600 + 30, window=600)
        assert f.decisions == 0
        assert f.autonomous_rate is None
        assert f.success_rate is None
        assert f.reviewer_latency_p50_seconds is None
        assert f.brier_score is None


class TestOutcomes:
    def test_outcomes_join_their_decision(self) -> None:
        """Success, failure and overdue outcomes count by decision; time to outcome by pair."""
        stream = [decision(f"d{i}", i) for i in range(1, 5)]
        stream += [
            outcome("d1", 11),  # 10 s after its decision
            outcome("d2", 22),  # 20 s
            outcome("d3", 43, success=False),  # 40 s
            overdue("d4", 300),
        ]
        f = only(fold(MonitorBook(CONFIG), stream), 600)
        assert (f.outcomes, f.outcomes_failed, f.outcomes_overdue) == (4, 2, 1)
        assert f.success_rate == 0.5
        assert (f.autonomous_outcomes, f.autonomous_success_rate) == (4, 0.5)
        assert f.time_to_outcome_samples == 3  # an overdue outcome has no time
        assert (f.time_to_outcome_p50_seconds, f.time_to_outcome_p95_seconds) == (20.0, 40.0)

    def test_an_outcome_after_approval_is_not_autonomous(self) -> None:
        """An action a person approved counts in the success rate, not the autonomous one."""
        stream = [
            decision("d1", 0, verdict="require_approval"),
            step(events.APPROVAL_OPENED, "a1", "d1", 0),
            step(events.APPROVAL_APPROVED, "a1", "d1", 30, complete=True),
            outcome("d1", 40, success=False),
            decision("d2", 50),
            outcome("d2", 55),
        ]
        f = only(fold(MonitorBook(CONFIG), stream), 600)
        assert (f.outcomes, f.success_rate) == (2, 0.5)
        assert (f.autonomous_outcomes, f.autonomous_success_rate) == (1, 1.0)

    def test_outcomes_of_unknown_decisions_are_counted_apart(self) -> None:
        """An outcome naming no awaited decision (twice, late, unknown) joins no figure."""
        stream = [
            decision("d1", 0),
            outcome("d1", 5),
            outcome("d1", 6),  # once per decision
            decision("d2", 7),
            overdue("d2", 100),
            outcome("d2", 120),  # came after it was called overdue
            outcome("nobody", 130),
        ]
        book = fold(MonitorBook(CONFIG), stream)
        f = only(book, 600)
        assert (f.outcomes, f.outcomes_overdue) == (2, 1)
        assert book.unmatched == {"outcome": 3}

    def test_denied_decisions_are_not_awaited(self) -> None:
        """No outcome can follow a refusal, so the book keeps nothing for one."""
        book = fold(MonitorBook(CONFIG), [decision(f"d{i}", i, verdict="deny") for i in range(50)])
        assert book.footprint()["open_decisions"] == 0

    def test_grant_redemptions_are_counted(self) -> None:
        """A grant redeemed counts once for its decision's slice."""
        stream = [decision("d1", 0), redeemed("d1", 3), redeemed("other", 4)]
        book = fold(MonitorBook(CONFIG), stream)
        assert only(book, 60).grants_redeemed == 1
        assert book.unmatched == {"grant.redeemed": 1}


class TestApprovals:
    def stream(self) -> list[Event]:
        out = []
        endings = [
            (events.APPROVAL_APPROVED, 10, {"complete": True}),
            (events.APPROVAL_DENIED, 20, {"reason": "no"}),
            (events.APPROVAL_EXPIRED, 30, {"route": "ops-review", "reason": "sla"}),
            (events.APPROVAL_MODIFIED, 40, {"complete": True}),
        ]
        for n, (kind, after, fields) in enumerate(endings):
            d, a = f"d{n}", f"a{n}"
            out += [
                decision(d, n, verdict="require_approval"),
                step(events.APPROVAL_OPENED, a, d, n),
            ]
            out.append(step(kind, a, d, n + after, **fields))
        # A quorum of two: the first vote does not end it, the second does, 50 s in.
        out += [
            decision("d4", 4, verdict="escalate"),
            step(events.APPROVAL_OPENED, "a4", "d4", 4),
            step(events.APPROVAL_APPROVED, "a4", "d4", 24, complete=False),
            step(events.APPROVAL_ESCALATED, "a4", "d4", 34),
            step(events.APPROVAL_APPROVED, "a4", "d4", 54, complete=True),
        ]
        # Escalated to the next tier and still pending: not ended.
        out += [
            decision("d5", 5, verdict="require_approval"),
            step(events.APPROVAL_OPENED, "a5", "d5", 5),
            step(events.APPROVAL_ESCALATED, "a5", "d5", 100),
        ]
        return out

    def test_rejection_rate_counts_denied_and_expired_over_ended(self) -> None:
        """Five approvals ended (a modification that completes ends one): two refused."""
        f = only(fold(MonitorBook(CONFIG), self.stream()), 600)
        assert (f.approvals_ended, f.approvals_rejected) == (5, 2)
        assert f.rejection_rate == 0.4

    def test_reviewer_latency_runs_from_opening_to_the_end(self) -> None:
        """Latencies 10, 20, 30, 40, 50 s: nearest-rank p50 30 s, p95 50 s."""
        f = only(fold(MonitorBook(CONFIG), self.stream()), 600)
        assert f.reviewer_latency_samples == 5
        assert f.reviewer_latency_p50_seconds == 30.0
        assert f.reviewer_latency_p95_seconds == 50.0

    def test_a_refused_approval_stops_awaiting_its_decision(self) -> None:
        """Denied and expired approvals free their decision; pending ones keep theirs."""
        book = fold(MonitorBook(CONFIG), self.stream())
        footprint = book.footprint()
        assert footprint["open_decisions"] == 4  # d0, d3, d4 approved; d5 pending
        assert footprint["open_approvals"] == 1  # a5
        book.apply(*outcome("d1", 200))  # d1 was denied: nothing to join
        assert book.unmatched == {"outcome": 1}


class TestWindows:
    def test_a_window_is_the_buckets_that_began_before_now(self) -> None:
        """At a bucket's edge the window ends there; inside one it takes the partial bucket."""
        book = fold(MonitorBook(CONFIG), [decision("d1", 59.999), decision("d2", 60)])
        assert only(book, 60, window=60).decisions == 1
        assert only(book, 60.5, window=60).decisions == 1
        assert only(book, 60.5, window=120).decisions == 2
        assert only(book, 60.5, window=90).window_seconds == 120  # rounded up to buckets

    def test_old_buckets_leave_the_window(self) -> None:
        """A decision an hour and a minute old is outside an hour's window."""
        book = fold(MonitorBook(CONFIG), [decision("d1", 0), decision("d2", 3660)])
        assert only(book, 3661).decisions == 1
        assert only(book, 3599).decisions == 1
        assert only(book, 3599, window=60).decisions == 0

    def test_a_late_event_lands_in_its_own_bucket(self) -> None:
        """Another replica's entry, read after newer ones, counts at its own time."""
        book = fold(MonitorBook(CONFIG), [decision("d2", 600), decision("d1", 30)])
        assert only(book, 60, window=60).decisions == 1
        assert only(book, 660, window=60).decisions == 1

    def test_an_event_older_than_the_horizon_is_ignored(self) -> None:
        """The book keeps its horizon of history; older events change nothing."""
        book = fold(MonitorBook(CONFIG), [decision("d2", 30 * 3600), decision("d1", 0)])
        assert book.footprint()["buckets"] == 1
        assert book.footprint()["open_decisions"] == 1

    def test_queries_refuse_what_the_book_cannot_answer(self) -> None:
        """A window past the horizon, a naive `now`, or an unknown level raise, saying why."""
        book = fold(MonitorBook(CONFIG), [decision("d1", 0)])
        with pytest.raises(ValueError, match="longer than the book keeps"):
            book.figures(at(60), window=30 * 3600)
        with pytest.raises(ValueError, match="timezone"):
            book.figures("2026-12-07T10:00:00")
        with pytest.raises(ValueError, match="no level"):
            book.figures(at(60), level="team")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reach back further"):
            book.series(at(60), "support-bot", points=100, step_seconds=3600)
        with pytest.raises(ValueError, match="whole buckets"):
            book.series(at(60), "support-bot", step_seconds=90)

    def test_now_may_be_a_datetime(self) -> None:
        """An aware `datetime` and the ledger's text name the same instant."""
        book = fold(MonitorBook(CONFIG), [decision("d1", 0)])
        moment = T0.replace(minute=5)
        assert book.figures(moment) == book.figures(at(300))


# -- the window query against a brute-force recount ---------------------------------------

BUCKET_MS = 60_000
WIDE = MonitorConfig(
    bucket_seconds=60,
    window_seconds=600,
    recent_seconds=600,
    baseline_seconds=600,
    retain_seconds=40_000,
)
CONFIDENCES = [None, 0.05, 0.35, 0.5, 0.75, 0.95, 1.0]

life = st.fixed_dictionaries(
    {
        "gap_ms": st.integers(0, 400_000),
        "agent": st.sampled_from(["a", "b"]),
        "action": st.sampled_from(["x.one", "x.two"]),
        "version": st.sampled_from(["1", "2"]),
        "verdict": st.sampled_from(["allow", "require_approval", "escalate", "deny"]),
        "confidence": st.sampled_from(CONFIDENCES),
        "review_ms": st.integers(1, 900_000),
        "ending": st.sampled_from(["approved", "denied", "expired", "pending"]),
        "outcome_ms": st.integers(1, 900_000),
        "result": st.sampled_from(["success", "failure", "overdue", "none"]),
    }
)


def _script(lives: list[dict[str, Any]]) -> Iterator[tuple[int, int, Event, dict[str, Any]]]:
    """Each life's events as (ms, order, event, life), in the order they would be written."""
    t = 0
    n = 0
    for i, one in enumerate(lives):
        t += one["gap_ms"]
        d = f"d{i}"
        context = {} if one["confidence"] is None else {"confidence": one["confidence"]}
        yield t, (n := n + 1), decision(
            d, t / 1000, agent=one["agent"], action=one["action"], verdict=one["verdict"],
            context=context, model=("m", one["version"]),
        ), one  # fmt: skip
        one["decided"] = t
        executes = one["verdict"] == "allow"
        if one["verdict"] in ("require_approval", "escalate"):
            yield t, (n := n + 1), step(events.APPROVAL_OPENED, f"a{i}", d, t / 1000), one
            one["ended"] = end = t + one["review_ms"]
            kind = {
                "approved": events.APPROVAL_APPROVED,
                "denied": events.APPROVAL_DENIED,
                "expired": events.APPROVAL_EXPIRED,
            }.get(one["ending"])
            if kind is not None:
                yield end, (n := n + 1), step(kind, f"a{i}", d, end / 1000, complete=True), one
            executes = one["ending"] == "approved"
            start = end
        else:
            start = t
        one["executes"] = executes
        if executes and one["result"] != "none":
            one["outcome_at"] = done = start + one["outcome_ms"]
            if one["result"] == "overdue":
                yield done, (n := n + 1), overdue(d, done / 1000), one
            else:
                yield (
                    done,
                    (n := n + 1),
                    outcome(d, done / 1000, success=one["result"] == "success"),
                    one,
                )


def _nearest(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@settings(max_examples=60, deadline=None)
@given(
    lives=st.lists(life, min_size=1, max_size=40),
    now_ms=st.integers(0, 30_000_000),
    window=st.integers(1, 30_000),
)
def test_a_window_query_equals_a_recount_of_its_events(
    lives: list[dict[str, Any]], now_ms: int, window: int
) -> None:
    """Every count, rate and percentile equals a recount of the events in the window's buckets."""
    script = sorted(_script(lives), key=lambda item: (item[0], item[1]))
    book = fold(MonitorBook(WIDE), [event for _, _, event, _ in script])
    last = math.ceil(now_ms / BUCKET_MS) - 1
    first = last - math.ceil(window / 60) + 1

    def inside(ms: int) -> bool:
        return first <= ms // BUCKET_MS <= last

    got = {(f.agent, f.action): f for f in book.figures(at_ms(now_ms), window=window)}
    for agent in ("a", "b"):
        for action in ("x.one", "x.two"):
            mine = [x for x in lives if (x["agent"], x["action"]) == (agent, action)]
            decided = [x for x in mine if inside(x["decided"])]
            ended = [
                x for x in mine if "ended" in x and x["ending"] != "pending" and inside(x["ended"])
            ]
            done = [x for x in mine if "outcome_at" in x and inside(x["outcome_at"])]
            f = got.get((agent, action))
            if f is None:
                assert not mine
                continue
            assert f.decisions == len(decided)
            for verdict, count in [
                ("allow", f.decisions_allowed),
                ("require_approval", f.decisions_require_approval),
                ("escalate", f.decisions_escalated),
                ("deny", f.decisions_denied),
            ]:
                assert count == sum(x["verdict"] == verdict for x in decided)
            assert f.approvals_ended == len(ended)
            assert f.approvals_rejected == sum(x["ending"] != "approved" for x in ended)
            latencies = [(x["ended"] - x["decided"]) / 1000 for x in ended]
            assert f.reviewer_latency_p50_seconds == pytest.approx(_nearest(latencies, 0.5))
            assert f.reviewer_latency_p95_seconds == pytest.approx(_nearest(latencies, 0.95))
            successes = [x["result"] == "success" for x in done]
            assert f.outcomes == len(done)
            assert f.outcomes_failed == successes.count(False)
            assert f.outcomes_overdue == sum(x["result"] == "overdue" for x in done)
            alone = [x["result"] == "success" for x in done if x["verdict"] == "allow"]
            assert f.autonomous_outcomes == len(alone)
            assert f.autonomous_success_rate == (sum(alone) / len(alone) if alone else None)
            timed = [x for x in done if x["result"] != "overdue"]
            to_outcome = [(x["outcome_at"] - x["decided"]) / 1000 for x in timed]
            assert f.time_to_outcome_p50_seconds == pytest.approx(_nearest(to_outcome, 0.5))
            stated = [x for x in done if x["confidence"] is not None]
            confidences = [x["confidence"] for x in stated]
            results = [x["result"] == "success" for x in stated]
            assert f.calibration_samples == len(stated)
            assert f.brier_score == pytest.approx(brier_score(confidences, results))
            assert f.expected_calibration_error == pytest.approx(
                expected_calibration_error(confidences, results)
            )
    fleet = book.figures(at_ms(now_ms), window=window, level="fleet")[0]
    assert fleet.decisions == sum(f.decisions for f in got.values())
    assert fleet.outcomes == sum(f.outcomes for f in got.values())


@settings(max_examples=40, deadline=None)
@given(
    lives=st.lists(life, min_size=1, max_size=30),
    moves=st.lists(st.integers(0, 8), min_size=30, max_size=30),
    now_ms=st.integers(0, 20_000_000),
)
def test_events_read_late_count_where_they_belong(
    lives: list[dict[str, Any]], moves: list[int], now_ms: int
) -> None:
    """Decisions applied ahead of older events (those then read late) give the same figures."""
    script = [event for _, _, event, _ in sorted(_script(lives), key=lambda i: (i[0], i[1]))]
    shuffled = list(script)
    decisions = [e for e in script if e.kind == events.DECISION]
    for event, move in zip(decisions, moves, strict=False):
        # Moving a decision earlier keeps its own steps after it, and makes the events it
        # passes arrive after a newer one: late.
        j = shuffled.index(event)
        shuffled.insert(max(0, j - move), shuffled.pop(j))
    in_order = fold(MonitorBook(WIDE), script).figures(at_ms(now_ms), window=20_000)
    late = fold(MonitorBook(WIDE), shuffled).figures(at_ms(now_ms), window=20_000)
    assert len(in_order) == len(late)
    for a, b in zip(in_order, late, strict=True):
        for name, value in a.to_json().items():
            if isinstance(value, float):
                assert b.to_json()[name] == pytest.approx(value), name
            elif name != "reliability":
                assert b.to_json()[name] == value, name


def at_ms(ms: int) -> str:
    """The ledger's time form of T0 + `ms` milliseconds."""
    return at(ms / 1000)


# -- levels and model provenance ----------------------------------------------------------


class TestLevels:
    def stream(self) -> list[Event]:
        return [
            decision("d1", 0, agent="a", action="x.one", model=("m", "1")),
            decision("d2", 1, agent="a", action="x.one", model=("m", "2"), verdict="deny"),
            decision("d3", 2, agent="a", action="x.two", verdict="escalate"),
            decision("d4", 3, agent="b", action="x.one", model=(None, None)),
        ]

    def test_each_level_groups_its_slices(self) -> None:
        """Model slices roll up into actions, actions into agents, agents into the fleet."""
        book = fold(MonitorBook(CONFIG), self.stream())
        models = book.figures(at(60), level="model")
        assert [(f.agent, f.action, f.model_id, f.model_version) for f in models] == [
            ("a", "x.one", "m", "1"),
            ("a", "x.one", "m", "2"),
            ("a", "x.two", "gpt-x", "1"),
            ("b", "x.one", None, None),
        ]
        actions = book.figures(at(60))
        assert [(f.agent, f.action, f.decisions) for f in actions] == [
            ("a", "x.one", 2),
            ("a", "x.two", 1),
            ("b", "x.one", 1),
        ]
        assert all(f.model_id is None for f in actions)
        agents = book.figures(at(60), level="agent")
        assert [(f.agent, f.action, f.decisions) for f in agents] == [
            ("a", None, 3),
            ("b", None, 1),
        ]
        (fleet,) = book.figures(at(60), level="fleet")
        assert (fleet.agent, fleet.decisions, fleet.deny_rate) == (None, 4, 0.25)

    def test_filters_keep_the_slices_they_name(self) -> None:
        """`agent` and `action` narrow any level; the fleet level still gives one figure."""
        book = fold(MonitorBook(CONFIG), self.stream())
        assert [f.agent for f in book.figures(at(60), action="x.one")] == ["a", "b"]
        (a,) = book.figures(at(60), agent="a", level="agent", action="x.two")
        assert a.decisions == 1
        (nobody,) = book.figures(at(60), agent="nobody", level="fleet")
        assert nobody.decisions == 0
        assert book.figures(at(60), agent="nobody") == []
        assert book.agents() == ["a", "b"]
        assert book.actions("a") == ["x.one", "x.two"]


def _upgrade() -> list[Event]:
    """Two hours of one decision a minute: model 1 fails 1 in 10, model 2 fails 1 in 2."""
    stream = []
    for i in range(120):
        version = "1" if i < 60 else "2"
        stream.append(decision(f"d{i}", 60 * i, model=("m", version)))
        failed = i % 10 == 0 if version == "1" else i % 2 == 0
        stream.append(outcome(f"d{i}", 60 * i + 5, success=not failed))
    return stream


class TestModelProvenance:
    def test_each_model_version_is_its_own_slice(self) -> None:
        """Figures per model version tell the upgrade apart from the action's blend."""
        book = fold(MonitorBook(CONFIG), _upgrade())
        v1, v2 = book.figures(at(7200), level="model", window=7200)
        assert (v1.model_version, v1.outcomes, v1.success_rate) == ("1", 60, 0.9)
        assert (v2.model_version, v2.outcomes, v2.success_rate) == ("2", 60, 0.5)
        (blend,) = book.figures(at(7200), window=7200)
        assert blend.success_rate == 0.7

    def test_a_series_shows_the_upgrade_as_a_step(self) -> None:
        """Twelve ten-minute points: 0.9 while model 1 ran, 0.5 from model 2 on."""
        config = dataclasses.replace(CONFIG, retain_seconds=7200)
        book = fold(MonitorBook(config), _upgrade())
        series = book.series(at(7200), "support-bot", points=12, step_seconds=600)
        assert [p.success_rate for p in series.points] == [0.9] * 6 + [0.5] * 6
        assert [p.decisions for p in series.points] == [10] * 12
        assert series.to_json()["points"][0]["end"] == at(600)
        assert series.points[-1].end == at(7200)


# -- bounded memory -------------------------------------------------------------------------


def _long_stream(count: int) -> Iterator[Event]:
    """`count` events, one a second: agents come and go, most decisions never see an outcome."""
    rng = random.Random(11)
    waiting: list[str] = []
    for i in range(count):
        t = float(i)
        roll = rng.random()
        if roll < 0.6 or not waiting:
            cohort = i // 20_000  # every 20,000 s the fleet is ten new agents
            agent = f"bot-{cohort}-{rng.randrange(10)}"
            d = f"d{i}"
            args = {"order_id": f"o-{i}", "amount": rng.randrange(1, 500), "currency": "USD"}
            context = {"confidence": rng.random(), "labels": {"ticket": f"T-{i}"}}
            verdict = rng.choice(["allow", "allow", "require_approval", "deny"])
            action = rng.choice(["payments.refund", "orders.cancel", "crm.note"])
            model = ("m", rng.choice(["1", "2"]))
            yield decision(d, t, agent=agent, action=action, verdict=verdict, args=args,
                           context=context, model=model)  # fmt: skip
            if verdict == "require_approval":
                yield step(events.APPROVAL_OPENED, f"a{i}", d, t)
            if verdict != "deny" and rng.random() < 0.5:
                waiting.append(d)
        elif roll < 0.85:
            yield outcome(waiting.pop(rng.randrange(len(waiting))), t, success=rng.random() < 0.8)
        else:
            d = waiting.pop(rng.randrange(len(waiting)))
            yield step(events.APPROVAL_DENIED, f"a{d[1:]}", d, t, reason="no")


class TestBoundedMemory:
    def test_what_the_book_holds_stays_bounded_over_200k_events(self) -> None:
        """Buckets, slices, samples and awaited decisions stop growing once the horizon fills."""
        config = MonitorConfig(
            bucket_seconds=60, window_seconds=600, recent_seconds=600, baseline_seconds=1800,
            sample_size=16, max_categories=20,
        )  # fmt: skip
        horizon = config.buckets(config.horizon_seconds)  # 40 buckets
        book = MonitorBook(config)
        sizes = []
        for n, event in enumerate(_long_stream(200_000), 1):
            book.apply(event.kind, event.at, event.payload)
            if n % 20_000 == 0:
                sizes.append(book.footprint())
        for size in sizes:
            # Two cohorts of ten agents overlap at most, each with 3 actions and 2 models.
            assert size["slices"] <= 2 * 10 * 3 * 2
            assert size["buckets"] <= size["slices"] * (horizon + horizon // 8 + 1)
            # At most 16 kept values a bucket, of 4 sampled figures (2 fields, 2 latencies).
            assert size["samples"] <= 16 * size["segments"]
            assert size["segments"] <= 4 * size["buckets"]
            # Each event touches a handful of counters of its bucket.
            assert size["tally_entries"] <= 8 * (config.horizon_seconds * 9 // 8 + 60)
            # Codes of live values only: the identifiers' were never made, or given back.
            assert size["codes"] <= 3 * 2 * 20
            # One event a second; what is awaited is what came within a horizon and a sweep.
            assert size["open_decisions"] <= config.horizon_seconds * 9 // 8 + 60
            assert size["open_decision_order"] <= 2 * size["open_decisions"] + 1024 + 400
            assert size["open_approvals"] <= size["open_decisions"]
            assert size["actions"] <= 3
        later = sizes[len(sizes) // 2 :]
        assert max(s["buckets"] for s in later) <= 1.5 * min(s["buckets"] for s in later)
        # The id-like fields were dropped as identifiers, the real ones are still watched.
        (figures,) = book.figures(at(200_000), level="fleet")
        watched = {d.field for d in figures.drift}
        assert watched == {"args.amount", "args.currency", "context.confidence"}

    def test_at_most_max_open_decisions_are_awaited(self) -> None:
        """Past `max_open`, the oldest awaited decision is forgotten first."""
        config = dataclasses.replace(CONFIG, max_open=100)
        book = fold(MonitorBook(config), [decision(f"d{i}", i) for i in range(1000)])
        assert book.footprint()["open_decisions"] == 100
        fold(book, [outcome("d0", 1001), outcome("d999", 1002)])
        assert book.unmatched == {"outcome": 1}
        assert only(book, 1100).outcomes == 1


# -- a ledger Charter wrote ----------------------------------------------------------------


def test_a_real_ledger_folds_with_every_step_joined(tmp_path: Path) -> None:
    """The fixture ledger (Charter 0.1's demo and more) folds with nothing unmatched."""
    from charter.store import open_store  # noqa: PLC0415 - the one test that reads a store

    target = tmp_path / "ledger.db"
    with gzip.open(FIXTURES / "ledger-0.1.db.gz") as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    store = open_store(target, read_only=True)
    try:
        entries = list(store.entries())
    finally:
        store.close()
    config = MonitorConfig(bucket_seconds=3600, retain_seconds=90 * 86_400)
    book = MonitorBook(config)
    for entry in entries:
        book.apply(entry.kind, entry.at, entry.payload_object())
    assert book.unmatched == {}
    (fleet,) = book.figures("2026-05-01T09:00:01Z", level="fleet", window=90 * 86_400)
    decisions = [e.payload_object() for e in entries if e.kind == events.DECISION]
    proposals = [p for p in decisions if "modifies" not in p]
    assert fleet.decisions == len(proposals)
    assert fleet.decisions_allowed == sum(p["decision"]["verdict"] == "allow" for p in proposals)
    ended = [e for e in entries if e.kind in (events.APPROVAL_DENIED, events.APPROVAL_EXPIRED)]
    assert fleet.approvals_rejected == len(ended)
    assert fleet.outcomes == sum(e.kind == events.OUTCOME for e in entries)
    assert fleet.reviewer_latency_samples == fleet.approvals_ended


# -- the public face ------------------------------------------------------------------------

PUBLIC = [
    "ALERT_FIRED",
    "ALERT_RESOLVED",
    "DRIFT_PSI",
    "EPSILON",
    "FIGURE_FIELDS",
    "OUTCOME_OVERDUE",
    "RULE_FIGURES",
    "SEVERITIES",
    "AlertBook",
    "AlertRule",
    "AutonomyRule",
    "CalibrationCounts",
    "DriftFigure",
    "FieldQuality",
    "FigureField",
    "Figures",
    "Level",
    "MonitorBook",
    "MonitorConfig",
    "Reading",
    "ReliabilityBin",
    "Series",
    "SeriesPoint",
    "SourceQuality",
    "Threshold",
    "bin_counts",
    "brier_score",
    "category_psi",
    "effective_size",
    "expected_calibration_error",
    "figure_value",
    "ks_pvalue",
    "ks_statistic",
    "percentile",
    "psi",
    "quantile_edges",
    "reliability_table",
    "selects",
]


class TestPublicFace:
    def test_all_is_pinned_and_documented(self) -> None:
        """`__all__` is the reviewed list; each class and function in it has a docstring."""
        assert charter.monitors.__all__ == PUBLIC
        for name in PUBLIC:
            member = getattr(charter.monitors, name)
            if inspect.isclass(member) or inspect.isfunction(member):
                assert inspect.getdoc(member), name
                assert member.__module__.startswith("charter.monitors."), name

    def test_figure_fields_name_every_json_key_in_order(self) -> None:
        """`FIGURE_FIELDS` is the JSON's keys, in order, and each is a field of `Figures`."""
        figures = Figures("fleet", None, None, None, None, 60, at(0))
        assert list(figures.to_json()) == list(FIGURE_FIELDS)
        assert list(FIGURE_FIELDS) == [f.name for f in dataclasses.fields(Figures)]

    def test_every_rate_names_its_sample(self) -> None:
        """Each rate, percentile and score names the count that is its sample size."""
        counts = {f.name for f in dataclasses.fields(Figures) if f.type == "int"}
        for name, meta in FIGURE_FIELDS.items():
            derived = name.endswith(("_rate", "_seconds", "_score", "_error"))
            if derived and name != "window_seconds":
                assert meta.sample in counts, name
            else:
                assert meta.sample is None, name

    def test_figures_are_plain_json(self) -> None:
        """`to_json` gives only JSON types: what the API and the metrics endpoint publish."""
        import json  # noqa: PLC0415

        stream = TestApprovals().stream() + _upgrade()
        book = fold(MonitorBook(dataclasses.replace(CONFIG, freshness={"*": 60})), stream)
        for f in book.figures(at(7200), level="model"):
            assert json.loads(json.dumps(f.to_json(), allow_nan=False)) == f.to_json()
