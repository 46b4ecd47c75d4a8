"""Commands that talk to a running server: `--server URL` with `--key`, and one call.

`charter halt`, `charter monitors`, `charter autonomy` and the others work either on a
store or through a server's API, where the server's roles decide who may do what. This
module is the server side of that choice, written once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from charter._cli_store import err

__all__ = ["KeyOption", "ServerOption", "ask_server", "one_place"]

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Through a running server instead of the store: its URL (http://host:8470).",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="CHARTER_API_KEY",
        help="The API key for --server; the server's roles decide what it may do.",
        show_default=False,
    ),
]

#: Seconds to wait for a server's answer.
TIMEOUT = 10.0


def one_place(server: str | None, db: Path | None, store: str | None) -> None:
    """Exit 2 when both a server and a store are named."""
    if server is not None and (db is not None or store is not None):
        err.print("error: give --server or a store (--db/--store), not both")
        raise typer.Exit(2)


def ask_server(
    server: str,
    key: str | None,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Call `path` on a server and answer its JSON object; exit on a refusal.

    Not found (404) is exit 1; anything else refused, or a server out of reach, is exit
    2 with the server's own words.
    """
    import httpx2  # noqa: PLC0415 - only commands that talk to a server pay for it

    if not key:
        err.print("error: --server needs an API key: --key KEY or CHARTER_API_KEY")
        raise typer.Exit(2)
    url = server.rstrip("/") + path
    try:
        answer = httpx2.request(
            method,
            url,
            params={k: v for k, v in (params or {}).items() if v is not None},
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=TIMEOUT,
        )
    except httpx2.HTTPError as exc:
        err.print(f"error: cannot reach {server}: {exc}", markup=False)
        raise typer.Exit(2) from None
    try:
        said = answer.json()
    except ValueError:
        said = {}
    if not isinstance(said, dict):
        said = {}
    if answer.status_code >= 400:
        problem = said.get("error", {})
        message = problem.get("message") if isinstance(problem, dict) else None
        err.print(
            f"error: {server} answered {answer.status_code}: {message or answer.reason_phrase}",
            markup=False,
        )
        raise typer.Exit(1 if answer.status_code == 404 else 2)
    return said
