"""Errors on the wire: one table from stable codes to HTTP statuses, one body shape.

Every error the API answers is `{"error": {"code": ..., "message": ..., "field": ...}}`.
`code` is stable across releases (clients branch on it), `message` is for people, and
`field` names the offending value (a dotted path into the body, a query parameter or a
header) when one is to blame, else null. The gateway's `CharterError` codes pass through
unchanged; the HTTP layer adds only the codes of its own checks (body, auth, routing).

A store that is away is 503 `store_unavailable` with `Retry-After`, on every route; a
decision asked for then is also a `deny`, and its error says so (`store_unavailable_deny`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from charter.errors import CharterError, LedgerError, StoreUnavailable, TooManyPending
from charter.store._opening import unavailable

__all__ = [
    "RETRY_AFTER",
    "STATUS",
    "ApiError",
    "error_body",
    "error_response",
    "from_charter_error",
    "from_outage",
    "store_unavailable_deny",
]

_log = logging.getLogger("charter.server")

#: Every error code the API answers, and its HTTP status. Codes not listed here that a
#: `CharterError` carries are answered by kind (see `from_charter_error`).
STATUS: Mapping[str, int] = {
    # the body is not a JSON document Charter accepts
    "malformed_json": 400,
    "duplicate_key": 400,
    "non_finite_number": 400,
    "too_deep": 400,
    # who is asking
    "unauthenticated": 401,
    "forbidden": 403,
    "agent_mismatch": 403,
    "not_in_group": 403,
    "role_cannot_review": 403,
    # grants (the gateway records each refusal in the ledger)
    "grant_unknown": 403,
    "grant_expired": 403,
    "args_mismatch": 403,
    "grant_used": 409,
    "halted": 409,
    # what is asked for
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "not_pending": 409,
    "already_voted": 409,
    "payload_too_large": 413,
    "request_invalid": 422,
    "idempotency_conflict": 422,
    "too_many_pending": 429,
    # the server
    "internal": 500,
    "not_ready": 503,
    "ledger_error": 503,
    "store_error": 503,
    "store_unavailable": 503,
}

#: Seconds a client should wait before asking again, by code (the `Retry-After` header).
#: An outage ends by itself (the pool reconnects), so a second is enough to try again.
RETRY_AFTER: Mapping[str, int] = {"store_unavailable": 1}


class ApiError(Exception):
    """An error answered to the client: a stable code, a message and maybe a field.

    Args:
        code: a key of `STATUS`.
        message: what was wrong, lowercase, user input in backticks.
        field: the offending value's location, when one is to blame.
        status: the HTTP status; from `STATUS` when not given.
    """

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        *,
        status: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status if status is not None else STATUS.get(code, 500)
        self.extra = dict(extra or {})
        #: Whether the answer closes the connection (the request was not read to its end).
        self.close = False


def from_charter_error(exc: CharterError) -> ApiError:
    """Translate a gateway error, keeping its code, message and field.

    A code missing from `STATUS` is answered 503 when it comes from the ledger (the store
    is failing, not the client) and 422 otherwise (Charter refused the request on purpose).
    """
    field = getattr(exc, "field", None)
    status = STATUS.get(exc.code)
    if status is None:
        fallback = "ledger_error" if isinstance(exc, LedgerError) else "request_invalid"
        _log.warning("error code %r has no HTTP status; answering as %s", exc.code, fallback)
        status = STATUS[fallback]
    extra = {"decision_id": exc.decision_id} if isinstance(exc, TooManyPending) else None
    return ApiError(exc.code, exc.message, field or None, status=status, extra=extra)


def store_unavailable_deny(exc: StoreUnavailable) -> ApiError:
    """A decision asked for while the store is away: 503, and a `deny`, unrecorded.

    The error carries `verdict: deny` with the reason `store unavailable`, in the
    shape of a decision's reasons, so a client that reads only the verdict still does
    not act; it carries no id, seq or grant because nothing was recorded.
    """
    reasons = [{"code": exc.code, "message": exc.reason}]
    return ApiError(exc.code, exc.message, extra={"verdict": exc.verdict, "reasons": reasons})


def from_outage(exc: BaseException) -> ApiError | None:
    """The 503 for an error that is not Charter's own but means the store is away, or None.

    Catches what reaches the HTTP layer from a store path that names no outage itself
    (a driver error raised as it came), so that it is answered 503, never 500.
    """
    found = unavailable(exc)
    return None if found is None else from_charter_error(found)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of an error answer (`extra` keys go beside the code)."""
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def error_response(error: ApiError) -> JSONResponse:
    """The HTTP answer for `error`; a 401 says which scheme to authenticate with."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    retry = RETRY_AFTER.get(error.code)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if error.close:
        headers["Connection"] = "close"
    return JSONResponse(
        error_body(error.code, error.message, error.field, **error.extra),
        status_code=error.status,
        headers=headers,
    )
