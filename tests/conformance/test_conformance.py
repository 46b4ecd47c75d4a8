"""Policy conformance cases as data: each YAML file here is one bundle and its cases.

A file holds `bundle` (a mapping of sections, written out as `policy.yaml`) and/or
`files` (file name -> content, for runbooks or several policy files), then `cases`:
each a `request`, optional `state` ({autonomy, budgets, halts}) and `now`, and `expect`.

`expect` always holds `verdict`; every other key is checked only when present:
`reasons` (the reason codes, in order), `rules` (`Decision.rules`, in order), `factors`
(matched factor ids, in order), `risk`, `route` (the route id, or null), `route_detail`
(the route's JSON), `message_contains` (text some reason's message must contain), and
any top-level key of the decision's JSON (`role`, `autonomy_level`, `runbook`, ...).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from charter.canonical import canonical_bytes
from charter.model import ActionRequest, AgentState, BudgetUsage, Decision, Halt
from charter.policy import Bundle, bundle_from_content, decide, load_bundle

HERE = Path(__file__).parent
NOW = dt.datetime(2026, 3, 4, 10, 0, tzinfo=dt.UTC)
SPECIAL = {"verdict", "reasons", "rules", "factors", "route", "route_detail", "message_contains"}


def _load(path: Path) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


SUITES = {path.stem: _load(path) for path in sorted(HERE.glob("*.yaml"))}
CASES = [
    pytest.param(stem, i, id=f"{stem}: {case['name']}")
    for stem, suite in SUITES.items()
    for i, case in enumerate(suite["cases"])
]


def write_bundle(suite: dict[str, Any], root: Path) -> Path:
    """Write a suite's bundle into `root`; JSON is YAML, so sections are written as JSON."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (suite.get("files") or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    if "bundle" in suite:
        (root / "policy.yaml").write_text(json.dumps(suite["bundle"], indent=2), "utf-8")
    return root


_BUNDLES: dict[str, Bundle] = {}


@pytest.fixture
def bundle_of(tmp_path_factory: pytest.TempPathFactory):
    """Load each suite's bundle once per session."""

    def get(stem: str) -> Bundle:
        if stem not in _BUNDLES:
            root = write_bundle(SUITES[stem], tmp_path_factory.mktemp(stem))
            _BUNDLES[stem] = load_bundle(root)
        return _BUNDLES[stem]

    return get


def state_of(raw: dict[str, Any] | None) -> AgentState:
    """The agent state a case describes."""
    raw = raw or {}
    budgets = {
        name: BudgetUsage(int(used.get("count", 0)), int(used.get("risk", 0)))
        for name, used in (raw.get("budgets") or {}).items()
    }
    halts = tuple(
        Halt(h["scope"], h.get("target"), h.get("reason", "")) for h in raw.get("halts") or ()
    )
    return AgentState(autonomy=raw.get("autonomy"), budgets=budgets, halts=halts)


def run_case(bundle: Bundle, case: dict[str, Any]) -> Decision:
    """Decide a case's request under `bundle`."""
    now = dt.datetime.fromisoformat(case["now"]) if "now" in case else NOW
    request = ActionRequest.from_json(case["request"])
    return decide(request, bundle, state_of(case.get("state")), now)


def differences(decision: Decision, expect: dict[str, Any]) -> list[str]:
    """Each way `decision` differs from `expect`."""
    got = decision.to_json()
    diffs = []

    def compare(what: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            diffs.append(f"{what}: expected {expected!r}, got {actual!r}")

    compare("verdict", expect["verdict"], got["verdict"])
    if "reasons" in expect:
        compare("reasons", expect["reasons"], [r["code"] for r in got["reasons"]])
    if "rules" in expect:
        compare("rules", expect["rules"], list(decision.rules))
    if "factors" in expect:
        compare("factors", expect["factors"], [f["id"] for f in got["factors"]])
    if "route" in expect:
        compare("route", expect["route"], got["route"] and got["route"]["id"])
    if "route_detail" in expect:
        compare("route_detail", expect["route_detail"], got["route"])
    messages = " | ".join(r["message"] for r in got["reasons"])
    for text in expect.get("message_contains", ()):
        if text not in messages:
            diffs.append(f"no reason says {text!r}; reasons: {messages}")
    for key in set(expect) - SPECIAL:
        compare(key, expect[key], got[key])
    return diffs


class TestConformance:
    @pytest.mark.parametrize(("stem", "index"), CASES)
    def test_case(self, bundle_of, stem: str, index: int) -> None:
        """Each case's decision says exactly what the case expects."""
        case = SUITES[stem]["cases"][index]

        decision = run_case(bundle_of(stem), case)

        assert differences(decision, case["expect"]) == [], json.dumps(decision.to_json())

    @pytest.mark.parametrize(("stem", "index"), CASES)
    def test_rebuilt_bundle_decides_the_same(self, bundle_of, stem: str, index: int) -> None:
        """A bundle rebuilt from its canonical content decides every case byte for byte alike."""
        bundle = bundle_of(stem)
        rebuilt = bundle_from_content(json.loads(bundle.canonical_content()))
        case = SUITES[stem]["cases"][index]

        first = canonical_bytes(run_case(bundle, case).to_json())
        second = canonical_bytes(run_case(rebuilt, case).to_json())

        assert rebuilt.version == bundle.version
        assert first == second


class TestSuites:
    @pytest.mark.parametrize("stem", sorted(SUITES))
    def test_every_rule_is_exercised(self, bundle_of, stem: str) -> None:
        """Every rule, factor and budget of a conformance bundle fires in at least one case."""
        bundle = bundle_of(stem)
        fired: set[str] = set()
        for case in SUITES[stem]["cases"]:
            decision = run_case(bundle, case)
            fired |= set(decision.rules) | {f.id for f in decision.factors}

        assert [rule for rule in bundle.rule_ids if rule not in fired] == []

    def test_every_precedence_step_is_covered(self) -> None:
        """The suites between them produce every reason code the engine has."""
        codes = {
            code
            for suite in SUITES.values()
            for case in suite["cases"]
            for code in case["expect"].get("reasons", ())
        }

        assert codes >= {
            "halted",
            "unknown_agent",
            "outside_envelope",
            "contract",
            "evaluation_error",
            "deny_rule",
            "risk_ceiling",
            "escalate_rule",
            "approval_rule",
            "over_autonomy",
            "budget_spent",
            "allowed",
        }
