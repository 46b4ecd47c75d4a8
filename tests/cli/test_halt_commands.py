"""`charter halt`, `charter resume` and `charter halts` on a store, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from _serve import free_port, serve
from _traffic import NOTE
from charter import Charter, Verdict
from charter.cli import app
from charter.examples import EXAMPLE_POLICY


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_a_halt_from_the_command_line_stops_a_running_service(store_target: str) -> None:
    """The service on the store follows the halt, denies, and allows again once resumed."""
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        assert charter.decide(NOTE).verdict is Verdict.ALLOW
        halted = run(
            "halt", "--agent", "support-bot", "--reason", "notes loop", "--store", store_target
        )
        assert halted.exit_code == 0, halted.output
        assert "halted agent `support-bot`" in halted.stdout
        charter.catch_up()
        record = charter.decide(NOTE)
        assert record.verdict is Verdict.DENY
        assert "notes loop" in " ".join(r.message for r in record.decision.reasons)

        listed = run("halts", "--store", store_target)
        assert listed.exit_code == 0
        assert "support-bot" in listed.stdout
        assert "notes loop" in listed.stdout

        resumed = run("resume", "--agent", "support-bot", "--store", store_target)
        assert resumed.exit_code == 0, resumed.output
        charter.catch_up()
        assert charter.decide(NOTE).verdict is Verdict.ALLOW
        assert "no halts in force" in run("halts", "--store", store_target).stdout
        kinds = [e.kind for e in charter.store.entries() if e.kind in ("halt", "resume")]
        assert kinds == ["halt", "resume"]
        assert charter.verify().ok


def test_a_halt_survives_a_restart(store_target: str) -> None:
    with Charter(EXAMPLE_POLICY, store_target):
        pass
    assert run("halt", "--all", "--reason", "incident 7", "--store", store_target).exit_code == 0
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        assert charter.decide(NOTE).verdict is Verdict.DENY


def test_resuming_what_is_not_halted_fails_and_records_nothing(store_target: str) -> None:
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        before = charter.store.head().seq
        result = run("resume", "--action", "crm.note", "--store", store_target)
        assert result.exit_code == 1
        assert "no halt of action `crm.note` is in force" in result.stderr
        assert charter.store.head().seq == before


def test_what_to_halt_is_said_exactly_once(store_target: str) -> None:
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        before = charter.store.head().seq
    for args in (
        ("halt", "--reason", "x"),
        ("halt", "--all", "--agent", "support-bot", "--reason", "x"),
        ("halt", "--all", "--reason", "   "),
        ("resume",),
    ):
        result = run(*args, "--store", store_target)
        assert result.exit_code == 2, (args, result.output)
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        assert charter.store.head().seq == before


def test_a_role_is_halted_from_the_command_line(store_target: str) -> None:
    with Charter(EXAMPLE_POLICY, store_target) as charter:
        result = run(
            "halt", "--role", "support", "--reason", "all support bots", "--store", store_target
        )
        assert result.exit_code == 0, result.output
        assert "halted role `support`" in result.stdout
        charter.catch_up()
        assert charter.decide(NOTE).verdict is Verdict.DENY
        assert run("resume", "--role", "support", "--store", store_target).exit_code == 0
        charter.catch_up()
        assert charter.decide(NOTE).verdict is Verdict.ALLOW


@pytest.fixture
def server(store_target: str) -> Iterator[tuple[str, str, str]]:
    """A real `charter serve` on the store: (its URL, an admin key, a reviewer key)."""
    with Charter(EXAMPLE_POLICY, store_target) as setup:
        admin = setup.create_key("admin", label="ops")[1]
        reviewer = setup.create_key("reviewer", label="rev@example.com")[1]
    running = serve(store_target, ready="/readyz")
    yield running.url, admin, reviewer
    running.stop()


def test_halting_through_a_server_uses_its_roles(server: tuple[str, str, str]) -> None:
    url, admin, reviewer = server
    halted = run("halt", "--all", "--reason", "incident 9", "--server", url, "--key", reviewer)
    assert halted.exit_code == 0, halted.output
    listed = run("halts", "--server", url, "--key", reviewer)
    assert "incident 9" in listed.stdout
    refused = run("resume", "--all", "--server", url, "--key", reviewer)
    assert refused.exit_code == 2
    assert "403" in refused.stderr
    resumed = run("resume", "--all", "--server", url, "--key", admin)
    assert resumed.exit_code == 0, resumed.output
    again = run("resume", "--all", "--server", url, "--key", admin)
    assert again.exit_code == 1
    assert "no halt of everything" in again.stderr
    assert "no halts in force" in run("halts", "--server", url, "--key", admin).stdout


def test_a_server_needs_a_key_and_an_address_that_answers(store_target: str) -> None:
    no_key = run("halts", "--server", "http://127.0.0.1:9")
    assert no_key.exit_code == 2
    assert "API key" in no_key.stderr
    unreachable = run("halts", "--server", f"http://127.0.0.1:{free_port()}", "--key", "k")
    assert unreachable.exit_code == 2
    assert "cannot reach" in unreachable.stderr
    both = run("halts", "--server", "http://127.0.0.1:9", "--store", store_target, "--key", "k")
    assert both.exit_code == 2
