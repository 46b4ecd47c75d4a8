"""`charter check`: every problem code a bundle can get, located by file, line and column."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from charter.errors import PolicyInvalid
from charter.policy import bundle_from_content, load_bundle

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy"

#: A small valid bundle; each test breaks one thing in it or adds a broken file beside it.
BASE = """\
roles:
  clerk:
    envelope:
      notes.add:
        args:
          type: object
          properties:
            text: {type: string}
            tag: {type: string}
agents:
  clerk-bot: {role: clerk, autonomy: 1}
autonomy:
  levels: {0: 0, 1: 10}
  ceiling: 50
defaults:
  route: review
routes:
  review: {groups: [ops], sla: 1h}
"""

#: The base bundle with a closed contract: `notes.add` takes `text` and `tag` only.
CLOSED = BASE.replace(
    "          properties:\n", "          additionalProperties: false\n          properties:\n"
)

#: A route to which a test appends webhooks under `notify:`.
HOOKED = "routes:\n  hooked:\n    groups: [ops]\n    sla: 1h\n    notify:\n"

#: A rule to which a test appends keys (or a `when:`) to break it.
RULE = "rules:\n  - id: r1\n    effect: deny\n    reason: because\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (name -> content) into the bundle folder `root`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


def located(root: Path, files: dict[str, str | bytes]) -> list[str]:
    """The `file:line:col: code` of every problem loading the bundle reports."""
    with pytest.raises(PolicyInvalid) as info:
        load_bundle(write(root, files))
    return [f"{p.file}:{p.line}:{p.col}: {p.code}" for p in info.value.problems]


def with_base(**files: str | bytes) -> dict[str, str | bytes]:
    """The valid base bundle plus `files` (`x_yaml` names the file `x.yaml`)."""
    return {"base.yaml": BASE, **{k.replace("_", "."): v for k, v in files.items()}}


class TestValidBundles:
    def test_example_bundle_loads(self) -> None:
        """The shipped example bundle is valid and versioned by a sha256 hash."""
        bundle = load_bundle(EXAMPLE)

        assert bundle.version.startswith("sha256:")
        assert len(bundle.version) == len("sha256:") + 64

    def test_base_bundle_loads(self, tmp_path: Path) -> None:
        """The smallest bundle the tests build on is valid."""
        bundle = load_bundle(write(tmp_path, with_base()))

        assert set(bundle.agents) == {"clerk-bot"}

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """A bundle with several problems reports all of them, sorted by location."""
        files = with_base(
            x_yaml=RULE + "    wen: x\n  - id: r2\n    effect: allow\n    reason: r\n"
        )

        assert located(tmp_path, files) == [
            "x.yaml:5:5: unknown_key",
            "x.yaml:7:13: invalid_effect",
        ]

    def test_problem_prints_as_file_line_col_code_message(self, tmp_path: Path) -> None:
        """A problem prints as `file:line:col: code: message`, message in lowercase words."""
        write(tmp_path, with_base(x_yaml=RULE + "    when: request.n > 1\n"))

        with pytest.raises(PolicyInvalid) as info:
            load_bundle(tmp_path)

        assert str(info.value) == (
            "x.yaml:5:11: unknown_variable: rule `r1` reads `request`, which is not a "
            "variable; conditions may read agent, action, args, context, now"
        )

    def test_version_ignores_scenarios_and_layout(self, tmp_path: Path) -> None:
        """The version hashes what the files say, not scenarios, comments or key order."""
        first = load_bundle(write(tmp_path / "a", with_base()))
        reordered = "# a comment\n" + BASE.replace("  ceiling: 50\n", "").replace(
            "autonomy:\n", "autonomy:\n  ceiling: 50\n"
        )
        second = load_bundle(
            write(
                tmp_path / "b",
                {"base.yaml": reordered, "scenarios/s.yaml": "scenarios: []\n"},
            )
        )

        assert second.version == first.version

    def test_version_changes_with_runbooks(self, tmp_path: Path) -> None:
        """A runbook is part of the bundle: changing its text changes the version."""
        first = load_bundle(write(tmp_path / "a", with_base(**{"runbooks/x.md": "one"})))
        second = load_bundle(write(tmp_path / "b", with_base(**{"runbooks/x.md": "two"})))

        assert first.version != second.version

    def test_merge_keys_are_read(self, tmp_path: Path) -> None:
        """YAML `<<` merge keys work, and the merged value is what is hashed."""
        routes = "routes:\n  base: &b {groups: [ops], sla: 1h}\n  slow:\n    <<: *b\n    sla: 4h\n"

        bundle = load_bundle(write(tmp_path, with_base(x_yaml=routes)))

        assert bundle.routes["slow"].sla_seconds == 4 * 3600
        assert bundle.routes["slow"].groups == ("ops",)

    def test_macro_on_whole_args_is_not_a_field(self, tmp_path: Path) -> None:
        """`args.exists(k, ...)` is a macro over the arguments, not an argument named `exists`."""
        closed = CLOSED
        files = {"base.yaml": closed, "x.yaml": RULE + "    when: args.exists(k, k == 'tag')\n"}

        assert load_bundle(write(tmp_path, files)).plans


class TestYamlProblems:
    def test_yaml_syntax(self, tmp_path: Path) -> None:
        """Invalid YAML is located where the parser gave up."""
        assert located(tmp_path, with_base(x_yaml="rules: [\n")) == ["x.yaml:2:1: yaml_syntax"]

    def test_duplicate_key(self, tmp_path: Path) -> None:
        """A key given twice in one mapping is an error, not a silent override."""
        files = with_base(x_yaml="rules: []\nrules: []\n")

        assert located(tmp_path, files) == ["x.yaml:2:1: duplicate_key"]

    def test_duplicate_key_number_and_text(self, tmp_path: Path) -> None:
        """`1:` and `'1':` are one JSON key, so giving both is a duplicate."""
        files = {"base.yaml": BASE.replace("{0: 0, 1: 10}", "{0: 0, 1: 10, '1': 30}")}

        assert located(tmp_path, files) == ["base.yaml:13:25: duplicate_key"]

    def test_yaml_value_date(self, tmp_path: Path) -> None:
        """A YAML date cannot be hashed as JSON and must be quoted."""
        files = with_base(x_yaml="rules:\n  - id: r1\n    effect: deny\n    reason: 2026-01-01\n")

        assert located(tmp_path, files) == ["x.yaml:4:13: type", "x.yaml:4:13: yaml_value"]

    def test_yaml_value_nan(self, tmp_path: Path) -> None:
        """Numbers must be finite: `.nan` and `.inf` are refused."""
        files = {"base.yaml": BASE.replace("tag: {type: string}", "tag: {examples: [.inf]}")}

        assert located(tmp_path, files) == ["base.yaml:9:30: yaml_value"]

    def test_key_type(self, tmp_path: Path) -> None:
        """Keys are text (or whole numbers, read as text); `true:` is not."""
        write(tmp_path, with_base(x_yaml="routes:\n  true: {groups: [ops], sla: 1h}\n"))

        with pytest.raises(PolicyInvalid) as info:
            load_bundle(tmp_path)

        assert str(info.value) == "x.yaml:2:3: key_type: key `true` must be text"

    def test_encoding(self, tmp_path: Path) -> None:
        """A policy file that is not UTF-8 is refused as a whole."""
        files = with_base(x_yaml=b"rules: [\xff]\n")

        assert located(tmp_path, files) == ["x.yaml:0:0: encoding"]

    def test_unreadable(self, tmp_path: Path) -> None:
        """A runbook that is not UTF-8 text cannot be part of the bundle."""
        files = with_base(**{"runbooks/bad.md": b"\xff\xfe"})

        assert located(tmp_path, files) == ["runbooks/bad.md:0:0: unreadable"]

    def test_not_a_bundle(self, tmp_path: Path) -> None:
        """A path that is not a folder is not a bundle."""
        missing = tmp_path / "nowhere"

        with pytest.raises(PolicyInvalid) as info:
            load_bundle(missing)

        assert f"{missing}:0:0: not_a_bundle" in [
            f"{p.file}:{p.line}:{p.col}: {p.code}" for p in info.value.problems
        ]

    def test_empty_bundle(self, tmp_path: Path) -> None:
        """A folder with no top-level `*.yaml` file holds no policy."""
        problems = located(tmp_path, {"scenarios/s.yaml": "scenarios: []\n"})

        assert f"{tmp_path}:0:0: empty_bundle" in problems


class TestStructureProblems:
    def test_unknown_key_section(self, tmp_path: Path) -> None:
        """A misspelled section is refused rather than skipped."""
        assert located(tmp_path, with_base(x_yaml="rulez: []\n")) == ["x.yaml:1:1: unknown_key"]

    def test_unknown_key_in_rule(self, tmp_path: Path) -> None:
        """A misspelled `when` is refused: skipping it would widen what agents may do."""
        files = with_base(x_yaml=RULE + "    wen: 'true'\n")

        assert located(tmp_path, files) == ["x.yaml:5:5: unknown_key"]

    def test_missing_key(self, tmp_path: Path) -> None:
        """A rule needs an `id`, an `effect` and a `reason`."""
        files = with_base(x_yaml="rules:\n  - id: r1\n    effect: deny\n")

        assert located(tmp_path, files) == ["x.yaml:2:5: missing_key"]

    def test_type(self, tmp_path: Path) -> None:
        """A section of the wrong shape is located at its value."""
        assert located(tmp_path, with_base(x_yaml="rules: {}\n")) == ["x.yaml:1:8: type"]

    def test_type_of_empty_value(self, tmp_path: Path) -> None:
        """A key with no value is located at the key, not on the next line."""
        files = with_base(x_yaml="roles:\n  auditor:\nagents: {}\n")

        assert located(tmp_path, files) == ["x.yaml:2:3: type"]

    def test_type_of_autonomy_level(self, tmp_path: Path) -> None:
        """Autonomy levels are whole numbers 0, 1, 2 written with ASCII digits."""
        files = {"base.yaml": BASE.replace("{0: 0, 1: 10}", "{0: 0, 1: 10, '²': 20}")}

        assert located(tmp_path, files) == ["base.yaml:13:30: type"]

    def test_invalid_id(self, tmp_path: Path) -> None:
        """Ids start with a letter or digit."""
        files = with_base(x_yaml="rules:\n  - id: -r1\n    effect: deny\n    reason: r\n")

        assert located(tmp_path, files) == ["x.yaml:2:9: invalid_id"]

    def test_invalid_name_in_envelope(self, tmp_path: Path) -> None:
        """Envelope actions are dotted lowercase names like `payments.refund`."""
        files = with_base(x_yaml="roles:\n  auditor:\n    envelope:\n      Notes.Read: {}\n")

        assert located(tmp_path, files) == ["x.yaml:4:19: invalid_name"]

    def test_invalid_name_in_selector(self, tmp_path: Path) -> None:
        """An action pattern in a selector must look like an action name."""
        files = with_base(x_yaml=RULE + "    actions: [Notes.Add]\n")

        assert located(tmp_path, files) == [
            "x.yaml:2:5: matches_nothing",
            "x.yaml:5:15: invalid_name",
        ]

    def test_duplicate(self, tmp_path: Path) -> None:
        """A route (or role, or agent) defined in two files is refused."""
        files = with_base(x_yaml="routes:\n  review: {groups: [ops], sla: 1h}\n")

        assert located(tmp_path, files) == ["x.yaml:2:11: duplicate"]

    def test_duplicate_section(self, tmp_path: Path) -> None:
        """`autonomy` and `defaults` may be defined in one file only."""
        files = with_base(x_yaml="autonomy: {levels: {0: 0}, ceiling: 5}\n")

        assert located(tmp_path, files) == ["x.yaml:1:11: duplicate"]

    def test_invalid_effect(self, tmp_path: Path) -> None:
        """A rule's effect is deny, require_approval or escalate; `allow` is not a rule."""
        files = with_base(x_yaml="rules:\n  - id: r1\n    effect: allow\n    reason: r\n")

        assert located(tmp_path, files) == ["x.yaml:3:13: invalid_effect"]

    def test_runbook_without_escalate(self, tmp_path: Path) -> None:
        """Only an escalate rule hands a person a runbook."""
        files = with_base(x_yaml=RULE + "    runbook: runbooks/x.md\n", **{"runbooks/x.md": "x"})

        assert located(tmp_path, files) == ["x.yaml:5:14: runbook_without_escalate"]

    def test_levels_order(self, tmp_path: Path) -> None:
        """A higher autonomy level may not allow less risk than a lower one."""
        files = {"base.yaml": BASE.replace("{0: 0, 1: 10}", "{0: 20, 1: 10}")}

        assert located(tmp_path, files) == ["base.yaml:13:3: levels_order"]

    def test_ceiling(self, tmp_path: Path) -> None:
        """No level may allow more risk than the ceiling."""
        files = {"base.yaml": BASE.replace("ceiling: 50", "ceiling: 5")}

        assert located(tmp_path, files) == ["base.yaml:13:3: ceiling"]

    def test_duration(self, tmp_path: Path) -> None:
        """An SLA or window is a duration like `30m`, `4h`, `1d`."""
        files = {"base.yaml": BASE.replace("sla: 1h", "sla: soon")}

        assert located(tmp_path, files) == ["base.yaml:18:32: duration"]

    def test_invalid_timeout(self, tmp_path: Path) -> None:
        """`on_timeout` is `deny` or `{route: NEXT}`; a timeout never approves."""
        files = {"base.yaml": BASE.replace("sla: 1h}", "sla: 1h, on_timeout: approve}")}

        assert located(tmp_path, files) == ["base.yaml:18:48: invalid_timeout"]

    def test_invalid_field(self, tmp_path: Path) -> None:
        """A data rule's field is a dotted path under `args` or `context`."""
        files = with_base(x_yaml="data:\n  - field: email\n    store: hash\n")

        assert located(tmp_path, files) == ["x.yaml:2:12: invalid_field"]

    def test_invalid_store(self, tmp_path: Path) -> None:
        """A data rule stores a field by drop, hash or mask."""
        files = with_base(x_yaml="data:\n  - field: args.tag\n    store: encrypt\n")

        assert located(tmp_path, files) == ["x.yaml:3:12: invalid_store"]

    def test_no_envelope(self, tmp_path: Path) -> None:
        """A role lists the actions it may take; a role without any is a mistake."""
        files = with_base(x_yaml="roles:\n  auditor:\n    description: reads things\n")

        assert located(tmp_path, files) == ["x.yaml:3:5: no_envelope"]


class TestWebhookProblems:
    """`notify:` of a route: each webhook's url, format and key variable are checked."""

    def test_webhooks_load(self, tmp_path: Path) -> None:
        """A route's webhooks are read in order, `format` defaulting to `json`."""
        files = with_base(
            x_yaml=HOOKED
            + "      - {url: 'https://hooks.example.com/a?k=1', secret_env: HOOK_KEY}\n"
            + "      - {url: 'http://127.0.0.1:9000/b', format: slack, secret_env: SLACK_KEY}\n"
        )

        bundle = load_bundle(write(tmp_path, files))

        assert [(w.url, w.format, w.secret_env) for w in bundle.webhooks("hooked")] == [
            ("https://hooks.example.com/a?k=1", "json", "HOOK_KEY"),
            ("http://127.0.0.1:9000/b", "slack", "SLACK_KEY"),
        ]
        assert bundle.webhooks("review") == ()
        assert bundle.webhooks("nowhere") == ()

    def test_webhooks_stay_out_of_the_route_a_decision_carries(self, tmp_path: Path) -> None:
        """A decision's route JSON is unchanged by webhooks, so recorded decisions replay."""
        hook = "      - {url: 'https://hooks.example.com/a', secret_env: HOOK_KEY}\n"
        bundle = load_bundle(write(tmp_path, with_base(x_yaml=HOOKED + hook)))

        assert bundle.routes["hooked"].to_json() == {
            "id": "hooked",
            "groups": ["ops"],
            "approvals": 1,
            "sla_seconds": 3600,
            "on_timeout": "deny",
        }

    def test_invalid_url_scheme(self, tmp_path: Path) -> None:
        """A webhook is sent over http or https only."""
        hook = "      - {url: 'ftp://hooks.example.com/x', secret_env: HOOK_KEY}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:15: invalid_url"]

    def test_invalid_url_without_host(self, tmp_path: Path) -> None:
        """A webhook URL names a host."""
        hook = "      - {url: 'https:///x', secret_env: HOOK_KEY}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:15: invalid_url"]

    def test_invalid_url_with_credentials(self, tmp_path: Path) -> None:
        """Credentials in a URL would be stored in the ledger with the bundle: refused."""
        hook = "      - {url: 'https://me:pw@hooks.example.com/', secret_env: HOOK_KEY}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:15: invalid_url"]

    def test_invalid_url_port(self, tmp_path: Path) -> None:
        """A port out of range is located at the URL."""
        hook = "      - {url: 'https://hooks.example.com:99999/', secret_env: HOOK_KEY}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:15: invalid_url"]

    def test_invalid_format(self, tmp_path: Path) -> None:
        """A webhook's format is `json` or `slack`."""
        hook = "      - url: https://hooks.example.com/x\n        format: xml\n"
        hook += "        secret_env: HOOK_KEY\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:7:17: invalid_format"]

    def test_invalid_env(self, tmp_path: Path) -> None:
        """`secret_env` names an environment variable; it is never the key itself."""
        hook = "      - {url: 'https://hooks.example.com/x', secret_env: 's3cr3t!'}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:58: invalid_env"]

    def test_missing_secret_env(self, tmp_path: Path) -> None:
        """Every webhook is signed, so `secret_env` is required."""
        hook = "      - url: https://hooks.example.com/x\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:9: missing_key"]

    def test_unknown_key_in_webhook(self, tmp_path: Path) -> None:
        """A misspelled webhook key is refused rather than skipped."""
        hook = "      - {url: 'https://hooks.example.com/x', secret_env: K, fromat: slack}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:61: unknown_key"]

    def test_notify_must_be_a_list(self, tmp_path: Path) -> None:
        """`notify` is a list of webhooks, even when there is one."""
        hook = "      url: https://hooks.example.com/x\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:6:7: type"]

    def test_duplicate_webhook(self, tmp_path: Path) -> None:
        """The same URL and format twice in a route would send every message twice."""
        hook = "      - {url: 'https://hooks.example.com/x', secret_env: A}\n"
        hook += "      - {url: 'https://hooks.example.com/x', secret_env: B}\n"

        assert located(tmp_path, with_base(x_yaml=HOOKED + hook)) == ["x.yaml:7:9: duplicate"]


class TestReferenceProblems:
    def test_unknown_route(self, tmp_path: Path) -> None:
        """A route named anywhere must be defined under `routes`."""
        files = with_base(x_yaml=RULE.replace("deny", "escalate") + "    route: nowhere\n")

        assert located(tmp_path, files) == ["x.yaml:5:12: unknown_route"]

    def test_unknown_role(self, tmp_path: Path) -> None:
        """An agent's role must be defined under `roles`."""
        files = {"base.yaml": BASE.replace("{role: clerk,", "{role: auditor,")}

        assert located(tmp_path, files) == ["base.yaml:11:21: unknown_role"]

    def test_unknown_role_in_selector(self, tmp_path: Path) -> None:
        """A rule's `roles` must name defined roles."""
        files = with_base(x_yaml=RULE + "    roles: [auditor]\n")

        assert located(tmp_path, files) == ["x.yaml:2:5: unknown_role"]

    def test_unknown_level(self, tmp_path: Path) -> None:
        """An agent's autonomy level must be one `autonomy.levels` defines."""
        files = {"base.yaml": BASE.replace("autonomy: 1}", "autonomy: 4}")}

        assert located(tmp_path, files) == ["base.yaml:11:38: unknown_level"]

    def test_unknown_agent(self, tmp_path: Path) -> None:
        """A rule's `agents` must name defined agents."""
        files = with_base(x_yaml=RULE + "    agents: [ghost]\n")

        assert located(tmp_path, files) == ["x.yaml:2:5: unknown_agent"]

    def test_matches_nothing(self, tmp_path: Path) -> None:
        """An action pattern that matches no envelope action is almost always a typo."""
        files = with_base(x_yaml=RULE + "    actions: [payments.*]\n")

        assert located(tmp_path, files) == ["x.yaml:2:5: matches_nothing"]

    def test_duplicate_id(self, tmp_path: Path) -> None:
        """Rules, factors and budgets share one id space, so a decision names one thing."""
        budget = "budgets:\n  - id: r1\n    window: 1h\n    max_count: 5\n"

        assert located(tmp_path, with_base(x_yaml=RULE + budget)) == ["x.yaml:6:5: duplicate_id"]

    def test_route_loop(self, tmp_path: Path) -> None:
        """A route may not time out into itself."""
        files = {"base.yaml": BASE.replace("sla: 1h}", "sla: 1h, on_timeout: {route: review}}")}

        assert located(tmp_path, files) == ["base.yaml:18:11: route_loop"]

    def test_unknown_runbook(self, tmp_path: Path) -> None:
        """A runbook must be a file under the bundle's `runbooks/` folder."""
        files = with_base(x_yaml=RULE.replace("deny", "escalate") + "    runbook: runbooks/x.md\n")

        assert located(tmp_path, files) == ["x.yaml:5:14: unknown_runbook"]

    def test_unknown_runbook_outside_bundle(self, tmp_path: Path) -> None:
        """A runbook path may not climb out of the bundle."""
        rule = RULE.replace("deny", "escalate") + "    runbook: runbooks/../base.yaml\n"

        assert located(tmp_path, with_base(x_yaml=rule)) == ["x.yaml:5:14: unknown_runbook"]

    def test_missing_section_autonomy(self, tmp_path: Path) -> None:
        """A bundle needs an `autonomy` section."""
        files = {
            "base.yaml": BASE.replace("autonomy:\n  levels: {0: 0, 1: 10}\n  ceiling: 50\n", "")
        }

        assert located(tmp_path, files) == ["(bundle):0:0: missing_section"]

    def test_missing_section_roles(self, tmp_path: Path) -> None:
        """A bundle needs at least one role."""
        files = {"x.yaml": "autonomy: {levels: {0: 0}, ceiling: 5}\n"}

        assert located(tmp_path, files) == ["(bundle):0:0: missing_section"]

    def test_no_route(self, tmp_path: Path) -> None:
        """Every action needs a route for the approvals it may need."""
        files = {"base.yaml": BASE.replace("defaults:\n  route: review\n", "")}

        assert located(tmp_path, files) == ["base.yaml:5:9: no_route"]

    def test_invalid_contract(self, tmp_path: Path) -> None:
        """An action's `args` must be a valid JSON Schema (draft 7)."""
        files = {"base.yaml": BASE.replace("text: {type: string}", "text: {type: text}")}

        assert located(tmp_path, files) == ["base.yaml:6:11: invalid_contract"]


class TestConditionProblems:
    def test_cel_syntax(self, tmp_path: Path) -> None:
        """A condition that does not parse is located at the column where it broke."""
        files = with_base(x_yaml=RULE + "    when: args.tag ==\n")

        assert located(tmp_path, files) == ["x.yaml:5:22: cel_syntax"]

    def test_cel_syntax_in_list(self, tmp_path: Path) -> None:
        """In a list of conditions the broken one is located."""
        files = with_base(x_yaml=RULE + "    when:\n      - has(args.tag)\n      - args.tag ==\n")

        assert located(tmp_path, files) == ["x.yaml:7:20: cel_syntax"]

    def test_unknown_variable(self, tmp_path: Path) -> None:
        """Conditions read agent, action, args, context and now only."""
        files = with_base(x_yaml=RULE + "    when: request.tag == 'x'\n")

        assert located(tmp_path, files) == ["x.yaml:5:11: unknown_variable"]

    def test_unknown_field_context(self, tmp_path: Path) -> None:
        """`context` has a fixed set of fields; free-form values go under `labels`."""
        files = with_base(x_yaml=RULE + "    when: context.score > 1\n")

        assert located(tmp_path, files) == ["x.yaml:5:11: unknown_field"]

    def test_unknown_field_agent(self, tmp_path: Path) -> None:
        """`agent` has id, role, owner, model_id, model_version and autonomy only."""
        files = with_base(x_yaml=RULE + "    when: agent.team == 'x'\n")

        assert located(tmp_path, files) == ["x.yaml:5:11: unknown_field"]

    def test_unknown_field_args(self, tmp_path: Path) -> None:
        """An argument the action's closed contract does not allow can never be read."""
        closed = CLOSED
        files = {"base.yaml": closed, "x.yaml": RULE + "    when: args.amount > 1\n"}

        assert located(tmp_path, files) == ["x.yaml:5:11: unknown_field"]

    def test_reads_redacted_field(self, tmp_path: Path) -> None:
        """A condition may not read a field the ledger does not keep: replay could not see it."""
        data = "data:\n  - field: args.tag\n    store: hash\n"
        files = with_base(x_yaml=data + RULE + "    when: has(args.tag) && args.tag == 'x'\n")

        assert located(tmp_path, files) == ["x.yaml:8:11: reads_redacted_field"]

    def test_reads_redacted_field_of_a_later_action(self, tmp_path: Path) -> None:
        """A condition shared by several actions is checked against each one's data rules.

        BUG (for the lead, `_bundle.py`): `_Compiler.program` caches checks by condition
        text, so the data rule on `notes.add` is never checked when `notes.archive`
        (listed first) compiled the condition.
        """
        roles = BASE.replace(
            "      notes.add:\n",
            "      notes.archive:\n        args: {type: object}\n      notes.add:\n",
        )
        data = "data:\n  - field: args.tag\n    actions: [notes.add]\n    store: hash\n"
        rule = RULE + "    when: has(args.tag) && args.tag == 'x'\n"

        assert located(tmp_path, {"base.yaml": roles, "x.yaml": data + rule}) == [
            "x.yaml:9:11: reads_redacted_field"
        ]

    def test_unknown_field_does_not_depend_on_envelope_order(self, tmp_path: Path) -> None:
        """Whether a condition's argument is reported does not depend on envelope order.

        BUG (for the lead, `_bundle.py`): the first plan that compiles a condition decides
        alone (the check is cached by condition text), so swapping two envelope entries
        flips the result.
        """
        closed = "        args: {type: object, additionalProperties: false, properties: {}}\n"
        first = BASE.replace(
            "      notes.add:\n", "      notes.archive:\n" + closed + "      notes.add:\n"
        )
        last = BASE.replace("agents:\n", "      notes.archive:\n" + closed + "agents:\n")
        rule = RULE + "    when: has(args.tag) && args.tag == 'x'\n"
        outcomes = []
        for name, roles in (("first", first), ("last", last)):
            write(tmp_path / name, {"base.yaml": roles, "x.yaml": rule})
            try:
                load_bundle(tmp_path / name)
                outcomes.append("loads")
            except PolicyInvalid as exc:
                outcomes.append(",".join(p.code for p in exc.problems))

        assert outcomes[0] == outcomes[1]


class TestStoredContent:
    def test_bundle_format(self) -> None:
        """Stored content in a format this Charter does not read is refused, not guessed at."""
        with pytest.raises(PolicyInvalid) as info:
            bundle_from_content({"format": 99, "files": {}})

        assert [str(p) for p in info.value.problems] == [
            "(ledger):0:0: bundle_format: stored bundle content is not in a format this "
            "version of Charter reads"
        ]

    def test_rebuilt_bundle_has_the_same_version(self) -> None:
        """A bundle rebuilt from its canonical content has the version it was recorded with."""
        bundle = load_bundle(EXAMPLE)

        rebuilt = bundle_from_content(json.loads(bundle.canonical_content()))

        assert rebuilt.version == bundle.version
