"""`charter halt`, `charter resume` and `charter halts`: the fleet's kill switch, from a shell.

They work on the store itself (`--db PATH` or `--store URL`, `CHARTER_STORE` too), as
`charter keys` does, or through a running server (`--server URL` with an API key, as
`POST/DELETE /v1/halts`, so the server's roles decide who may). A halt is in force on
every server on that store within a second (servers follow the ledger), and it stays
until it is resumed, across restarts. `charter halts` only reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from charter._cli_server import KeyOption, ServerOption, ask_server, one_place
from charter._cli_store import (
    DbOption,
    StoreOption,
    err,
    open_reading,
    open_writing,
    out,
    shown,
    target,
)
from charter.controls import ServiceState
from charter.ledger import events
from charter.model import Halt
from charter.service import format_time, system_clock
from charter.store import LedgerStore

__all__ = ["halt_command", "halts_command", "resume_command"]

AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Halt one agent.", show_default=False)
]
ActionOption = Annotated[
    str | None, typer.Option("--action", help="Halt one action.", show_default=False)
]
RoleOption = Annotated[
    str | None, typer.Option("--role", help="Halt every agent of a role.", show_default=False)
]
AllOption = Annotated[bool, typer.Option("--all", help="Halt everything.")]


def _over_http(
    server: str,
    key: str | None,
    method: str,
    params: dict[str, str] | None = None,
    body: dict[str, object] | None = None,
) -> list[dict[str, object]]:
    """Call `/v1/halts` on a server; the halts in force it answers. Exits on a refusal."""
    said = ask_server(server, key, method, "/v1/halts", params=params, body=body)
    return list(said.get("halts", []))


def _scope(
    agent: str | None, action: str | None, role: str | None, everything: bool
) -> tuple[str, str | None]:
    """The (scope, target) the options name; exit 2 unless exactly one is given."""
    chosen = [
        (s, t)
        for s, t, on in (
            ("agent", agent, agent is not None),
            ("action", action, action is not None),
            ("role", role, role is not None),
            ("all", None, everything),
        )
        if on
    ]
    if len(chosen) != 1:
        err.print(
            "error: name what to halt: one of --agent ID, --action NAME, --role ROLE or --all"
        )
        raise typer.Exit(2)
    scope, name = chosen[0]
    if name is not None and not name.strip():
        err.print(f"error: --{scope} needs a name")
        raise typer.Exit(2)
    return scope, name


def _named(scope: str, name: str | None) -> str:
    return "everything" if name is None else f"{scope} `{name}`"


def _in_force(store: LedgerStore) -> tuple[Halt, ...]:
    """The halts the ledger leaves in force."""
    state = ServiceState.fold(store.entries(kinds={events.HALT, events.RESUME}))
    return tuple(state.halts.values())


def halt_command(
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded, and told to agents.")],
    agent: AgentOption = None,
    action: ActionOption = None,
    role: RoleOption = None,
    everything: AllOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Halt an agent, an action, a role or everything: new decisions it covers are denied."""
    scope, name = _scope(agent, action, role, everything)
    if not reason.strip() or len(reason) > 2000:
        err.print("error: --reason must say why (1 to 2,000 characters)")
        raise typer.Exit(2)
    one_place(server, db, store_url)
    if server is not None:
        body: dict[str, object] = {"scope": scope, "reason": reason}
        if name is not None:
            body["target"] = name
        _over_http(server, key, "POST", body=body)
        out.print(
            f"halted {_named(scope, name)} through {server}: new decisions it covers are denied"
        )
        return
    where = target(db, store_url)
    store = open_writing(where)
    try:
        store.append([events.halt(format_time(system_clock()), scope, name, reason, "cli")])
    finally:
        store.close()
    out.print(
        f"halted {_named(scope, name)} in {shown(where)}: new decisions it covers are denied"
        " (every server on this store within a second)"
    )


def resume_command(
    agent: AgentOption = None,
    action: ActionOption = None,
    role: RoleOption = None,
    everything: AllOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Lift a halt (exit 1 if no such halt is in force)."""
    scope, name = _scope(agent, action, role, everything)
    one_place(server, db, store_url)
    if server is not None:
        params = {"scope": scope} if name is None else {"scope": scope, "target": name}
        _over_http(server, key, "DELETE", params=params)
        out.print(f"resumed {_named(scope, name)} through {server}")
        return
    where = target(db, store_url)
    store = open_writing(where)
    try:
        if not any(h.scope == scope and h.target == name for h in _in_force(store)):
            err.print(f"error: no halt of {_named(scope, name)} is in force in {shown(where)}")
            raise typer.Exit(1)
        store.append([events.resume(format_time(system_clock()), scope, name, "cli")])
    finally:
        store.close()
    out.print(f"resumed {_named(scope, name)} in {shown(where)}")


def halts_command(
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the halts in force (reads only)."""
    one_place(server, db, store_url)
    if server is not None:
        halts = tuple(
            Halt(
                str(h["scope"]),
                None if h.get("target") is None else str(h["target"]),
                str(h.get("reason", "")),
            )
            for h in _over_http(server, key, "GET")
        )
        place = server
    else:
        where: str | Path = target(db, store_url)
        store = open_reading(where)
        try:
            halts = _in_force(store)
        finally:
            store.close()
        place = shown(where)
    if not halts:
        out.print(f"no halts in force in {place}")
        return
    table = Table("scope", "target", "reason")
    for halt in halts:
        table.add_row(halt.scope, halt.target or "", halt.reason)
    out.print(table)
