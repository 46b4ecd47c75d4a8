"""Reading request bodies: bounded in size, strict JSON, located errors.

Python's `json` accepts what JSON does not (NaN, Infinity, a key given twice with the
last one silently winning) and recurses without a bound. A control plane must not guess
what a client meant, so a body is refused unless it is one unambiguous JSON document:

| problem | code | status |
| --- | --- | --- |
| longer than the limit (by `Content-Length` or as streamed) | `payload_too_large` | 413 |
| not JSON, not UTF-8, or empty | `malformed_json` | 400 |
| a key twice in one object | `duplicate_key` | 400 |
| `NaN`, `Infinity` or `-Infinity` | `non_finite_number` | 400 |
| nested deeper than `MAX_DEPTH` | `too_deep` | 400 |
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from charter.server._errors import ApiError

__all__ = ["DEFAULT_MAX_BODY", "MAX_DEPTH", "parse_json", "read_body", "receive_body"]

#: The default body limit: 1 MiB.
DEFAULT_MAX_BODY = 1024 * 1024

#: How deeply objects and lists may nest in a body. A request's `args` may nest 32 levels
#: (the model's own limit, which names the field); this bound only stops pathological input.
MAX_DEPTH = 64


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole body, refusing more than `limit` bytes before and while streaming.

    Raises:
        ApiError: `payload_too_large`, or `malformed_json` for a bad `Content-Length`.
    """
    _check_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """`read_body` straight from the ASGI `receive` channel, for routes without a `Request`.

    Args:
        receive: the ASGI receive callable.
        declared: the request's `Content-Length` header, if it has one.
        limit: the largest body accepted, in bytes.

    Raises:
        ApiError: `payload_too_large`, or `malformed_json` for a bad `Content-Length`.
        ClientDisconnect: the client went away before sending the whole body.
    """
    _check_declared(declared, limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the usual case: the body in one message
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _check_declared(declared: str | None, limit: int) -> None:
    """Refuse a body whose `Content-Length` is not a number or is over the limit."""
    if declared is not None:
        if not declared.isdigit():
            raise ApiError("malformed_json", "`Content-Length` is not a number", "Content-Length")
        if int(declared) > limit:
            raise _too_large(limit)


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"the body is larger than the limit of {limit} bytes")


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _constant(literal: str) -> float:
    # Decoded so that the walk below can name the field that holds it, then refused.
    return float(literal)


class _NotFinite(ValueError):
    """A number `_check` would refuse: `_decode` and `_check` then find and name it."""


def _refuse_constant(literal: str) -> float:
    raise _NotFinite(literal)


def _finite(literal: str) -> float:
    # `float` is what the decoder calls by default; a literal such as 1e400 overflows.
    value = float(literal)
    if math.isinf(value):
        raise _NotFinite(literal)
    return value


# Built once: `json.loads` with hooks builds a decoder per call, a quarter of the parse.
_decode = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_constant).decode
# The same decoder, except that it stops at the first number `_check` would refuse: when it
# succeeds, only the depth is left to check, and the text says when that is needed at all.
_decode_finite = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, parse_float=_finite
).decode


def parse_json(body: bytes) -> Any:
    """Decode a body as one strict JSON document.

    Raises:
        ApiError: `malformed_json`, `duplicate_key`, `non_finite_number` or `too_deep`.
    """
    if not body.strip():
        raise ApiError("malformed_json", "the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("malformed_json", "the body is not UTF-8 text") from None
    try:
        if text.startswith("\ufeff"):  # what `json.loads` says; the decoder has no check
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        try:
            value = _decode_finite(text)
        except (_NotFinite, RecursionError):  # `_finite` is one call deeper than `float`
            checked = False
            value = _decode(text)  # any error it meets first is the one to report
        else:
            # Nesting past the limit takes more than `MAX_DEPTH` + 1 opening brackets.
            checked = text.count("{") + text.count("[") <= MAX_DEPTH + 1
    except _Duplicate as exc:
        raise ApiError(
            "duplicate_key", f"`{exc.key}` appears twice in the same object", exc.key
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            "malformed_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ApiError("too_deep", f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise ApiError("malformed_json", f"invalid JSON: {exc}") from None
    if not checked:
        _check(value, "", 0)
    if _SURROGATE_ESCAPE.search(text) is not None:  # rare: only then is the value walked
        _refuse_lone_surrogates(value, "")
    return value


# A `\uD800`-`\uDFFF` escape: JSON syntax allows it, but alone it is not Unicode text, and
# nothing downstream (hashing, the ledger) can encode it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_lone_surrogates(value: Any, path: str) -> None:
    """Refuse a string holding a lone surrogate (a pair decodes to one character)."""
    if isinstance(value, str):
        if _SURROGATE.search(value) is not None:
            raise ApiError(
                "malformed_json",
                f"`{path or '$'}` holds a lone UTF-16 surrogate escape, which is not Unicode text",
                path or None,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            _refuse_lone_surrogates(key, child)
            _refuse_lone_surrogates(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{path}[{index}]")


def _check(value: Any, path: str, depth: int) -> None:
    """Refuse non-finite numbers and deep nesting, naming where they are."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ApiError(
                "non_finite_number",
                "numbers must be finite; NaN and Infinity are not JSON",
                path or None,
            )
        return
    if depth > MAX_DEPTH:
        raise ApiError("too_deep", f"nesting deeper than {MAX_DEPTH} levels", path or None)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list | float):
                _check(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict | list | float):
                _check(item, f"{path}[{i}]", depth + 1)
