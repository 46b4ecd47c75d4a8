"""Scenario suites: a bundle's own tests, as data (request → expected decision).

Scenario files live in the bundle's `scenarios/` folder and are not part of its version:
changing a test does not change the policy. A suite reports each failing case with what
differed, and which rules, factors and budgets no case exercised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.errors import Problem, RequestInvalid
from charter.model import ActionRequest, AgentState, BudgetUsage, Decision, Halt, Verdict
from charter.policy._bundle import Bundle
from charter.policy._engine import decide
from charter.policy._source import SCENARIO_DIR, Node, read_yaml

__all__ = [
    "DEFAULT_NOW",
    "Scenario",
    "ScenarioResult",
    "SuiteReport",
    "load_scenarios",
    "run_scenarios",
]

#: The clock of a scenario that names none: fixed, so a suite never depends on the day.
DEFAULT_NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
_CASE_KEYS = ("expect", "name", "now", "request", "state")
_EXPECT_KEYS = ("reasons", "risk", "route", "rules", "verdict")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One case: a request, the agent's state and clock, and what the decision must say."""

    name: str
    file: str
    line: int
    request: ActionRequest
    state: AgentState
    now: dt.datetime
    expect: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """The outcome of one case; `differences` is empty when it passed."""

    scenario: Scenario
    decision: Decision
    differences: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Whether the decision met every expectation."""
        return not self.differences


@dataclass(slots=True)
class SuiteReport:
    """Every case's result, and the rules no case exercised."""

    results: list[ScenarioResult] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    total_rules: int = 0

    @property
    def failed(self) -> list[ScenarioResult]:
        """The cases that did not pass."""
        return [r for r in self.results if not r.passed]


def _parse_now(node: Node) -> dt.datetime | None:
    if not isinstance(node.value, str):
        return None
    try:
        value = dt.datetime.fromisoformat(node.value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _parse_state(node: Node, problems: list[Problem]) -> AgentState:
    raw = node.value
    if not isinstance(raw, dict) or not set(raw) <= {"autonomy", "budgets", "halts"}:
        problems.append(node.problem("scenario", "`state` may hold `autonomy`, `budgets`, `halts`"))
        return AgentState()
    try:
        budgets = {
            str(k): BudgetUsage(int(v.get("count", 0)), int(v.get("risk", 0)))
            for k, v in (raw.get("budgets") or {}).items()
        }
        halts = tuple(
            Halt(str(h["scope"]), h.get("target"), str(h.get("reason", "")))
            for h in raw.get("halts") or ()
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        problems.append(node.problem("scenario", f"`state` is malformed: {exc}"))
        return AgentState()
    for halt in halts:
        if halt.scope not in ("all", "agent", "action"):
            problems.append(
                node.problem("scenario", "a halt's `scope` is `all`, `agent` or `action`")
            )
    autonomy = raw.get("autonomy")
    if autonomy is not None and (isinstance(autonomy, bool) or not isinstance(autonomy, int)):
        problems.append(node.problem("scenario", "`state.autonomy` must be a whole number"))
        return AgentState(budgets=budgets, halts=halts)
    return AgentState(autonomy=raw.get("autonomy"), budgets=budgets, halts=halts)


def load_scenarios(root: Path, problems: list[Problem]) -> list[Scenario]:
    """Read every `scenarios/*.yaml` suite of the bundle at `root`."""
    folder = root / SCENARIO_DIR
    scenarios: list[Scenario] = []
    if not folder.is_dir():
        return scenarios
    for path in sorted(folder.rglob("*.y*ml")):
        display = path.relative_to(root).as_posix()
        node = read_yaml(path, display, problems)
        if node is None:
            continue
        if not isinstance(node.value, dict) or not isinstance(node.value.get("scenarios"), list):
            problems.append(
                node.problem("scenario", "a suite is a mapping with a `scenarios` list")
            )
            continue
        for _, case in node.child("scenarios").items():
            scenario = _parse_case(case, display, problems)
            if scenario is not None:
                scenarios.append(scenario)
    return scenarios


def _expect_problem(expect: dict[str, Any]) -> str | None:
    """What is wrong with the types of an `expect` mapping, if anything."""
    if not isinstance(expect["verdict"], str):
        return "`expect.verdict` must be text"
    risk = expect.get("risk")
    if "risk" in expect and (isinstance(risk, bool) or not isinstance(risk, int)):
        return "`expect.risk` must be a whole number"
    for key in ("rules", "reasons"):
        value = expect.get(key)
        if key in expect and not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            return f"`expect.{key}` must be a name or a list of names"
    if expect.get("route") is not None and not isinstance(expect["route"], str):
        return "`expect.route` must be a route id, or null for no route"
    return None


def _parse_case(case: Node, display: str, problems: list[Problem]) -> Scenario | None:
    raw = case.value
    if not isinstance(raw, dict):
        problems.append(case.problem("scenario", "each scenario is a mapping"))
        return None
    name = str(raw.get("name", f"line {case.line}"))
    unknown = sorted(set(raw) - set(_CASE_KEYS))
    missing = [k for k in ("name", "request", "expect") if k not in raw]
    if unknown or missing:
        problems.append(
            case.problem(
                "scenario",
                f"scenario `{name}`: "
                + (f"unknown keys {', '.join(unknown)}; " if unknown else "")
                + (f"missing {', '.join(missing)}; " if missing else "")
                + f"a scenario has {', '.join(_CASE_KEYS)}",
            )
        )
        return None
    try:
        request = ActionRequest.from_json(raw["request"])
    except RequestInvalid as exc:
        problems.append(
            case.child("request").problem("scenario", f"scenario `{name}`: {exc.message}")
        )
        return None
    expect = raw["expect"]
    if (
        not isinstance(expect, dict)
        or not set(expect) <= set(_EXPECT_KEYS)
        or "verdict" not in expect
    ):
        problems.append(
            case.child("expect").problem(
                "scenario",
                f"scenario `{name}`: `expect` needs `verdict` "
                f"and may hold {', '.join(_EXPECT_KEYS)}",
            )
        )
        return None
    wrong = _expect_problem(expect)
    if wrong is not None:
        problems.append(case.child("expect").problem("scenario", f"scenario `{name}`: {wrong}"))
        return None
    if expect["verdict"] not in {v.value for v in Verdict}:
        problems.append(
            case.child("expect").problem(
                "scenario", f"scenario `{name}`: unknown verdict `{expect['verdict']}`"
            )
        )
        return None
    now = DEFAULT_NOW
    if "now" in raw:
        parsed = _parse_now(case.child("now"))
        if parsed is None:
            problems.append(
                case.child("now").problem(
                    "scenario",
                    "`now` must be an RFC 3339 time with a zone, e.g. `2026-03-02T10:00:00Z`",
                )
            )
            return None
        now = parsed
    state = _parse_state(case.child("state"), problems) if "state" in raw else AgentState()
    return Scenario(name, display, case.line, request, state, now, dict(expect))


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or ()]


def check_expectations(decision: Decision, expect: dict[str, Any]) -> list[str]:
    """What in `decision` differs from `expect`, one line per difference."""
    diffs = []
    if decision.verdict.value != expect["verdict"]:
        diffs.append(f"verdict: expected {expect['verdict']}, got {decision.verdict.value}")
    if "risk" in expect and decision.risk != expect["risk"]:
        diffs.append(f"risk: expected {expect['risk']}, got {decision.risk}")
    fired = set(decision.rules) | {f.id for f in decision.factors}
    for rule in _as_list(expect.get("rules")):
        if rule not in fired:
            diffs.append(
                f"rules: expected `{rule}` to fire; fired: {', '.join(sorted(fired)) or 'none'}"
            )
    codes = {r.code for r in decision.reasons}
    for code in _as_list(expect.get("reasons")):
        if code not in codes:
            diffs.append(f"reasons: expected a `{code}` reason; got {', '.join(sorted(codes))}")
    if "route" in expect:
        got = decision.route.id if decision.route else None
        if got != expect["route"]:
            diffs.append(f"route: expected {expect['route']}, got {got}")
    return diffs


def run_scenarios(bundle: Bundle, scenarios: Sequence[Scenario]) -> SuiteReport:
    """Decide every scenario and compare; record which rules no scenario fired."""
    report = SuiteReport(total_rules=len(bundle.rule_ids))
    fired: set[str] = set()
    for scenario in scenarios:
        decision = decide(scenario.request, bundle, scenario.state, scenario.now)
        fired |= set(decision.rules) | {f.id for f in decision.factors}
        report.results.append(
            ScenarioResult(scenario, decision, tuple(check_expectations(decision, scenario.expect)))
        )
    report.uncovered = [rule for rule in bundle.rule_ids if rule not in fired]
    return report
