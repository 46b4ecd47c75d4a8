"""`charter monitors`, `charter alerts` and `charter autonomy`, on both stores and a server.

The ledger is the closed loop of `tests/gateway/test_monitoring.py`: notes that fail
fire the example policy's `outcomes-failing` alert and demote support-bot (level 2 to
1); 100 clean notes after it earn a proposal to give level 2 back. Refunds of small
amounts two hours before and of large ones at the end make `args.amount` drift, and
one decision of an agent the policy does not define is recorded (denied).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _files import digest
from typer.testing import CliRunner

from _raw import fingerprint
from _serve import serve
from _traffic import notes
from charter import Charter
from charter._cli_monitors import sparkline
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.monitors import Figures
from charter.policy import load_bundle
from charter.service._monitors import fold_ledger
from charter.store import open_store
from charter.testing import FakeClock

#: Wide enough that no cell of the table folds.
WIDE = {"COLUMNS": "250"}
READING = (("monitors",), ("alerts",), ("autonomy", "proposals"))


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


def refund(n: int, amount: int) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{n}", "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.8, "rationale": "damaged item"},
    }


def demoted_with_a_proposal(charter: Charter, clock: FakeClock) -> None:
    """The loop: an alert fires, support-bot is demoted, and then proposed back."""
    for i in range(30):
        charter.decide(refund(i, 20 + i))
        clock.advance(seconds=1)
    clock.advance(hours=2)
    notes(charter, clock, 20, every=5)
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    clock.advance(minutes=1)
    notes(charter, clock, 100)
    for i in range(30):
        charter.decide(refund(100 + i, 400 + 10 * i))
        clock.advance(seconds=1)
    charter.decide({"agent": "ghost", "action": "crm.note", "args": {}, "context": {}})
    clock.advance(minutes=1)
    charter.monitors.evaluate()
    assert charter.autonomy("support-bot") == 1
    assert [p["agent"] for p in charter.monitors.proposals()] == ["support-bot"]


@dataclass(frozen=True)
class Ledger:
    """A ledger the loop ran on, and what the service said at its last entry."""

    target: str
    at: str
    figures: list[dict[str, Any]]
    series: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    proposals: list[dict[str, Any]]


def active(figures: Figures) -> bool:
    return bool(figures.decisions or figures.outcomes or figures.approvals_ended)


@pytest.fixture
def ledger(store_target: str) -> Ledger:
    clock = FakeClock(tick=0.01)
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as charter:
        demoted_with_a_proposal(charter, clock)
        last = charter.store.entry(charter.store.head().seq)
        assert last is not None
        now = dt.datetime.fromisoformat(last.at)
        monitors = charter.monitors
        figures = [f for f in monitors.figures(now=now) if active(f)]
        series = [
            monitors.series(f.agent, f.action, points=12, step_seconds=300, now=now).to_json()
            for f in figures
            if f.agent is not None
        ]
        return Ledger(
            store_target,
            last.at,
            [f.to_json() for f in figures],
            series,
            [dict(a) for a in monitors.alerts()],
            [dict(p) for p in monitors.proposals()],
        )


def autonomy_of(target: str, agent: str) -> int | None:
    with Charter(EXAMPLE_POLICY, target) as charter:
        return charter.autonomy(agent)


def untouched(target: str) -> str:
    """What must not change under a reading command: the store, and (SQLite) its folder.

    SQLite itself may leave an empty `-wal` and its `-shm` index beside a WAL ledger it
    read (every reading command does); they hold no entry, so they are not counted.
    """
    if "://" in target:
        return fingerprint(target)
    folder = Path(target).parent
    files = sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))
    wal = Path(f"{target}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    return f"{digest(Path(target))} {files}"


# -- monitors ---------------------------------------------------------------------------


def test_the_figures_on_a_store_are_the_services_at_its_last_entry(ledger: Ledger) -> None:
    """Read-only, at the ledger's last entry (not the wall clock), as the service says."""
    before = untouched(ledger.target)
    result = run("monitors", "--store", ledger.target, "--json")
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    assert said["at"] == ledger.at
    assert (said["level"], said["window_seconds"], said["step_seconds"]) == ("action", 3600, 300)
    assert [g["figures"] for g in said["groups"]] == ledger.figures
    assert [g["series"] for g in said["groups"]] == ledger.series
    assert [(g["figures"]["agent"], g["figures"]["action"]) for g in said["groups"]] == [
        ("ghost", "crm.note"),
        ("support-bot", "crm.note"),
        ("support-bot", "payments.refund"),
    ]
    agents = {a["agent"]: a for a in said["agents"]}
    assert (agents["ghost"]["autonomy"], agents["ghost"]["profile_autonomy"]) == (None, None)
    bot = agents["support-bot"]
    assert (bot["autonomy"], bot["profile_autonomy"]) == (1, 2)
    assert bot["demotion"]["rule"] == "demote-on-drift-or-failures"
    assert (bot["demotion"]["from"], bot["demotion"]["level"]) == (2, 1)
    assert bot["proposal"] == ledger.proposals[0]
    assert untouched(ledger.target) == before
    again = run("monitors", "--store", ledger.target, "--json")
    assert again.stdout == result.stdout  # the same ledger, the same figures


def test_the_table_shows_the_figures_a_trend_and_the_agents_level(ledger: Ledger) -> None:
    result = run("monitors", "--store", ledger.target)
    assert result.exit_code == 0, result.output
    text = result.stdout
    note = next(f for f in ledger.figures if f["action"] == "crm.note" and f["agent"] != "ghost")
    assert note["autonomous_success_rate"] == pytest.approx(104 / 120)
    row = next(line for line in text.splitlines() if "support-bot" in line and "crm.note" in line)
    trend = sparkline([p["success_rate"] for p in ledger.series[1]["points"]])
    assert trend.endswith("▂█")  # the failures' step, then the clean notes'
    for cell in ("1 ↓", "120", "87%", "0.12/0.03", trend):
        assert cell in row, (cell, row)
    refunds = next(line for line in text.splitlines() if "payments.refund" in line)
    assert "args.amount" in refunds  # the drifted field, with its PSI
    assert f"to {ledger.at} in {ledger.target}" in text
    assert "demoted by the controller's rule `demote-on-drift-or-failures`" in text
    assert "`charter autonomy accept support-bot`" in text
    assert "ghost: not an agent the policy or the registry defines" in text


def test_the_figures_by_agent_model_and_fleet(ledger: Ledger) -> None:
    by_agent = json.loads(
        run("monitors", "--store", ledger.target, "--level", "agent", "--json").stdout
    )
    rows = {g["figures"]["agent"]: g["figures"] for g in by_agent["groups"]}
    # the hour to the last entry: 120 notes and the last 30 refunds, not the first 30
    assert rows["support-bot"]["decisions"] == 150
    assert rows["support-bot"]["outcomes"] == 120
    wider = run("monitors", "--store", ledger.target, "--level", "agent", "--window", "10800",
                "--json")  # fmt: skip
    (bot,) = [g for g in json.loads(wider.stdout)["groups"] if g["figures"]["agent"] != "ghost"]
    assert bot["figures"]["decisions"] == 180
    assert (len(bot["series"]["points"]), bot["series"]["step_seconds"]) == (12, 900)
    too_long = run("monitors", "--store", ledger.target, "--window", str(31 * 86400))
    assert too_long.exit_code == 2
    assert "longer than the book keeps" in too_long.stderr
    fleet = run("monitors", "--store", ledger.target, "--level", "fleet", "--json")
    (group,) = json.loads(fleet.stdout)["groups"]
    assert (group["figures"]["decisions"], group["series"]) == (151, None)
    one = run("monitors", "--store", ledger.target, "--agent", "support-bot", "--action",
              "payments.refund", "--level", "model", "--json")  # fmt: skip
    (refunds,) = json.loads(one.stdout)["groups"]
    assert (refunds["figures"]["action"], refunds["figures"]["decisions"]) == (
        "payments.refund",
        30,
    )
    table = run("monitors", "--store", ledger.target, "--level", "fleet").stdout
    assert "151" in table
    assert "level:" not in table  # the fleet has no autonomy level, nor a trend
    assert "trend" not in table
    wrong = run("monitors", "--store", ledger.target, "--level", "team")
    assert wrong.exit_code == 2
    assert "--level is one of model, action, agent, fleet" in wrong.stderr


def test_nothing_to_show_is_said_and_is_no_error(ledger: Ledger, store_target: str) -> None:
    nobody = run("monitors", "--store", ledger.target, "--agent", "nobody")
    assert nobody.exit_code == 0
    assert f"no decisions of agent `nobody` in the window to {ledger.at}" in nobody.stdout
    narrow = run("monitors", "--store", ledger.target, "--agent", "nobody", "--json")
    assert json.loads(narrow.stdout)["groups"] == []


def test_an_empty_ledger_is_said_so(store_target: str) -> None:
    open_store(store_target).close()  # a ledger with no entry (PostgreSQL: migrated)
    before = untouched(store_target)
    result = run("monitors", "--store", store_target)
    assert result.exit_code == 0, result.output
    assert "is empty: no figures yet" in result.stdout
    said = json.loads(run("monitors", "--store", store_target, "--json").stdout)
    assert (said["at"], said["groups"], said["agents"]) == (None, [], [])
    assert "no alerts firing" in run("alerts", "--store", store_target).stdout
    assert "no proposals open" in run("autonomy", "proposals", "--store", store_target).stdout
    assert untouched(store_target) == before


WRITING = (("autonomy", "accept", "support-bot"), ("autonomy", "decline", "a", "--reason", "b"))


@pytest.mark.parametrize("command", [*READING, *WRITING], ids=" ".join)
def test_a_missing_ledger_is_refused_and_not_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Exit 2, one line naming the path (as `ledger verify` and `halt` say it); no file."""
    missing = tmp_path / "none.db"
    result = run(*command, "--db", str(missing))
    assert result.exit_code == 2
    said = "ledger " if command in WRITING else ""
    assert result.stderr.splitlines() == [f"error: {said}`{missing}` does not exist"]
    assert list(tmp_path.iterdir()) == []


def test_the_reading_commands_change_nothing(ledger: Ledger) -> None:
    before = untouched(ledger.target)
    for command in READING:
        for extra in ((), ("--json",)):
            result = run(*command, *extra, "--store", ledger.target)
            assert result.exit_code == 0, (command, result.output)
    assert untouched(ledger.target) == before


# -- alerts and proposals ------------------------------------------------------------------


def test_the_alerts_firing(ledger: Ledger) -> None:
    said = json.loads(run("alerts", "--store", ledger.target, "--json").stdout)
    assert said == {"alerts": ledger.alerts}
    assert [a["alert"] for a in said["alerts"]] == ["outcomes-failing"]
    result = run("alerts", "--store", ledger.target)
    assert result.exit_code == 0
    (row,) = [line for line in result.stdout.splitlines() if "outcomes-failing" in line]
    for cell in (
        "critical",
        "support-bot",
        "0.2 on 20",
        "success_rate < 0.8 (on at least 20)",
        ledger.alerts[0]["since"],
        "runbooks/failures.md",
    ):
        assert cell in row, (cell, row)


def test_a_proposal_accepted_on_the_store(ledger: Ledger) -> None:
    listed = run("autonomy", "proposals", "--store", ledger.target)
    assert listed.exit_code == 0
    (row,) = [line for line in listed.stdout.splitlines() if "support-bot" in line]
    assert "1 → 2" in row
    assert "demote-on-drift-or-failures" in row
    said = json.loads(run("autonomy", "proposals", "--store", ledger.target, "--json").stdout)
    assert said == {"proposals": ledger.proposals}

    accepted = run("autonomy", "accept", "support-bot", "--store", ledger.target)
    assert accepted.exit_code == 0, accepted.output
    assert "accepted the proposal for `support-bot`" in accepted.stdout
    assert "autonomy level 2" in accepted.stdout
    assert autonomy_of(ledger.target, "support-bot") == 2
    with open_store(ledger.target, read_only=True) as store:
        change = list(store.entries(kinds={events.AUTONOMY_CHANGED}))[-1].payload_object()
        head = store.head().seq
    assert (change["by"], change["level"]) == ("cli", None)  # the profile's own level again
    assert "no proposals open" in run("autonomy", "proposals", "--store", ledger.target).stdout

    again = run("autonomy", "accept", "support-bot", "--store", ledger.target)
    assert again.exit_code == 1
    assert "no proposal for agent `support-bot` is open" in again.stderr
    with open_store(ledger.target, read_only=True) as store:
        assert store.head().seq == head  # nothing more recorded


def test_a_proposal_declined_on_the_store(ledger: Ledger) -> None:
    with open_store(ledger.target, read_only=True) as store:
        head = store.head().seq
    blank = run("autonomy", "decline", "support-bot", "--reason", "  ", "--store", ledger.target)
    assert blank.exit_code == 2
    unknown = run("autonomy", "decline", "nobody", "--reason", "no", "--store", ledger.target)
    assert unknown.exit_code == 1
    assert "no agent `nobody`" in unknown.stderr
    with open_store(ledger.target, read_only=True) as store:
        assert store.head().seq == head
    why = ("--reason", "after the audit")
    declined = run("autonomy", "decline", "support-bot", *why, "--store", ledger.target)
    assert declined.exit_code == 0, declined.output
    assert "stays at level 1" in declined.stdout
    with open_store(ledger.target, read_only=True) as store:
        (entry,) = store.entries(kinds={events.AUTONOMY_DECLINED})
    payload = entry.payload_object()
    assert (payload["agent"], payload["reason"], payload["by"]) == (
        "support-bot",
        "after the audit",
        "cli",
    )
    assert autonomy_of(ledger.target, "support-bot") == 1
    listed = run("autonomy", "proposals", "--store", ledger.target, "--json")
    assert json.loads(listed.stdout) == {"proposals": []}


# -- through a server ----------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    reviewer: str
    policy_admin: str
    target: str


@pytest.fixture
def server(store_target: str) -> Iterator[Server]:
    """A real `charter serve` on a ledger whose loop ran in the last hours (its clock)."""
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2, minutes=15)
    clock = FakeClock(start, tick=0.01)
    with Charter(EXAMPLE_POLICY, store_target, clock=clock) as setup:
        demoted_with_a_proposal(setup, clock)
        reviewer = setup.create_key("reviewer", label="rev@example.com")[1]
        policy_admin = setup.create_key("policy-admin", label="risk")[1]
    running = serve(store_target, ready="/readyz")
    yield Server(running.url, reviewer, policy_admin, store_target)
    running.stop()


def test_the_figures_through_a_server_are_its_own(server: Server) -> None:
    """The server's figures at its clock, as the ledger folded at that moment gives them."""
    result = run("monitors", "--server", server.url, "--key", server.reviewer, "--json")
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    with open_store(server.target, read_only=True) as store:
        book = fold_ledger(store, load_bundle(EXAMPLE_POLICY).monitors)[0]
    expected = [f.to_json() for f in book.figures(said["at"]) if active(f)]
    assert [g["figures"] for g in said["groups"]] == expected
    agents = {a["agent"]: a for a in said["agents"]}
    assert (agents["support-bot"]["autonomy"], agents["support-bot"]["profile_autonomy"]) == (1, 2)
    assert agents["support-bot"]["proposal"]["level"] == 2
    assert agents["ghost"]["autonomy"] is None  # the server knows no such agent: no error
    # The controller's demotion is told as the store tells it, rule and all.
    on_store = run("monitors", "--store", server.target, "--json")
    stored = {a["agent"]: a for a in json.loads(on_store.stdout)["agents"]}
    assert agents["support-bot"]["demotion"]["rule"] == "demote-on-drift-or-failures"
    assert agents["support-bot"] == stored["support-bot"]
    bot = next(g for g in said["groups"] if g["figures"]["action"] == "crm.note" and
               g["figures"]["agent"] == "support-bot")  # fmt: skip
    assert sum(p["outcomes"] for p in bot["series"]["points"]) == 120

    table = run("monitors", "--server", server.url, "--key", server.reviewer)
    assert table.exit_code == 0, table.output
    assert "support-bot" in table.stdout
    assert "1 ↓" in table.stdout
    assert "demoted by the controller's rule `demote-on-drift-or-failures`" in table.stdout
    alerts = run("alerts", "--server", server.url, "--key", server.reviewer, "--json")
    assert [a["alert"] for a in json.loads(alerts.stdout)["alerts"]] == ["outcomes-failing"]
    refused = run("monitors", "--server", server.url, "--key", "not-a-key")
    assert refused.exit_code == 2
    assert "401" in refused.stderr


def test_a_proposal_accepted_through_a_server_uses_its_roles(server: Server) -> None:
    listed = run("autonomy", "proposals", "--server", server.url, "--key", server.reviewer)
    assert "support-bot" in listed.stdout
    refused = run("autonomy", "accept", "support-bot", "--server", server.url,
                  "--key", server.reviewer)  # fmt: skip
    assert refused.exit_code == 2
    assert "403" in refused.stderr
    accepted = run("autonomy", "accept", "support-bot", "--server", server.url,
                   "--key", server.policy_admin)  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    assert "autonomy level 2" in accepted.stdout
    again = run("autonomy", "accept", "support-bot", "--server", server.url,
                "--key", server.policy_admin)  # fmt: skip
    assert again.exit_code == 1
    assert "no proposal for agent `support-bot` is open" in again.stderr


def test_a_proposal_declined_through_a_server(server: Server) -> None:
    declined = run("autonomy", "decline", "support-bot", "--reason", "after the audit",
                   "--server", server.url, "--key", server.policy_admin)  # fmt: skip
    assert declined.exit_code == 0, declined.output
    said = run("autonomy", "proposals", "--server", server.url, "--key", server.reviewer, "--json")
    assert json.loads(said.stdout) == {"proposals": []}
    with open_store(server.target, read_only=True) as store:
        (entry,) = store.entries(kinds={events.AUTONOMY_DECLINED})
    assert entry.payload_object()["reason"] == "after the audit"
    assert entry.payload_object()["by"].startswith("key:")
