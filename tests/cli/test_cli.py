"""The `charter` command line: its output and exit codes, in-process and as a real script."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from _raw import drop_triggers, raw
from charter import Charter, load_bundle
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.testing import FakeClock, make_charter

SCRIPT = Path(sys.executable).with_name("charter")
NOW = "2026-03-02T10:00:00Z"
PROBLEM_LINE = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<code>[a-z_]+): .+$")


def run(*args: str | Path, stdin: str | None = None) -> Any:
    """Invoke the app in-process, as `charter ARGS...`."""
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin)


def script(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `charter` script in a real subprocess."""
    return subprocess.run(
        [str(SCRIPT), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def copy_example(dst: Path) -> Path:
    shutil.copytree(EXAMPLE_POLICY, dst, ignore_dangling_symlinks=True)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def request(amount: float = 600, agent: str = "support-bot", n: int = 1) -> dict[str, Any]:
    return {
        "agent": agent,
        "action": "payments.refund",
        "args": {"order_id": f"ord-{n}", "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "order arrived three weeks late"},
    }


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request()), encoding="utf-8")
    return path


@pytest.fixture
def ledger(store_target: str) -> str:
    """A small ledger: refunds of several sizes by two agents, one mail."""
    amounts = [40, 600, 700, 900, 2000, 30]
    with make_charter(EXAMPLE_POLICY, store_target, clock=FakeClock(tick=5)) as charter:
        charter.decide_many([request(a, n=i) for i, a in enumerate(amounts)])
        charter.decide(request(600, agent="support-bot-trainee", n=99))
    return store_target


def raw_update_payload(db: str, seq: int, old: str, new: str) -> None:
    drop_triggers(db, "ledger_entries")
    with raw(db) as connection:
        (text,) = connection.execute(
            "SELECT payload FROM ledger_entries WHERE seq = ?", (seq,)
        ).fetchone()
        assert old in text
        connection.execute(
            "UPDATE ledger_entries SET payload = ? WHERE seq = ?", (text.replace(old, new), seq)
        )


class TestCheck:
    def test_a_valid_bundle_passes(self) -> None:
        """`check` exits 0 and prints the bundle's version."""
        result = run("check", EXAMPLE_POLICY)
        assert result.exit_code == 0
        assert "ok" in result.stdout
        assert f"version {load_bundle(EXAMPLE_POLICY).version}" in result.stdout

    def test_a_broken_bundle_lists_located_problems(self, tmp_path: Path) -> None:
        """`check` exits 1 with one `file:line:col: code: message` line per problem."""
        bundle = copy_example(tmp_path / "broken")
        rules = bundle / "rules.yaml"
        edit(rules, "effect: deny\n", "effect: dny\n")
        result = run("check", bundle)
        assert result.exit_code == 1
        lines = result.stdout.splitlines()
        assert lines
        assert all(PROBLEM_LINE.match(line) for line in lines), lines
        first = PROBLEM_LINE.match(lines[0])
        assert first is not None
        assert first["file"] == str(rules)
        source = rules.read_text(encoding="utf-8").splitlines()
        line = next(i for i, text in enumerate(source, 1) if "effect: dny" in text)
        assert (int(first["line"]), int(first["col"])) == (line, source[line - 1].index("dny") + 1)
        assert first["code"] == "invalid_effect"
        assert "`dny`" in lines[0]

    def test_a_missing_folder_is_named_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`check` on a folder that does not exist says so once and exits 2 (usage error)."""
        monkeypatch.chdir(tmp_path)
        result = run("check", "nowhere")
        assert result.exit_code == 2
        assert "nowhere/nowhere" not in result.output
        assert "`nowhere` is not a folder" in result.output

    def test_the_real_script_checks(self) -> None:
        """The installed `charter` script runs `check` with the same output and exit code."""
        result = script("check", EXAMPLE_POLICY)
        assert result.returncode == 0, result.stderr
        assert "version sha256:" in result.stdout


class TestDecide:
    def test_prints_the_decision_as_json(self, request_file: Path) -> None:
        """`decide` prints the verdict, risk, factors, reasons and policy version as JSON."""
        result = run("decide", "--policy", EXAMPLE_POLICY, "--request", request_file, "--now", NOW)
        assert result.exit_code == 0
        decision = json.loads(result.stdout)
        assert decision["verdict"] == "allow"
        assert decision["risk"] == 40
        assert [f["id"] for f in decision["factors"]] == ["refund-over-100", "refund-over-500"]
        assert [r["code"] for r in decision["reasons"]] == ["allowed"]
        assert decision["policy_version"] == load_bundle(EXAMPLE_POLICY).version

    def test_autonomy_can_be_overridden(self, request_file: Path) -> None:
        """`--autonomy` decides as if the agent were at that level."""
        result = run(
            "decide", "--policy", EXAMPLE_POLICY, "--request", request_file, "--autonomy", "1"
        )
        assert result.exit_code == 0
        assert json.loads(result.stdout)["verdict"] == "require_approval"

    def test_explain_prints_a_table(self, request_file: Path) -> None:
        """`--explain` shows the verdict, the factors and the reasons in readable tables."""
        result = run("decide", "--policy", EXAMPLE_POLICY, "--request", request_file, "--explain")
        assert result.exit_code == 0
        assert result.stdout.startswith("ALLOW  support-bot → payments.refund")
        for text in ("risk factors", "refund-over-500", "reasons", "allowed", "autonomy level 2"):
            assert text in result.stdout

    def test_reads_the_request_from_stdin(self) -> None:
        """`--request -` reads the request from standard input."""
        result = run(
            "decide", "--policy", EXAMPLE_POLICY, "--request", "-", stdin=json.dumps(request(2000))
        )
        assert result.exit_code == 0
        decision = json.loads(result.stdout)
        assert decision["verdict"] == "require_approval"
        assert decision["route"]["id"] == "finance-review"

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            pytest.param('{"agent": "support-bot",', "invalid JSON", id="bad-json"),
            pytest.param('{"agent": "a", "agent": "b", "action": "x.y"}', "`agent`", id="dup"),
            pytest.param(
                '{"agent": "a", "action": "x.y", "args": {"amount": NaN}}', "args.amount", id="nan"
            ),
            pytest.param('{"agent": 5, "action": "x.y"}', "`agent`", id="wrong-type"),
            pytest.param(
                '{"agent": "a", "action": "x.y", "context": {"mood": 1}}',
                "`context.mood`",
                id="unknown-context",
            ),
            pytest.param('{"agent": "a", "action": "Not An Action"}', "`action`", id="action"),
        ],
    )
    def test_malformed_requests_exit_2_naming_the_field(self, text: str, named: str) -> None:
        """A malformed request exits 2 and the message names what is wrong."""
        result = run("decide", "--policy", EXAMPLE_POLICY, "--request", "-", stdin=text)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert named in result.stderr

    def test_a_missing_request_file_exits_2(self, tmp_path: Path) -> None:
        """A request file that does not exist is a usage error naming the file."""
        result = run("decide", "--policy", EXAMPLE_POLICY, "--request", tmp_path / "none.json")
        assert result.exit_code == 2
        assert "none.json" in result.stderr

    def test_a_bad_now_exits_2(self, request_file: Path) -> None:
        """`--now` without a timezone is refused rather than guessed."""
        result = run(
            "decide", "--policy", EXAMPLE_POLICY, "--request", request_file, "--now", "2026-03-02"
        )
        assert result.exit_code == 2
        assert "--now" in result.stderr

    def test_a_store_records_the_decision(self, request_file: Path, store_target: str) -> None:
        """With `--store` (or `--db`) the decision is recorded: the output gives its place."""
        args = ("decide", "--policy", EXAMPLE_POLICY, "--request", request_file)
        first = json.loads(run(*args, "--store", store_target, "--now", NOW).stdout)
        if "://" not in store_target:  # a file: `--db` is the same ledger
            args = (*args, "--db", store_target)
        else:
            args = (*args, "--store", store_target)
        second = json.loads(run(*args, "--now", "2026-03-02T10:01:00Z").stdout)
        assert (first["seq"], second["seq"]) == (2, 3)  # after the deploy entry
        assert first["verdict"] == "allow"
        assert first["at"] == "2026-03-02T10:00:00.000000Z"
        shown = run("ledger", "show", "--store", store_target, "--json")
        entries = [json.loads(line) for line in shown.stdout.splitlines()]
        assert [e["kind"] for e in entries] == ["policy.deployed", "decision", "decision"]
        assert entries[1]["payload"]["decision_id"] == first["id"]
        assert run("ledger", "verify", "--store", store_target).exit_code == 0
        explained = run(*args, "--now", "2026-03-02T10:02:00Z", "--explain")
        assert f"recorded as entry 4 of {store_target}" in explained.stdout
        if "://" in store_target:  # a password in the URL is never printed
            with_password = store_target.replace("charter@", "charter:s3cret@", 1)
            assert with_password != store_target
            again = run(
                "decide", "--policy", EXAMPLE_POLICY, "--request", request_file,
                "--store", with_password, "--now", "2026-03-02T10:03:00Z", "--explain",
            )  # fmt: skip
            assert "recorded as entry 5 of" in again.stdout
            assert "s3cret" not in again.stdout

    def test_autonomy_is_not_silently_ignored_with_db(
        self, request_file: Path, store_target: str
    ) -> None:
        """`--autonomy` with `--db` (or `--store`) is honoured or refused, never dropped."""
        option = "--store" if "://" in store_target else "--db"
        result = run(
            "decide", "--policy", EXAMPLE_POLICY, "--request", request_file,
            "--autonomy", "0", option, store_target,
        )  # fmt: skip
        if result.exit_code == 2:
            assert "--autonomy" in result.stderr
        else:
            assert result.exit_code == 0
            assert json.loads(result.stdout)["verdict"] == "require_approval"

    def test_the_real_script_reads_stdin(self) -> None:
        """The installed script decides a request piped to it, and exits 2 on a bad one."""
        good = subprocess.run(
            [str(SCRIPT), "decide", "--policy", str(EXAMPLE_POLICY), "--request", "-"],
            input=json.dumps(request(40)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert good.returncode == 0, good.stderr
        assert json.loads(good.stdout)["verdict"] == "allow"
        bad = subprocess.run(
            [str(SCRIPT), "decide", "--policy", str(EXAMPLE_POLICY), "--request", "-"],
            input='{"agent": 1}',
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bad.returncode == 2
        assert "`agent`" in bad.stderr


class TestTest:
    def test_the_example_suite_passes(self) -> None:
        """`test` on the example exits 0 with a pass count and full rule coverage."""
        result = run("test", EXAMPLE_POLICY)
        assert result.exit_code == 0
        assert "FAIL" not in result.stdout
        summary = re.search(r"(\d+) passed, 0 failed; rule coverage (\d+)/(\d+)", result.stdout)
        assert summary is not None
        assert int(summary[1]) > 0
        assert summary[2] == summary[3]

    def test_a_broken_expectation_fails_with_a_diff(self, tmp_path: Path) -> None:
        """A scenario whose expectation is wrong fails with its location and the difference."""
        bundle = copy_example(tmp_path / "bundle")
        edit(
            bundle / "scenarios" / "support.yaml",
            "expect: {verdict: allow, risk: 0}",
            "expect: {verdict: allow, risk: 5}",
        )
        result = run("test", bundle)
        assert result.exit_code == 1
        assert "FAIL a small refund with a rationale is allowed" in result.stdout
        assert f"{bundle / 'scenarios' / 'support.yaml'}:" in result.stdout
        assert "risk: expected 5, got 0" in result.stdout
        assert ", 1 failed;" in result.stdout

    def test_json_report(self, tmp_path: Path) -> None:
        """`test --json` reports passes, failures with their differences, and gaps."""
        bundle = copy_example(tmp_path / "bundle")
        edit(bundle / "scenarios" / "support.yaml", "risk: 0}", "risk: 5}")
        result = run("test", bundle, "--json")
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        [failed] = report["failed"]
        assert failed["file"] == "scenarios/support.yaml"
        assert failed["differences"] == ["risk: expected 5, got 0"]
        assert report["uncovered"] == []


class TestLedger:
    def test_verify_ok(self, ledger: str) -> None:
        """`ledger verify` exits 0 and says how many entries it checked."""
        result = run("ledger", "verify", "--store", ledger)
        assert result.exit_code == 0
        assert result.stdout.startswith("ok 10 entries verified")

    def test_verify_names_the_broken_entry(self, ledger: str) -> None:
        """An edited payload makes `ledger verify` exit 1 naming that entry."""
        raw_update_payload(ledger, 4, '"amount":700', '"amount":70')
        result = run("ledger", "verify", "--store", ledger)
        assert result.exit_code == 1
        assert "BROKEN" in result.stdout
        assert "entry 4" in result.stdout

    def test_a_missing_ledger_exits_2(self, tmp_path: Path) -> None:
        """Verifying a ledger file that does not exist is a usage error, and creates nothing.

        A file, so SQLite only (a missing PostgreSQL database: tests/cli/test_reading_commands).
        """
        missing = tmp_path / "none.db"
        result = run("ledger", "verify", "--db", missing)
        assert result.exit_code == 2
        assert "does not exist" in result.stderr
        assert not missing.exists()

    def test_show_lists_the_last_entries(self, ledger: str) -> None:
        """`ledger show -n` shows the last entries with a one-line summary each."""
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, ["ledger", "show", "--store", ledger, "-n", "3"]
        )
        assert result.exit_code == 0
        assert "support-bot payments.refund → allow (risk 0)" in result.stdout
        assert "approval.opened" in result.stdout
        assert "support-bot-trainee payments.refund → require_approval (risk 40)" in result.stdout
        assert "policy.deployed" not in result.stdout

    def test_show_json_filters_by_kind(self, ledger: str) -> None:
        """`ledger show --json --kind` prints one JSON object per matching entry."""
        result = run("ledger", "show", "--store", ledger, "--json", "--kind", "policy.deployed")
        assert result.exit_code == 0
        [entry] = [json.loads(line) for line in result.stdout.splitlines()]
        assert entry["seq"] == 1
        assert entry["payload"]["version"] == load_bundle(EXAMPLE_POLICY).version
        assert set(entry) == {"seq", "kind", "at", "chain_hash", "payload"}


class TestReplay:
    def test_verify_mode_reproduces_the_record(self, ledger: str) -> None:
        """`replay` exits 0 when every recorded decision is reproduced."""
        result = run("replay", "--store", ledger)
        assert result.exit_code == 0
        assert "7 decisions, 7 unchanged, 0 changed" in result.stdout

    def test_json_report_shape(self, ledger: str) -> None:
        """`replay --json` prints the report with its mode, counts and breakdowns."""
        result = run("replay", "--store", ledger, "--json")
        assert result.exit_code == 0
        report = json.loads(result.stdout)
        assert set(report) == {
            "mode", "against", "ok", "total", "unchanged", "changed", "versions",
            "transitions", "by_rule", "by_agent", "examples", "mismatches", "errors",
            "error_count", "state",
        }  # fmt: skip
        assert (report["mode"], report["against"], report["ok"]) == ("verify", None, True)
        assert (report["total"], report["unchanged"], report["changed"]) == (7, 7, 0)
        assert report["state"] == {"checked": 7, "differing": 0, "examples": []}
        assert report["versions"] == {load_bundle(EXAMPLE_POLICY).version: 7}

    def test_what_if_shows_the_transitions(self, ledger: str, tmp_path: Path) -> None:
        """`replay --policy` on a changed bundle exits 0 and shows what would change."""
        bundle = copy_example(tmp_path / "stricter")
        edit(bundle / "rules.yaml", "when: args.amount > 1000", "when: args.amount > 500")
        result = run("replay", "--store", ledger, "--policy", bundle, "--json")
        assert result.exit_code == 0
        report = json.loads(result.stdout)
        assert (report["mode"], report["ok"]) == ("what-if", True)
        assert report["against"] == load_bundle(bundle).version
        assert report["transitions"] == [
            {"from": "allow", "to": "require_approval", "count": 3},
            {"from": "require_approval", "to": "require_approval", "count": 1},
        ]
        assert report["by_rule"] == {"large-refunds-need-finance": {"newly_fired": 4}}
        assert sorted(report["by_agent"]) == ["support-bot", "support-bot-trainee"]
        table = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, ["replay", "--store", ledger, "--policy", str(bundle)]
        )
        assert table.exit_code == 0
        assert "what-if against" in table.stdout
        assert "verdict transitions" in table.stdout
        assert "large-refunds-need-finance" in table.stdout

    def test_an_altered_decision_is_a_mismatch(self, ledger: str) -> None:
        """A recorded verdict edited in the database makes `replay` exit 1 naming the entry."""
        raw_update_payload(ledger, 6, '"verdict":"require_approval"', '"verdict":"allow"')
        result = run("replay", "--store", ledger)
        assert result.exit_code == 1
        assert "MISMATCH entry 6" in result.stdout
        assert "verdict: recorded 'allow', replayed 'require_approval'" in result.stdout
        assert run("ledger", "verify", "--store", ledger).exit_code == 1

    def test_the_real_script_replays(self, ledger: str) -> None:
        """The installed script replays a ledger and exits 0."""
        result = script("replay", "--store", ledger)
        assert result.returncode == 0, result.stderr
        assert "0 changed" in result.stdout


class TestInit:
    def test_writes_a_bundle_that_checks_and_tests(self, tmp_path: Path) -> None:
        """`init` copies the example into a new folder that passes `check` and `test`."""
        target = tmp_path / "my-policy"
        result = run("init", target)
        assert result.exit_code == 0, result.output
        assert (target / "rules.yaml").is_file()
        assert run("check", target).exit_code == 0
        assert run("test", target).exit_code == 0

    def test_refuses_a_non_empty_folder(self, tmp_path: Path) -> None:
        """`init` will not write into a folder that already holds files, and leaves it alone."""
        target = tmp_path / "busy"
        target.mkdir()
        (target / "notes.txt").write_text("mine", encoding="utf-8")
        result = run("init", target)
        assert result.exit_code == 2
        assert "not empty" in result.stderr
        assert [p.name for p in target.iterdir()] == ["notes.txt"]


class TestDemo:
    def test_runs_and_audits(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_target: str
    ) -> None:
        """`demo` decides the traffic, prints the summary, and the ledger verifies and replays."""
        monkeypatch.chdir(tmp_path)
        result = run("demo", "--requests", "1200", "--store", store_target)
        assert result.exit_code == 0, result.output
        named = f"--store {store_target}" if "://" in store_target else f"--db {store_target}"
        assert f"charter replay {named}" in result.stdout  # what to run next, on this ledger
        for text in ("verdicts by agent", "top reasons", "risk distribution"):
            assert text in result.stdout
        assert "ledger verify: ok," in result.stdout
        assert re.search(r"replay under recorded versions: ok, 1\d\d\d decisions", result.stdout)
        assert "approvals (reviewers simulated)" in result.stdout
        with Charter(EXAMPLE_POLICY, store_target) as charter:
            kinds = Counter(e.kind for e in charter.store.entries())
            assert kinds["decision"] >= 1200  # and the reviewers' modified requests
            assert kinds["approval.opened"] > 100
            assert kinds["approval.approved"] > 50
            assert kinds["approval.denied"] > 10
            assert kinds["approval.modified"] > 0
        assert not (tmp_path / "charter-demo.db").exists()  # the store named, no other

    def test_running_twice_appends(self, tmp_path: Path, store_target: str) -> None:
        """A second demo run appends to the same ledger, which still verifies and replays.

        On SQLite the demo's own file (`charter-demo.db` here), on PostgreSQL `--store`.
        """
        db = str(tmp_path / "charter-demo.db") if "://" not in store_target else store_target
        named = ["--store", db] if "://" in db else []
        for _ in range(2):
            result = script("demo", "--requests", "400", *named, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
        verified = script("ledger", "verify", "--store", db)
        assert verified.returncode == 0
        with Charter(EXAMPLE_POLICY, db) as charter:
            decisions = sum(e.kind == "decision" for e in charter.store.entries())
            entries = charter.store.head().seq
        assert verified.stdout.startswith(f"ok {entries} entries verified")
        replayed = run("replay", "--store", db, "--json")
        assert replayed.exit_code == 0
        assert json.loads(replayed.stdout)["total"] == decisions >= 800
