"""The reviewer UI: an inbox, the approval card, and the decision explorer, at `/ui/`.

`charter serve` mounts it beside the API (`mount_ui`); `create_ui(charter)` returns it as
an ASGI app to mount elsewhere. Reviewers sign in with a reviewer or admin key.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse

from charter.server.ui._app import CSP, create_ui
from charter.service import Charter

__all__ = ["CSP", "create_ui", "mount_ui"]


async def _to_ui(_request: Request) -> RedirectResponse:
    return RedirectResponse("/ui/", 307)


def mount_ui(app: Starlette, charter: Charter) -> None:
    """Serve the UI at `/ui/` of `app`; `/` and `/ui` lead there. Not in the API document."""
    app.mount("/ui", create_ui(charter))
    app.add_route("/", _to_ui, include_in_schema=False)
    app.add_route("/ui", _to_ui, include_in_schema=False)
