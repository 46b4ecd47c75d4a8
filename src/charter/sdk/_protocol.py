"""The HTTP API on the client side, without I/O: what to send and how to read the answer.

Each function returns an `Exchange`: the request to send and how to read its answer. The
sync and async clients differ only in how they send it, so an endpoint's details (paths,
bodies, which statuses mean what) are written once. Error answers map back to the same
errors the embedded service raises, by their stable `code`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from charter.errors import (
    CharterError,
    Conflict,
    GrantRefused,
    IdempotencyConflict,
    NotFound,
    RequestInvalid,
)
from charter.sdk._errors import CharterUnavailable, PendingLimitReached
from charter.sdk._flow import Decide, Redeem, Report, Request
from charter.sdk._types import DecisionResult, DecisionStatus, Grant

__all__ = [
    "LONG_POLL_MAX",
    "Exchange",
    "decide_exchange",
    "error_from_answer",
    "exchange_for",
    "outcome_exchange",
    "redeem_exchange",
    "status_exchange",
]

T = TypeVar("T")

#: The longest one long poll is held, in seconds (the server takes up to 60). A longer
#: wait is several polls: well under the idle timeouts of common proxies and load
#: balancers, and each poll re-checks the key, so a revoked key stops waiting soon.
LONG_POLL_MAX = 30.0

_GRANT_CODES = frozenset(
    {"grant_unknown", "grant_used", "grant_expired", "args_mismatch", "halted"}
)
_BY_CODE: Mapping[str, Callable[[str], CharterError]] = {
    "idempotency_conflict": IdempotencyConflict,
    "not_found": NotFound,
    "conflict": Conflict,
}


@dataclass(frozen=True, slots=True)
class Exchange(Generic[T]):
    """One request to the API and how to read its answer.

    Attributes:
        method: the HTTP method.
        path: the path below the client's base URL.
        body: the JSON body, already encoded, or None.
        headers: headers beyond the client's own (authorization, content type).
        read: turns (status, body bytes) into the result, or raises the mapped error.
        hold: seconds the server may hold the answer (a long poll); the client waits
            that much longer than its timeout for it.
    """

    method: str
    path: str
    body: bytes | None
    read: Callable[[int, bytes], T]
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: float = 0.0


#: The paths every governed action takes (fixed strings: a client may build their URLs once).
DECISIONS_PATH = "/v1/decisions"
REDEEM_PATH = "/v1/grants/redeem"
OUTCOMES_PATH = "/v1/outcomes"
HOT_PATHS = (DECISIONS_PATH, REDEEM_PATH, OUTCOMES_PATH)


def _encode(value: Mapping[str, Any]) -> bytes:
    """Strict JSON: what cannot be sent faithfully is refused before anything is sent."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise RequestInvalid("args", f"cannot be sent as JSON: {exc}") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _decode(status: int, content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        raise CharterUnavailable(
            f"charter answered {status} with a body that is not JSON", status=status
        ) from None


def error_from_answer(status: int, content: bytes) -> CharterError:
    """The error an unsuccessful answer stands for, chosen by its stable code.

    A 429 `too_many_pending` is `PendingLimitReached`: a recorded refusal, not to be
    retried. Other 5xx and 429 answers mean Charter cannot answer now
    (`CharterUnavailable`), whatever the body; one whose error says `verdict: deny`
    (503 `store_unavailable` to a decision) is `denied` as well.
    """
    try:
        document = json.loads(content)
        error = document["error"]
        code, message, where = str(error["code"]), str(error["message"]), error.get("field")
    except (ValueError, TypeError, KeyError):
        document, error = None, None
        code, message, where = "", f"charter answered http {status}", None
    if status == 429 and code == "too_many_pending":
        named = error.get("decision_id") if isinstance(error, dict) else None
        if named is None and isinstance(document, dict):
            named = document.get("decision_id")
        return PendingLimitReached(None, message, decision_id=_text(named))
    if status >= 500 or status == 429:
        # A decision asked for while Charter's store is away is answered 503 with
        # `verdict: deny`: Charter's own answer, which failing open must not override.
        denied = isinstance(error, dict) and error.get("verdict") == "deny"
        return CharterUnavailable(
            f"charter answered {status}{f' ({code})' if code else ''}: {message}",
            status=status,
            denied=denied,
        )
    if code in _GRANT_CODES:
        return GrantRefused(code, message)
    if code in _BY_CODE:
        return _BY_CODE[code](message)
    if code == "request_invalid":
        where = str(where or "")
        return RequestInvalid(where, message.removeprefix(f"`{where}`: ") if where else message)
    return CharterError(message, code=code or f"http_{status}")


def _expect(status: int, content: bytes, *ok: int) -> Any:
    if status not in ok:
        raise error_from_answer(status, content)
    return _decode(status, content)


def decide_exchange(
    agent: str,
    action: str,
    args: Mapping[str, Any],
    context: Mapping[str, Any],
    idempotency_key: str | None,
) -> Exchange[DecisionResult]:
    """`POST /v1/decisions`: decide one request (the key travels as `Idempotency-Key`)."""
    body = _encode({"agent": agent, "action": action, "args": args, "context": context})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
    return Exchange(
        "POST",
        DECISIONS_PATH,
        body,
        lambda status, content: DecisionResult.from_json(_expect(status, content, 200, 201)),
        headers,
    )


def redeem_exchange(grant: Grant, args: Mapping[str, Any]) -> Exchange[None]:
    """`POST /v1/grants/redeem`: spend the grant on exactly these arguments."""
    body = _encode({"grant_id": grant.id, "token": grant.token, "args": args})

    def read(status: int, content: bytes) -> None:
        _expect(status, content, 200, 201)

    return Exchange("POST", REDEEM_PATH, body, read)


def outcome_exchange(
    decision_id: str,
    *,
    success: bool,
    error: str | None,
    duration_ms: float | None,
    result_digest: str | None,
) -> Exchange[None]:
    """`POST /v1/outcomes`: record how the action went."""
    body = _encode(
        {
            "decision_id": decision_id,
            "success": success,
            "error": error,
            "duration_ms": duration_ms,
            "result_digest": result_digest,
        }
    )

    def read(status: int, content: bytes) -> None:
        _expect(status, content, 200, 201, 204)

    return Exchange("POST", OUTCOMES_PATH, body, read)


def status_exchange(decision_id: str, wait: float = 0.0) -> Exchange[DecisionStatus | None]:
    """`GET /v1/decisions/{id}`: the decision and its state; None when there is none.

    With `wait`, a long poll: the server answers as soon as the decision's approval
    settles, or after `wait` seconds (at most `LONG_POLL_MAX` per request).
    """

    def read(status: int, content: bytes) -> DecisionStatus | None:
        if status == 404:
            return None
        return DecisionStatus.from_json(_expect(status, content, 200))

    path = f"/v1/decisions/{quote(decision_id, safe='')}"
    hold = round(min(max(wait, 0.0), LONG_POLL_MAX), 3)
    if hold > 0:
        path += f"?wait={hold:g}"
    return Exchange("GET", path, None, read, hold=hold)


def exchange_for(request: Request) -> Exchange[Any]:
    """The exchange that asks the API what a client's `request` asks."""
    if isinstance(request, Decide):
        return decide_exchange(
            request.agent, request.action, request.args, request.context, request.idempotency_key
        )
    if isinstance(request, Redeem):
        return redeem_exchange(request.grant, request.args)
    if isinstance(request, Report):
        return outcome_exchange(
            request.decision_id,
            success=request.success,
            error=request.error,
            duration_ms=request.duration_ms,
            result_digest=request.result_digest,
        )
    return status_exchange(request.decision_id, request.hold)
