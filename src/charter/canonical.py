"""RFC 8785 canonical JSON: the exact bytes Charter hashes and signs.

Every hash in Charter (ledger entries, policy versions, grant bindings) is taken over
`canonical_bytes`, so two processes that hold equal JSON values always agree on the hash.
The output is byte-for-byte the JSON Canonicalization Scheme (RFC 8785): object members
sorted by the UTF-16 code units of their names, no insignificant whitespace, strings with
only the mandatory escapes, and numbers written the way ECMAScript writes them.

Two paths produce the same bytes. The fast path checks in one cheap walk that the value
holds nothing where Python's own C JSON encoder and RFC 8785 could disagree (floats that
Python would write as `1.0` or `1e+16`, integers outside the exact range of a double,
non-string keys, unusual types), then lets that encoder do the work: about four times
faster than a pure-Python canonicaliser on a typical decision. Anything else takes the
slow path: a validating walk that names the path of a bad value, then the reference
`rfc8785` package.

Integers beyond the range a double holds exactly (`|n| > 2**53 - 1`) are refused rather
than rounded: JCS numbers are IEEE 754 doubles, so any other JCS implementation would
silently change such a number. Send large identifiers and amounts as strings.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeAlias

import rfc8785

__all__ = [
    "MAX_SAFE_INTEGER",
    "CanonicalError",
    "JSONValue",
    "canonical_bytes",
    "content_hash",
    "is_canonical",
]

JSONValue: TypeAlias = (
    "Mapping[str, JSONValue] | Sequence[JSONValue] | str | int | float | bool | None"
)
"""A JSON value as Python holds it: dicts with string keys, lists (or tuples) and scalars."""

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer an IEEE 754 double holds exactly; larger magnitudes are refused."""

# Containers the fast walk visits before it gives up and hands over to the slow path. A
# reference cycle would otherwise keep the walk going for ever; the slow path reports it.
_FAST_WALK_BUDGET = 100_000

# Keys containing these characters may sort differently by UTF-16 code units than by code
# points, so their presence sends the value down the slow path.
_UTF16_ORDER_RISK = re.compile("[\ue000-\U0010ffff]")


def _make_encoder() -> Callable[[object], str]:
    """Build the C encoder configured for RFC 8785's layout, skipping `JSONEncoder`'s wrapper."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always ships the C accelerator
        return json.JSONEncoder(
            ensure_ascii=False,
            check_circular=False,
            allow_nan=False,
            sort_keys=True,
            separators=(",", ":"),
        ).encode
    # Positional: markers, default, string encoder, indent, key and item separators,
    # sort_keys, skipkeys, allow_nan. `default` is never called: `_is_plain` vouched.
    iterencode = make(
        None, None, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(value: object) -> str:
        return "".join(iterencode(value, 0))

    return encode


_encode = _make_encoder()


class CanonicalError(ValueError):
    """A value cannot be written as canonical JSON.

    Attributes:
        path: where the value sits, as a JSONPath such as `$.request.args[0]`.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot encode the value at `{path}` as canonical JSON: {reason}")
        self.path = path
        self.reason = reason


def canonical_bytes(obj: JSONValue) -> bytes:
    """Encode a JSON value as RFC 8785 canonical JSON.

    Args:
        obj: the value: dicts with `str` keys, lists or tuples, `str`, `int`, `float`,
            `bool` or `None`.

    Returns:
        The canonical UTF-8 bytes.

    Raises:
        CanonicalError: the value holds NaN or an infinity, an integer outside
            `±(2**53 - 1)`, a non-string key, a lone surrogate, a reference cycle or a
            type JSON does not have.
    """
    if _is_plain(obj):
        try:
            text = _encode(obj)
        except (ValueError, RecursionError):
            pass  # the slow path explains the problem with its path
        else:
            if text.isascii():
                return text.encode("ascii")
            if _UTF16_ORDER_RISK.search(text) is None:
                try:
                    return text.encode("utf-8")
                except UnicodeEncodeError:
                    pass  # a lone surrogate: the slow path names where
    return _slow_canonical_bytes(obj)


def content_hash(obj: JSONValue) -> str:
    """Return `sha256:<hex>` of the canonical bytes of a JSON value.

    This is how Charter names content by value: a policy version, the arguments a grant is
    bound to. Equal values give equal hashes whatever their key order or number spelling.

    Raises:
        CanonicalError: the value is not canonicalisable (see `canonical_bytes`).
    """
    return "sha256:" + hashlib.sha256(canonical_bytes(obj)).hexdigest()


class _NotFastFloatError(Exception):
    """Raised by the decoder hook for a float the fast check cannot vouch for."""


def _parse_float(token: str) -> float:
    value = float(token)
    if not _is_fast_float(value):
        raise _NotFastFloatError
    return value


def _reject_constant(token: str) -> float:
    raise ValueError(f"`{token}` is not a JSON number")


def _parse_fast_int(token: str) -> int:
    value = int(token)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _NotFastFloatError
    return value


def _parse_int_as_number(token: str) -> int | float:
    # As in JavaScript, an integer token beyond the exact range denotes the nearest double.
    value = int(token)
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else float(token)


_fast_decode = json.JSONDecoder(
    parse_float=_parse_float, parse_constant=_reject_constant, parse_int=_parse_fast_int
).decode
_strict_decode = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_parse_int_as_number
).decode


def is_canonical(data: bytes | str) -> bool:
    """Tell whether some JSON text is exactly the canonical form of the value it holds.

    The check parses the text and re-encodes it: a verifier uses it to refuse stored JSON
    that hashes correctly but that no honest writer could have produced.

    Args:
        data: the text, as UTF-8 bytes or a string.

    Integer tokens beyond `±(2**53 - 1)` are read as the double they denote, as a
    JavaScript verifier would: `9007199254740992` (written for the float `2.0**53`) is
    canonical, `9007199254740993` is not.

    Returns:
        True when `canonical_bytes(json.loads(data))` would give back the same text.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return False
    else:
        text = data
    try:
        value = _fast_decode(text)
    except _NotFastFloatError:
        pass
    except (ValueError, RecursionError):
        return False
    else:
        if text.isascii() or _UTF16_ORDER_RISK.search(text) is None:
            try:
                return _encode(value) == text
            except (ValueError, RecursionError):
                return False
    try:
        encoded = canonical_bytes(_strict_decode(text))
    except (ValueError, RecursionError):
        return False
    return encoded == text.encode("utf-8", "surrogatepass")


def _is_fast_float(value: float) -> bool:
    # Inside [1e-4, 1e16) Python's repr and ECMAScript both write plain decimals with the
    # same shortest round-trip digits; they differ only on integral values (`1.0` vs `1`).
    return (1e-4 <= value < 1e16 or -1e16 < value <= -1e-4) and not value.is_integer()


def _is_plain(obj: object) -> bool:
    """Check that Python's C encoder writes `obj` exactly as RFC 8785 does.

    Scalars are checked where they sit and only containers go through the stack: most
    of a payload is strings, and a push and pop for each cost as much as the encoding.
    """
    stack = [obj]
    pop = stack.pop
    push = stack.append
    budget = _FAST_WALK_BUDGET
    while stack:
        value = pop()
        kind = type(value)
        items: Iterable[object]
        if kind is dict:
            for key in value:  # type: ignore[attr-defined]
                if type(key) is not str:
                    return False
            items = value.values()  # type: ignore[attr-defined]
        elif kind is list:
            items = value  # type: ignore[assignment]
        else:
            items = (value,)
        budget -= 1
        if budget < 0:
            return False
        for item in items:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is dict or kind is list:
                push(item)
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # type: ignore[operator]
                    return False
            elif kind is float:
                if not _is_fast_float(item):  # type: ignore[arg-type]
                    return False
            else:
                return False
    return True


def _slow_canonical_bytes(obj: object) -> bytes:
    try:
        _check(obj, "$", set())
    except RecursionError:
        raise CanonicalError("$", "the value is nested too deeply") from None
    try:
        return rfc8785.dumps(obj)  # type: ignore[arg-type]
    except RecursionError:
        raise CanonicalError("$", "the value is nested too deeply") from None
    except rfc8785.CanonicalizationError as error:  # pragma: no cover - _check is stricter
        raise CanonicalError("$", str(error).lower()) from None


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _child_path(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=True)}]"


def _check_text(text: str, path: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalError(path, f"{what} holds a lone surrogate, which is not unicode") from None


def _check(value: object, path: str, active: set[int]) -> None:
    """Walk a value and raise `CanonicalError` at the first thing RFC 8785 cannot write."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path, "the string")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalError(
                path,
                f"the integer `{value}` is outside ±(2**53 - 1) and would lose precision;"
                " send it as a string",
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalError(path, f"`{value}` is not a JSON number")
    elif isinstance(value, dict | list | tuple):
        if id(value) in active:
            raise CanonicalError(path, "the value contains itself")
        active.add(id(value))
        _check_container(value, path, active)
        active.discard(id(value))
    else:
        raise CanonicalError(path, f"a `{type(value).__name__}` is not a JSON value")


def _check_container(
    value: dict[object, object] | list[object] | tuple[object, ...], path: str, active: set[int]
) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(path, f"the key `{key!r}` is not a string")
            child = _child_path(path, key)
            _check_text(key, child, "the key")
            _check(item, child, active)
    else:
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", active)
