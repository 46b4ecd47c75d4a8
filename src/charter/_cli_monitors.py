"""`charter monitors` and `charter alerts`: the monitors and the alerts from a shell.

They read the store itself (`--db PATH` or `--store URL`, `CHARTER_STORE` too) or ask a
running server (`--server URL` with an API key, as `GET /v1/monitors` and `/v1/alerts`
do, so the server's roles decide who may); `_cli_monitor_sources` says how each reads,
`_cli_monitor_view` how it prints. `charter autonomy` is `_cli_autonomy`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charter._cli_monitor_sources import LEVELS, firing_alerts, from_server, from_store
from charter._cli_monitor_view import SMALL_SAMPLE, print_alerts, print_monitors, sparkline
from charter._cli_server import KeyOption, ServerOption, one_place
from charter._cli_store import DbOption, StoreOption, err, target

__all__ = ["SMALL_SAMPLE", "alerts_command", "monitors_command", "sparkline"]

AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Only this agent's figures.", show_default=False)
]
ActionOption = Annotated[
    str | None, typer.Option("--action", help="Only this action's figures.", show_default=False)
]
LevelOption = Annotated[
    str,
    typer.Option(
        "--level",
        help="One row per model (agent, action, model id and version), action (agent and"
        " action), agent, or the fleet.",
    ),
]
WindowOption = Annotated[
    int | None,
    typer.Option(
        "--window",
        min=60,
        max=31 * 86400,
        help="Seconds the figures (and the trend) cover; the policy's window by default.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def monitors_command(
    agent: AgentOption = None,
    action: ActionOption = None,
    level: LevelOption = "action",
    window: WindowOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Show the monitors' figures per agent and action, and their trend (reads only).

    On a store the figures are those at the ledger's last entry. Rates on fewer than 20
    are dimmed; `—` is a figure of an empty sample.
    """
    if level not in LEVELS:
        err.print(f"error: --level is one of {', '.join(LEVELS)}, not `{level}`", markup=False)
        raise typer.Exit(2)
    one_place(server, db, store_url)
    if server is not None:
        gathered = from_server(server, key, agent, action, level, window)
    else:
        gathered = from_store(target(db, store_url), agent, action, level, window)
    print_monitors(gathered, level, agent, action, as_json=as_json)


def alerts_command(
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the alerts firing, each with its figure, threshold and runbook (reads only)."""
    firing, place = firing_alerts(server, key, db, store_url)
    print_alerts(firing, place, as_json=as_json)
