"""Scenario suites: a bundle's own tests, run by `charter test POLICY_DIR`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from charter.errors import Problem
from charter.model import Verdict
from charter.policy import DEFAULT_NOW, load_bundle, load_scenarios, run_scenarios

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy"

POLICY = """\
roles:
  clerk:
    envelope:
      notes.add:
        args: {type: object, properties: {text: {type: string}}}
agents:
  clerk-bot: {role: clerk, autonomy: 1}
autonomy:
  levels: {0: 0, 1: 10}
  ceiling: 50
defaults: {route: review}
routes:
  review: {groups: [ops], sla: 1h}
rules:
  - id: shouting
    effect: require_approval
    when: has(args.text) && args.text.endsWith('!')
    reason: loud notes are reviewed
  - id: never-fired
    effect: deny
    when: has(args.text) && args.text == 'forbidden'
    reason: a rule no scenario exercises
risk:
  factors:
    - id: long
      when: has(args.text) && size(args.text) > 20
      points: 5
      reason: long notes
"""


def bundle_dir(root: Path, suite: str) -> Path:
    """Write the test bundle and one scenario suite into `root`."""
    (root / "scenarios").mkdir(parents=True)
    (root / "policy.yaml").write_text(POLICY, encoding="utf-8")
    (root / "scenarios" / "suite.yaml").write_text(textwrap.dedent(suite), encoding="utf-8")
    return root


def load(root: Path) -> tuple[list, list[str]]:
    """The scenarios of the bundle at `root`, and each problem as `file:line:col: code`."""
    problems: list[Problem] = []
    scenarios = load_scenarios(root, problems)
    return scenarios, [f"{p.file}:{p.line}:{p.col}: {p.code}" for p in problems]


class TestExampleSuites:
    def test_every_example_scenario_passes(self) -> None:
        """The shipped example bundle's scenarios all pass."""
        problems: list[Problem] = []
        scenarios = load_scenarios(EXAMPLE, problems)

        report = run_scenarios(load_bundle(EXAMPLE), scenarios)

        assert problems == []
        assert len(scenarios) >= 20
        assert [(r.scenario.name, r.differences) for r in report.failed] == []

    def test_example_scenarios_exercise_every_rule(self) -> None:
        """Every rule, factor and budget of the example bundle is exercised by a scenario."""
        bundle = load_bundle(EXAMPLE)

        report = run_scenarios(bundle, load_scenarios(EXAMPLE, []))

        assert report.uncovered == []
        assert report.total_rules == len(bundle.rule_ids)


class TestRunScenarios:
    def test_passing_case(self, tmp_path: Path) -> None:
        """A case whose decision meets every expectation passes."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: a loud note needs approval
                request: {agent: clerk-bot, action: notes.add, args: {text: hey!}}
                expect: {verdict: require_approval, risk: 0, rules: [shouting], route: review}
            """,
        )
        scenarios, problems = load(root)

        report = run_scenarios(load_bundle(root), scenarios)

        assert problems == []
        assert [r.passed for r in report.results] == [True]
        assert report.results[0].decision.verdict is Verdict.REQUIRE_APPROVAL

    def test_failing_case_reports_each_difference(self, tmp_path: Path) -> None:
        """A failing case says, line by line, what was expected and what the decision said."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: wrong about everything
                request: {agent: clerk-bot, action: notes.add, args: {text: hey!}}
                expect:
                  verdict: allow
                  risk: 7
                  rules: [long]
                  reasons: [over_autonomy]
                  route: elsewhere
            """,
        )
        scenarios, _ = load(root)

        report = run_scenarios(load_bundle(root), scenarios)

        assert [r.scenario.name for r in report.failed] == ["wrong about everything"]
        assert report.failed[0].differences == (
            "verdict: expected allow, got require_approval",
            "risk: expected 7, got 0",
            "rules: expected `long` to fire; fired: shouting",
            "reasons: expected a `over_autonomy` reason; got approval_rule",
            "route: expected elsewhere, got review",
        )

    def test_coverage_lists_unexercised_rules(self, tmp_path: Path) -> None:
        """The report names every rule, factor and budget that no case fired."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: a quiet short note is allowed
                request: {agent: clerk-bot, action: notes.add, args: {text: hi}}
                expect: {verdict: allow}
            """,
        )
        scenarios, _ = load(root)

        report = run_scenarios(load_bundle(root), scenarios)

        assert report.uncovered == ["shouting", "never-fired", "long"]
        assert report.total_rules == 3

    def test_state_and_clock_are_read(self, tmp_path: Path) -> None:
        """A case's `state` and `now` are what the decision sees; without `now` it is fixed."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: halted
                request: {agent: clerk-bot, action: notes.add}
                state:
                  autonomy: 0
                  budgets: {some-budget: {count: 3}}
                  halts: [{scope: agent, target: clerk-bot, reason: incident}]
                now: "2026-03-02T10:00:00Z"
                expect: {verdict: deny, reasons: [halted]}
              - name: no clock
                request: {agent: clerk-bot, action: notes.add}
                expect: {verdict: allow}
            """,
        )
        scenarios, problems = load(root)

        report = run_scenarios(load_bundle(root), scenarios)

        assert problems == []
        assert report.failed == []
        assert scenarios[0].state.autonomy == 0
        assert scenarios[0].state.budgets["some-budget"].count == 3
        assert scenarios[0].now.isoformat() == "2026-03-02T10:00:00+00:00"
        assert scenarios[1].now == DEFAULT_NOW

    def test_scenarios_folder_is_optional(self, tmp_path: Path) -> None:
        """A bundle without `scenarios/` has no scenarios and no problems."""
        assert load(tmp_path) == ([], [])


class TestScenarioProblems:
    def test_suite_is_a_mapping_with_scenarios(self, tmp_path: Path) -> None:
        """A suite file is a mapping with a `scenarios` list."""
        root = bundle_dir(tmp_path, "- name: x\n")

        assert load(root)[1] == ["scenarios/suite.yaml:1:1: scenario"]

    def test_unknown_and_missing_keys(self, tmp_path: Path) -> None:
        """A case with an unknown key, or without name, request or expect, is located."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: typo
                requst: {agent: clerk-bot, action: notes.add}
                expect: {verdict: allow}
            """,
        )

        assert load(root) == ([], ["scenarios/suite.yaml:2:5: scenario"])

    def test_invalid_request(self, tmp_path: Path) -> None:
        """A request an agent could not send is a problem of the suite, not a failing case."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: bad action name
                request: {agent: clerk-bot, action: Notes}
                expect: {verdict: deny}
            """,
        )

        assert load(root)[1] == ["scenarios/suite.yaml:3:14: scenario"]

    def test_unknown_verdict(self, tmp_path: Path) -> None:
        """An expected verdict is allow, require_approval, escalate or deny."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: bad verdict
                request: {agent: clerk-bot, action: notes.add}
                expect: {verdict: maybe}
            """,
        )

        assert load(root)[1] == ["scenarios/suite.yaml:4:13: scenario"]

    def test_expectation_of_the_wrong_type(self, tmp_path: Path) -> None:
        """`risk` is a whole number and `rules` a name or list of names, or the suite is refused."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: risk as text
                request: {agent: clerk-bot, action: notes.add}
                expect: {verdict: allow, risk: "5"}
              - name: rules as a number
                request: {agent: clerk-bot, action: notes.add}
                expect: {verdict: allow, rules: 5}
              - name: verdict as a list
                request: {agent: clerk-bot, action: notes.add}
                expect: {verdict: [allow]}
            """,
        )

        assert load(root) == (
            [],
            [
                "scenarios/suite.yaml:4:13: scenario",
                "scenarios/suite.yaml:7:13: scenario",
                "scenarios/suite.yaml:10:13: scenario",
            ],
        )

    def test_now_needs_a_zone(self, tmp_path: Path) -> None:
        """`now` is an RFC 3339 time with a zone, so a suite never depends on the machine."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: local time
                request: {agent: clerk-bot, action: notes.add}
                now: "2026-03-02T10:00:00"
                expect: {verdict: allow}
            """,
        )

        assert load(root)[1] == ["scenarios/suite.yaml:4:10: scenario"]

    def test_malformed_state(self, tmp_path: Path) -> None:
        """A state with an unknown key, a bad halt or a non-numeric autonomy is located."""
        root = bundle_dir(
            tmp_path,
            """\
            scenarios:
              - name: unknown key
                request: {agent: clerk-bot, action: notes.add}
                state: {mood: calm}
                expect: {verdict: allow}
              - name: bad halt scope
                request: {agent: clerk-bot, action: notes.add}
                state: {halts: [{scope: planet}]}
                expect: {verdict: allow}
              - name: autonomy as text
                request: {agent: clerk-bot, action: notes.add}
                state: {autonomy: high}
                expect: {verdict: allow}
            """,
        )

        assert load(root)[1] == [
            "scenarios/suite.yaml:4:12: scenario",
            "scenarios/suite.yaml:8:12: scenario",
            "scenarios/suite.yaml:12:12: scenario",
        ]
