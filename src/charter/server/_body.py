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
| lists or objects nested deeper than `BODY_DEPTH` | `too_deep` | 400 |

`BODY_DEPTH` is the model's `MAX_DEPTH` plus the body's own object, so the reader and
`ActionRequest.from_json` draw the line at the same place: `parse_request` reads a
decision request once here, and the model only checks its fields, without another walk.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from charter.canonical import MAX_SAFE_INTEGER
from charter.model import MAX_DEPTH, check_idempotency_key
from charter.server._errors import ApiError

__all__ = [
    "BODY_DEPTH",
    "DEFAULT_MAX_BODY",
    "DISCARD_LIMIT",
    "parse_json",
    "parse_request",
    "read_body",
    "receive_body",
]

#: The default body limit: 1 MiB.
DEFAULT_MAX_BODY = 1024 * 1024

#: How deeply lists and objects may nest in a body: the body's own object is level 0, its
#: fields' values (a request's `args`, a redemption's `args`) level 1, and below them the
#: model's `MAX_DEPTH` levels.
BODY_DEPTH = MAX_DEPTH + 1


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole body, refusing more than `limit` bytes before and while streaming.

    An oversized body is still read, and thrown away, up to `DISCARD_LIMIT`, so that
    the client can read the 413 (see `receive_body`).

    Raises:
        ApiError: `payload_too_large`, or `malformed_json` for a bad `Content-Length`.
    """
    stream = request.stream()
    try:
        declared = _check_declared(request.headers.get("content-length"), limit)
    except ApiError as exc:
        raise await _refused(exc, _sizes(stream), declared=_declared(request)) from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise await _refused(_too_large(limit), _sizes(stream), seen=size, declared=declared)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """`read_body` straight from the ASGI `receive` channel, for routes without a `Request`.

    A body over the limit is refused, but first read and thrown away up to
    `DISCARD_LIMIT`: a plain blocking client (the standard library's `urllib`) sends
    the whole body before it reads anything, and a server that closes on it mid-upload
    leaves it with "connection reset" instead of the 413. Past that bound the answer
    asks to close the connection, and the client may see the reset after all.

    Args:
        receive: the ASGI receive callable.
        declared: the request's `Content-Length` header, if it has one.
        limit: the largest body accepted, in bytes.

    Raises:
        ApiError: `payload_too_large`, or `malformed_json` for a bad `Content-Length`.
        ClientDisconnect: the client went away before sending the whole body.
    """
    try:
        length = _check_declared(declared, limit)
    except ApiError as exc:
        raise await _refused(exc, _received(receive), declared=_number(declared)) from None
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
            more = message.get("more_body", False)
            rest = _received(receive) if more else _nothing()
            raise await _refused(_too_large(limit), rest, seen=size, declared=length)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


#: How much of an oversized body is read and discarded before the 413 is sent.
DISCARD_LIMIT = 64 * 1024 * 1024


async def _refused(
    error: ApiError, rest: AsyncIterator[int], *, seen: int = 0, declared: int | None
) -> ApiError:
    """`error`, once the rest of the body is read and discarded (up to `DISCARD_LIMIT`).

    A body declared (or found) longer than the bound is not waited for: the answer
    then closes the connection. A malformed `Content-Length` frames nothing to drain.
    """
    if error.code != "payload_too_large" or (declared is not None and declared > DISCARD_LIMIT):
        error.close = True
        return error
    try:
        async for size in rest:
            seen += size
            if seen > DISCARD_LIMIT:
                error.close = True
                break
    except ClientDisconnect:
        pass  # nobody is left to read the answer; sending it is harmless
    return error


async def _sizes(stream: AsyncIterator[bytes]) -> AsyncIterator[int]:
    async for chunk in stream:
        yield len(chunk)


async def _received(receive: Receive) -> AsyncIterator[int]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        yield len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _nothing() -> AsyncIterator[int]:
    return
    yield  # an async generator that yields nothing


def _declared(request: Request) -> int | None:
    return _number(request.headers.get("content-length"))


def _number(declared: str | None) -> int | None:
    return int(declared) if declared is not None and declared.isdigit() else None


def _check_declared(declared: str | None, limit: int) -> int | None:
    """The declared `Content-Length`; refused when it is not a number or over the limit."""
    if declared is None:
        return None
    if not declared.isdigit():
        raise ApiError("malformed_json", "`Content-Length` is not a number", "Content-Length")
    length = int(declared)
    if length > limit:
        raise _too_large(limit)
    return length


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


def _finite_number(literal: str) -> float | int:
    """`_finite`, with a whole number given as an int, as the model keeps it (5.0 is 5)."""
    value = float(literal)
    if math.isinf(value):
        raise _NotFinite(literal)
    if value.is_integer() and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return int(value)
    return value


# Built once: `json.loads` with hooks builds a decoder per call, a quarter of the parse.
_decode = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_constant).decode
# The same decoder, except that it stops at the first number `_check` would refuse: when it
# succeeds, only the depth is left to check, and the text says when that is needed at all.
_decode_finite = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, parse_float=_finite
).decode
# `_decode_finite` for a decision request, with numbers as `ActionRequest` keeps them.
_decode_request = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, parse_float=_finite_number
).decode

# Sixteen digits in a row: the text may hold an integer beyond 2^53-1 (9007199254740991).
_LONG_DIGITS = re.compile(r"\d{16}")


def parse_request(body: bytes, header_key: str | None = None) -> tuple[Any, bool]:
    """Read a decision request's body once, for `ActionRequest.from_json` to check its fields.

    Args:
        body: the request body.
        header_key: the `Idempotency-Key` header, if given; the body's own key, if any,
            must be the same.

    Returns:
        The decoded body, with the header's key as its `idempotency_key`, and whether
        `from_json` may take it as `trusted` (numbers as the model keeps them, nothing it
        would refuse on a walk).

    Raises:
        ApiError: what `parse_json` refuses, or a key in the header and the body that differ.
        RequestInvalid: the header's key is not a key (named `Idempotency-Key`).
    """
    text = _text(body)
    value = _parse(text, _decode_request)
    # Only a text with a long run of digits can hold an integer the model must refuse by
    # name; such a body is walked by the model as any untrusted value is.
    trusted = _LONG_DIGITS.search(text) is None
    if header_key is None:
        return value, trusted
    check_idempotency_key(header_key, "Idempotency-Key")
    if not isinstance(value, dict):
        return value, trusted
    in_body = value.get("idempotency_key")
    if in_body is not None and in_body != header_key:
        raise ApiError(
            "request_invalid",
            "`idempotency_key` in the body differs from the `Idempotency-Key` header; send one",
            "idempotency_key",
        )
    value["idempotency_key"] = header_key  # the body is this call's own: nothing else holds it
    return value, trusted


def parse_json(body: bytes) -> Any:
    """Decode a body as one strict JSON document.

    Raises:
        ApiError: `malformed_json`, `duplicate_key`, `non_finite_number` or `too_deep`.
    """
    return _parse(_text(body), _decode_finite)


def _text(body: bytes) -> str:
    """The body as text, or `malformed_json` when it is empty or not UTF-8."""
    if not body.strip():
        raise ApiError("malformed_json", "the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("malformed_json", "the body is not UTF-8 text") from None
    return text


def _parse(text: str, decode: Any) -> Any:
    """Decode `text` with `decode` (a finite decoder), refusing what `parse_json` refuses."""
    try:
        if text.startswith("\ufeff"):  # what `json.loads` says; the decoder has no check
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        try:
            value = decode(text)
        except (_NotFinite, RecursionError):  # `_finite` is one call deeper than `float`
            checked = False
            value = _decode(text)  # any error it meets first is the one to report
        else:
            # Nesting past the limit takes more than `BODY_DEPTH` + 1 opening brackets.
            checked = text.count("{") + text.count("[") <= BODY_DEPTH + 1
    except _Duplicate as exc:
        raise ApiError(
            "duplicate_key", f"`{exc.key}` appears twice in the same object", exc.key
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            "malformed_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ApiError("too_deep", f"the body nests deeper than {BODY_DEPTH} levels") from None
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
    if depth > BODY_DEPTH:
        raise ApiError("too_deep", f"nesting deeper than {BODY_DEPTH} levels", path or None)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list | float):
                _check(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict | list | float):
                _check(item, f"{path}[{i}]", depth + 1)
