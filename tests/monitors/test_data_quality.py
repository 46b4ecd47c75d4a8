"""Data quality: freshness of data sources, completeness of requests, declared ranges."""

from __future__ import annotations

from typing import Any

import pytest
from _monitor_events import Event, at, decision, fold

from charter.monitors import FieldQuality, Figures, MonitorBook, MonitorConfig, SourceQuality

CONFIG = MonitorConfig(
    bucket_seconds=60,
    window_seconds=600,
    freshness={"orders-db": 3600, "*": 600},
    required={"payments.*": ["args.amount", "context.rationale"]},
    ranges={"payments.refund": {"args.amount": [0, 500]}, "*": {"context.confidence": [0.2, None]}},
)


def refund(n: int, args: dict[str, Any], **context: Any) -> Event:
    return decision(f"d{n}", n, args=args, context=context)


def stream() -> list[Event]:
    orders, crm = "orders-db", "crm"
    return [
        # Complete and in range; crm is older than the 600 s every other source may be.
        refund(1, {"amount": 40}, rationale="r", confidence=0.9,
               data_sources=[{"name": orders, "age_seconds": 100},
                             {"name": crm, "age_seconds": 700}]),
        # Amount too high, no rationale, stale orders, confidence under its minimum.
        refund(2, {"amount": 900}, confidence=0.1,
               data_sources=[{"name": orders, "age_seconds": 7200}]),
        # An amount that is no number; a source with no age; a nameless one is skipped.
        refund(3, {"amount": "lots"}, rationale="r", confidence=0.5,
               data_sources=[{"name": orders}, {"name": 5, "age_seconds": 1}]),
        # No amount: incomplete, and nothing to check its range on.
        refund(4, {}, rationale="r", confidence=0.5, data_sources="not a list"),
        decision("c5", 5, action="crm.note", args={"body": "hi"},
                 context={"confidence": 0.95, "data_sources": [{"name": crm, "age_seconds": 10}]}),
    ]  # fmt: skip


def fleet(events: list[Event], config: MonitorConfig = CONFIG) -> Figures:
    (figures,) = fold(MonitorBook(config), events).figures(at(300), level="fleet")
    return figures


class TestFreshness:
    def test_each_source_is_checked_against_its_limit(self) -> None:
        """Five checked: orders-db past 1 h and crm past the default 10 min, one with no age."""
        f = fleet(stream())
        assert (f.freshness_checked, f.freshness_stale, f.freshness_missing_age) == (5, 2, 1)
        assert (f.freshness_stale_rate, f.freshness_missing_age_rate) == (0.4, 0.2)

    def test_the_worst_sources_come_first(self) -> None:
        """orders-db failed two of three checks; crm one of two."""
        f = fleet(stream())
        assert f.worst_sources == (
            SourceQuality("orders-db", 3, 1, 1),
            SourceQuality("crm", 2, 1, 0),
        )
        assert f.worst_sources[0].to_json()["failure_rate"] == pytest.approx(2 / 3)

    def test_a_source_without_a_limit_is_not_checked(self) -> None:
        """With no `*` limit, only the named sources are checked."""
        config = MonitorConfig(bucket_seconds=60, freshness={"orders-db": 3600})
        f = fleet(stream(), config)
        assert (f.freshness_checked, f.freshness_stale) == (3, 1)
        assert fleet(stream(), MonitorConfig(bucket_seconds=60)).freshness_checked == 0
        assert fleet(stream(), MonitorConfig(bucket_seconds=60)).freshness_stale_rate is None

    def test_the_source_names_told_apart_are_capped(self) -> None:
        """Past `max_categories` names of one action's sources, the rest count as `(other)`."""
        config = MonitorConfig(bucket_seconds=60, freshness={"*": 1}, max_categories=2)
        events = [
            refund(i, {}, data_sources=[{"name": f"s{i}", "age_seconds": 5}]) for i in range(5)
        ]
        f = fleet(events, config)
        assert [s.name for s in f.worst_sources] == ["(other)", "s0", "s1"]
        assert f.worst_sources[0].checked == 3


class TestCompleteness:
    def test_decisions_lacking_a_required_field(self) -> None:
        """Four refunds must carry an amount and a rationale: two lacked one; notes need none."""
        f = fleet(stream())
        assert (f.completeness_checked, f.completeness_missing) == (4, 2)
        assert f.completeness_missing_rate == 0.5

    def test_null_is_missing_and_nested_fields_are_found(self) -> None:
        """A null value is a missing one; a dotted path reads nested objects."""
        config = MonitorConfig(bucket_seconds=60, required={"*": ["args.a", "context.labels.t"]})
        events = [
            decision("d1", 1, args={"a": None}, context={"labels": {"t": "x"}}),
            decision("d2", 2, args={"a": 0}, context={"labels": {}}),
            decision("d3", 3, args={"a": 0}, context={"labels": {"t": "x"}}),
        ]
        f = fleet(events, config)
        assert (f.completeness_checked, f.completeness_missing) == (3, 2)
        assert {(q.field, q.failed, q.checked) for q in f.worst_fields} == {
            ("args.a", 1, 3),
            ("context.labels.t", 1, 3),
        }


class TestRanges:
    def test_values_outside_their_range(self) -> None:
        """Eight values checked, three outside: 900 > 500, "lots" is no number, 0.1 < 0.2."""
        f = fleet(stream())
        assert (f.range_checked, f.range_violations) == (8, 3)
        assert f.range_violation_rate == 3 / 8

    def test_the_first_pattern_naming_a_field_gives_its_range(self) -> None:
        """`payments.refund` before `*`: the narrower range wins where both name the field."""
        ranges = {"payments.refund": {"args.n": [0, 1]}, "*": {"args.n": [0, 100]}}
        config = MonitorConfig(bucket_seconds=60, ranges=ranges)
        events = [
            decision("d1", 1, args={"n": 50}),
            decision("d2", 2, args={"n": 50}, action="x.y"),
        ]
        f = fleet(events, config)
        assert (f.range_checked, f.range_violations) == (2, 1)


class TestWorstFields:
    def test_fields_failing_most_checks_first(self) -> None:
        """The amount's range failed twice; each of three other checks once, in name order."""
        f = fleet(stream())
        assert f.worst_fields == (
            FieldQuality("payments.refund", "args.amount", "range", 3, 2),
            FieldQuality("payments.refund", "args.amount", "missing", 4, 1),
            FieldQuality("payments.refund", "context.confidence", "range", 4, 1),
            FieldQuality("payments.refund", "context.rationale", "missing", 4, 1),
        )
        assert f.worst_fields[0].to_json() == {
            "action": "payments.refund",
            "field": "args.amount",
            "check": "range",
            "checked": 3,
            "failed": 2,
            "failure_rate": 2 / 3,
        }

    def test_per_action_figures_keep_their_own_checks(self) -> None:
        """crm.note's figures hold only its own source and confidence checks."""
        book = fold(MonitorBook(CONFIG), stream())
        note = next(f for f in book.figures(at(300)) if f.action == "crm.note")
        assert (note.freshness_checked, note.range_checked, note.completeness_checked) == (1, 1, 0)
        assert note.worst_fields == ()
        assert note.worst_sources == ()


class TestConfig:
    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"bucket_seconds": 0}, "`bucket_seconds` must be a whole number >= 1"),
            ({"window_seconds": 1.5}, "`window_seconds` must be a whole number >= 1"),
            ({"sample_size": 7}, "`sample_size` must be even"),
            ({"watch": {"*": ["amount"]}}, "`amount` is not a request field"),
            ({"watch": {"*": "args.amount"}}, "must be a list of fields"),
            ({"required": {"*": ["args."]}}, "`args.` is not a request field"),
            ({"freshness": {"db": -1}}, "`freshness.db` must be a number of seconds"),
            ({"ranges": {"*": {"args.x": [5, 1]}}}, "has its min above its max"),
            ({"ranges": {"*": {"args.x": [1]}}}, "must be `\\[min, max\\]`"),
            ({"ranges": {"*": {"args.x": ["a", 1]}}}, "must be a number or null"),
        ],
    )
    def test_a_bad_config_says_what_is_wrong(self, fields: dict[str, Any], message: str) -> None:
        """Each mistake raises ValueError naming the setting in backticks."""
        with pytest.raises(ValueError, match=message):
            MonitorConfig(**fields)

    def test_the_config_keeps_its_own_copies(self) -> None:
        """Changing the dicts a config was built from changes nothing in it."""
        watch = {"*": ["args.amount"]}
        config = MonitorConfig(watch=watch, ranges={"*": {"args.x": [0, None]}})
        watch["*"].append("args.other")
        assert config.watch == {"*": ("args.amount",)}
        assert config.ranges == {"*": {"args.x": (0.0, None)}}
        assert config.horizon_seconds == 3600 + 86_400
