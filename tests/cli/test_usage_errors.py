"""Using a command wrongly gets one line saying what was wrong, and exit 2.

A policy folder that does not exist reads the same from every command that takes one;
`charter serve` on an address it cannot bind says so before it announces anything, and
opens (and so creates) nothing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charter.cli import app
from charter.examples import EXAMPLE_POLICY

SCRIPT = Path(sys.executable).with_name("charter")


def policy_commands(folder: str, tmp_path: Path) -> dict[str, list[str]]:
    request = tmp_path / "request.json"
    request.write_text('{"agent": "a", "action": "b.c"}', encoding="utf-8")
    return {
        "check": ["check", folder],
        "test": ["test", folder],
        "decide": ["decide", "--policy", folder, "--request", str(request)],
        "serve": ["serve", "--policy", folder, "--db", str(tmp_path / "c.db")],
    }


@pytest.mark.parametrize("command", ["check", "test", "decide", "serve"])
def test_a_missing_policy_folder_reads_the_same_everywhere(tmp_path: Path, command: str) -> None:
    """`no-such-folder` is not a folder: one line, exit 2, and no ledger is created."""
    missing = str(tmp_path / "no-such-folder")
    result = CliRunner().invoke(app, policy_commands(missing, tmp_path)[command])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: `{missing}` is not a folder; a policy bundle is a folder of YAML files"
    ]
    assert not (tmp_path / "c.db").exists()


def test_serve_on_a_port_in_use_fails_before_announcing(tmp_path: Path) -> None:
    """The address is bound first: a taken port is one line and exit 2, nothing announced."""
    db = tmp_path / "c.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [str(SCRIPT), "serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db)]
        done = subprocess.run(
            [*command, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert done.stdout == ""
    assert not db.exists()
