"""`charter autonomy proposals|accept|decline`: answering the autonomy controller.

The controller demotes an agent itself when its rules say the evidence turned; it only
proposes giving the level back, and a person answers here (or in the UI). On a store the
answer is written through the service, under the policy the ledger deployed last, by
`cli`; over `--server` it is `POST /v1/autonomy/proposals/{agent}/accept|decline`, with
the key's role deciding who may.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from charter._cli_monitor_sources import (
    agent_over_http,
    deployed_bundle,
    ledger_state,
    open_proposals,
)
from charter._cli_monitor_view import print_proposals
from charter._cli_server import KeyOption, ServerOption, ask_server, one_place
from charter._cli_store import (
    DbOption,
    StoreOption,
    err,
    open_writing,
    out,
    shown,
    target,
)
from charter.errors import NotFound
from charter.service import Charter, Monitors
from charter.store import LedgerStore

__all__ = ["autonomy_accept", "autonomy_app", "autonomy_decline", "autonomy_proposals"]

autonomy_app = typer.Typer(
    help="The autonomy controller's proposals to give demoted agents their level back.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AgentArgument = Annotated[str, typer.Argument(help="The agent whose proposal it is.")]


@autonomy_app.command("proposals")
def autonomy_proposals(
    as_json: JsonOption = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """List the controller's open proposals to give agents their level back (reads only)."""
    proposals, place = open_proposals(server, key, db, store_url)
    print_proposals(proposals, place, as_json=as_json)


def _service(where: str | Path, agent: str) -> Charter:
    """The service on the store, under the policy the ledger deployed last.

    Exits 2 if the ledger never deployed one, 1 if no such agent is defined.
    """
    place = shown(where)
    store: LedgerStore = open_writing(where)
    try:
        state = ledger_state(store, store.head().seq)
        bundle = deployed_bundle(store, state, place)
        if bundle is None:
            err.print(f"error: no policy was ever deployed in {place}", markup=False)
            raise typer.Exit(2)
        if state.profile(agent, bundle.agents) is None:
            err.print(
                f"error: no agent `{agent}` in the policy or the registry of {place}",
                markup=False,
            )
            raise typer.Exit(1)
        return Charter(bundle, store)
    except BaseException:
        store.close()  # the service did not take it over
        raise


def _answer_on_store(
    where: str | Path, agent: str, answer: Callable[[Monitors], object]
) -> int | None:
    """Answer `agent`'s proposal on the store; the level in force after. Exit 1 if none is open."""
    with _service(where, agent) as charter:
        try:
            answer(charter.monitors)
        except NotFound as exc:
            err.print(f"error: {exc.message} in {shown(where)}", markup=False)
            raise typer.Exit(1) from None
        return charter.autonomy(agent)


def _answer_over_http(
    server: str, key: str | None, agent: str, verb: str, body: dict[str, Any] | None = None
) -> None:
    path = f"/v1/autonomy/proposals/{quote(agent, safe='')}/{verb}"
    ask_server(server, key, "POST", path, body=body)


@autonomy_app.command("accept")
def autonomy_accept(
    agent: AgentArgument,
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Give a demoted agent the level the controller proposes (exit 1 if none is open)."""
    one_place(server, db, store_url)
    if server is not None:
        _answer_over_http(server, key, agent, "accept")
        seen = agent_over_http(server, key, agent)
        level = None if seen is None else seen.get("autonomy_in_force")
        out.print(
            f"accepted the proposal for `{agent}` through {server}: autonomy level {level}",
            markup=False,
        )
        return
    where = target(db, store_url)
    level = _answer_on_store(where, agent, lambda monitors: monitors.accept(agent, by="cli"))
    out.print(
        f"accepted the proposal for `{agent}` in {shown(where)}: autonomy level {level}",
        markup=False,
    )


@autonomy_app.command("decline")
def autonomy_decline(
    agent: AgentArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded with the decline.")],
    db: DbOption = None,
    store_url: StoreOption = None,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Keep a demoted agent where it is; the controller may propose again after more work."""
    if not reason.strip() or len(reason) > 2000:
        err.print("error: --reason must say why (1 to 2,000 characters)")
        raise typer.Exit(2)
    one_place(server, db, store_url)
    if server is not None:
        _answer_over_http(server, key, agent, "decline", {"reason": reason})
        out.print(f"declined the proposal for `{agent}` through {server}", markup=False)
        return
    where = target(db, store_url)
    level = _answer_on_store(
        where, agent, lambda monitors: monitors.decline(agent, by="cli", reason=reason)
    )
    out.print(
        f"declined the proposal for `{agent}` in {shown(where)}: it stays at level {level}",
        markup=False,
    )
