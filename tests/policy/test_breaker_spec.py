"""The `breakers` section and action `timeout`s: what a bundle may say, and where it is wrong."""

from __future__ import annotations

from pathlib import Path

from test_check import BASE, located, with_base, write

from charter.policy import load_bundle

BREAKER = """\
breakers:
  - id: notes-failing
    actions: [notes.add]
    window: 15m
    min_sample: 10
    failure_rate: 0.5
    cool_down: 10m
    then: require_approval
"""


def test_a_breaker_applies_to_the_plans_it_selects(tmp_path: Path) -> None:
    timed = BASE.replace("      notes.add:\n", "      notes.add:\n        timeout: 90s\n")
    bundle = load_bundle(write(tmp_path, {"base.yaml": timed, "b.yaml": BREAKER}))
    plan = bundle.plans[("clerk", "notes.add")]
    (breaker,) = plan.breakers
    assert (breaker.id, breaker.window_seconds, breaker.cool_down_seconds) == (
        "notes-failing",
        900,
        600,
    )
    assert (breaker.min_sample, breaker.failure_rate, breaker.half_open) == (10, 0.5, 1)
    assert (breaker.then, breaker.per_agent) == ("require_approval", False)
    assert breaker.reason == "breaker `notes-failing` is open"
    assert plan.timeout == 90
    assert bundle.breaker("notes-failing") is breaker
    assert bundle.breaker("nothing") is None


def test_each_mistake_is_located(tmp_path: Path) -> None:
    broken = (
        BREAKER.replace("then: require_approval", "then: escalate")
        .replace("failure_rate: 0.5", "failure_rate: 1.5")
        .replace("window: 15m", "window: soon")
        .replace("min_sample: 10", "min_sample: 0")
        + "    per_agent: maybe\n    cooldown: 5m\n"
    )
    assert located(tmp_path, with_base(b_yaml=broken)) == [
        "b.yaml:4:13: duration",
        "b.yaml:5:17: type",
        "b.yaml:6:19: type",
        "b.yaml:8:11: invalid_effect",
        "b.yaml:9:16: type",
        "b.yaml:10:5: unknown_key",  # `cooldown`, with a hint for `cool_down`
    ]


def test_required_keys_and_what_the_breaker_selects(tmp_path: Path) -> None:
    missing = "breakers:\n  - id: b1\n    actions: [notes.nothing]\n"
    problems = located(tmp_path, with_base(b_yaml=missing))
    assert problems.count("b.yaml:2:5: missing_key") == 5  # window, min_sample, ...
    assert "b.yaml:2:5: matches_nothing" in problems


def test_a_breaker_id_is_not_a_rules(tmp_path: Path) -> None:
    rule = "rules:\n  - id: notes-failing\n    effect: deny\n    reason: because\n"
    problems = located(tmp_path, with_base(b_yaml=BREAKER, r_yaml=rule))
    assert any(p.endswith("duplicate_id") for p in problems)


def test_a_timeout_must_be_a_duration(tmp_path: Path) -> None:
    timed = BASE.replace("      notes.add:\n", "      notes.add:\n        timeout: later\n")
    assert located(tmp_path, {"base.yaml": timed}) == ["base.yaml:5:18: duration"]
