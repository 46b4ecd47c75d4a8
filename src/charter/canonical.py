"""RFC 8785 canonical JSON: the exact bytes Charter hashes and signs.

Every hash in Charter (ledger entries, policy versions, grant bindings) is taken over
`canonical_bytes`, so two processes that hold equal JSON values always agree on the hash.
The output is byte-for-byte the JSON Canonicalization Scheme (RFC 8785): object members
sorted by the UTF-16 code units of their names, no insignificant whitespace, strings with
only the mandatory escapes, and numbers written the way ECMAScript writes them.

Three paths produce the same bytes. A process writes the same few layouts of object over
and over (a decision, an outcome, an approval), so once it has seen a layout twice it
compiles an encoder for it (`_shapes`): the keys are written out in advance, already in
UTF-16 order, and each value is checked and spelled where it sits. A part of a value that
the layout did not foresee (other keys, another length, another type) is handed to the
general fast path, which checks in one cheap walk that the value holds nothing where
Python's own C JSON encoder and RFC 8785 could disagree (floats that Python would write
as `1.0` or `1e+16`, integers outside the exact range of a double, non-string keys,
unusual types), then lets that encoder do the work. Anything else takes the slow path: a
validating walk that names the path of a bad value, then the reference `rfc8785` package.

`is_canonical` likewise learns the layouts of the canonical texts it has confirmed, as one
regular expression each: a text of a known layout is then checked in one match, without
being parsed.

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
    "canonical_text",
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
    text = _fast_text(obj)
    if text is not None:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the slow path names where
    return _slow_canonical_bytes(obj)


def canonical_text(obj: JSONValue) -> str:
    """`canonical_bytes` as text: what the ledger stores, without a round trip through bytes.

    Raises:
        CanonicalError: as `canonical_bytes`.
    """
    text = _fast_text(obj)
    if text is not None:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: the slow path names where
        else:
            return text
    return _slow_canonical_bytes(obj).decode("utf-8")


def _fast_text(obj: object) -> str | None:
    """The canonical text by a learned layout or the C encoder, or None to take the slow path.

    The text may still hold a lone surrogate, which the caller's UTF-8 check refuses.
    """
    layout = None
    if type(obj) is dict:
        try:
            layout = _join_keys(obj)
        except TypeError:
            pass  # a key that is not a string: the slow path names it
        else:
            encode = _layouts.get(layout)
            if encode is not None:
                try:
                    return encode(obj)
                except (_Miss, TypeError, ValueError, RecursionError):
                    pass  # a value the layout did not foresee: the general paths decide
    if _is_plain(obj):
        try:
            text = _encode(obj)
        except (ValueError, RecursionError):
            return None  # the slow path explains the problem with its path
        if text.isascii() or _UTF16_ORDER_RISK.search(text) is None:
            if layout is not None:
                _learn_layout(obj, layout)  # type: ignore[arg-type]
            return text
    return None


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
        unicode = True  # strict decoding leaves no lone surrogate
    else:
        text = data
        unicode = text.isascii()
    if unicode and _matches_text_pattern(text):
        return True
    canonical = _is_canonical_text(text)
    if canonical and unicode:
        _learn_text_pattern(text)
    return canonical


def _is_canonical_text(text: str) -> bool:
    """`is_canonical` without the learned patterns: parse, re-encode and compare."""
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


# Compiled layouts. A process writes a handful of object layouts over and over; for each
# layout seen twice, `canonical_bytes` compiles an encoder and `is_canonical` a pattern.
# Both only ever vouch for what they were compiled to check: anything else falls through
# to the general paths above, which stay the reference for what is canonical.

_KEY_SEPARATOR = "\x00"
_join_keys = _KEY_SEPARATOR.join
_MAX_LAYOUTS = 256  # compiled encoders (and, separately, text patterns) per process
_MAX_SEEN = 4096  # layouts seen once, remembered until the second sighting
_MAX_NODES = 512  # values inlined in one encoder; larger parts use the general path
_MAX_DEPTH = 16  # containers nested inside one encoder; deeper ones likewise
_MAX_INLINE = 64  # members of one container inlined; larger ones likewise
_MAX_PATTERNS_PER_COUNT = 8  # text patterns per number of quote characters

_layouts: dict[str, Callable[[dict[str, object]], str]] = {}
_seen: dict[str, int] = {}


class _Miss(Exception):
    """A compiled encoder met a value it cannot vouch for; the general path takes over."""


def _general_text(value: object) -> str:
    """The general fast path for part of a value, as text; `_Miss` when it cannot vouch."""
    if _is_plain(value):
        try:
            text = _encode(value)
        except (ValueError, RecursionError):
            raise _Miss from None
        if text.isascii() or _UTF16_ORDER_RISK.search(text) is None:
            return text
    raise _Miss


def _utf16_order(key: str) -> bytes:
    return key.encode("utf-16-be")


_PLAIN_SOURCE = re.compile(r"[ !#-\[\]-~]*\Z")  # printable ASCII but backslash and quote


def _source_literal(text: str) -> str | None:
    """`text` as the literal part of a double-quoted f-string, when it can be written as is."""
    if _PLAIN_SOURCE.match(text) is None:
        return None  # referred to by name instead: nothing to escape, nothing to get wrong
    return text.replace("{", "{{").replace("}", "}}")


_Pieces: TypeAlias = "list[tuple[bool, str]]"  # (True, literal text) or (False, code)


class _EncoderSource:
    """Writes the Python source of an encoder for the layout of one sample value.

    Each container of the sample is checked where it sits: a container of the same kind,
    keys (in the same insertion order) and length has its members unpacked and spelled one
    by one. The flat encoder writes the whole value with one f-string and hands anything
    else to the nested one; there each container is a guarded block whose text, when the
    guard fails, comes from `_general_text`. Scalars are checked against their kind where
    they are spelled, and fall back the same way.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, object] = {}
        self.variables = 0
        self.nodes = 0
        self.flat = False

    def constant(self, value: object) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"

    def fstring(self, pieces: _Pieces) -> str:
        merged: _Pieces = []
        for literal, text in pieces:
            if literal and merged and merged[-1][0]:
                merged[-1] = (True, merged[-1][1] + text)
            else:
                merged.append((literal, text))
        parts = [
            _source_literal(text) or "{" + self.constant(text) + "}"
            if literal
            else "{" + text + "}"
            for literal, text in merged
        ]
        return 'f"' + "".join(parts) + '"'

    def function(self, name: str, sample: dict[str, object], *, flat: bool) -> None:
        """Emit `def name(v0)`, returning the text of a value laid out as `sample`."""
        self.flat, self.nodes = flat, 0
        self.lines.append(f"def {name}(v0):")
        pieces = self.mapping(sample, "v0", "    ", 0)
        self.lines.append(f"    return {self.fstring(pieces)}")

    def value(self, sample: object, var: str, indent: str, depth: int) -> _Pieces:
        """The pieces of the value in `var`'s text, after emitting the lines they need."""
        self.nodes += 1
        kind = type(sample)
        code = f"g({var})"
        if kind is str:
            code = f"e({var})"  # a TypeError for anything but a string: caught outside
        elif kind is bool:
            code = f"(('true' if {var} else 'false') if type({var}) is bool else g({var}))"
        elif sample is None:
            code = f"('null' if {var} is None else g({var}))"
        elif kind is int:
            code = f"({var} if type({var}) is int and -M <= {var} <= M else g({var}))"
        elif kind is float:
            code = (
                f"(r({var}) if type({var}) is float and (1e-4 <= {var} < 1e16 or"
                f" -1e16 < {var} <= -1e-4) and not {var}.is_integer() else g({var}))"
            )
        elif depth < _MAX_DEPTH and self.nodes < _MAX_NODES:
            if kind is dict:
                return self.mapping(sample, var, indent, depth)  # type: ignore[arg-type]
            if kind is list:
                return self.sequence(sample, var, indent, depth)  # type: ignore[arg-type]
        return [(False, code)]

    def guarded(
        self, guard: str, var: str, indent: str, build: Callable[[str], _Pieces]
    ) -> _Pieces:
        """Emit the check of a container and its members' lines; return its pieces."""
        if var == "v0":  # the caller matched the value's keys to the layout already
            return build(indent)
        if self.flat:
            self.lines.append(f"{indent}if not ({guard}):")
            self.lines.append(f"{indent}    return n(v0)")
            return build(indent)
        text = self.variable()
        self.lines.append(f"{indent}if {guard}:")
        pieces = build(indent + "    ")
        self.lines.append(f"{indent}    {text} = {self.fstring(pieces)}")
        self.lines.append(f"{indent}else:")
        self.lines.append(f"{indent}    {text} = g({var})")
        return [(False, text)]

    def mapping(self, sample: dict[str, object], var: str, indent: str, depth: int) -> _Pieces:
        keys = list(sample)
        if not keys:
            return [(False, f"(ed if type({var}) is dict and not {var} else g({var}))")]
        if len(keys) > _MAX_INLINE or any(_KEY_SEPARATOR in key for key in keys):
            return [(False, f"g({var})")]
        order = sorted(range(len(keys)), key=lambda i: _utf16_order(keys[i]))

        def build(inner: str) -> _Pieces:
            members = self.block(sample.values(), var + ".values()", inner, depth)
            pieces: _Pieces = [(True, "{")]
            for n, index in enumerate(order):
                name = json.encoder.encode_basestring(keys[index])
                pieces.append((True, ("," if n else "") + name + ":"))
                pieces += members[index]
            return [*pieces, (True, "}")]

        guard = f"type({var}) is dict and j({var}) == {self.constant(_join_keys(keys))}"
        return self.guarded(guard, var, indent, build)

    def sequence(self, sample: list[object], var: str, indent: str, depth: int) -> _Pieces:
        if not sample:
            return [(False, f"(el if type({var}) is list and not {var} else g({var}))")]
        if len(sample) > _MAX_INLINE:
            return [(False, f"g({var})")]

        def build(inner: str) -> _Pieces:
            members = self.block(sample, var, inner, depth)
            pieces: _Pieces = [(True, "[")]
            for n, member in enumerate(members):
                pieces += [(True, ","), *member] if n else member
            return [*pieces, (True, "]")]

        return self.guarded(
            f"type({var}) is list and len({var}) == {len(sample)}", var, indent, build
        )

    def block(
        self, members: Iterable[object], source: str, indent: str, depth: int
    ) -> list[_Pieces]:
        """Unpack `source` into one variable per member; return each member's pieces."""
        members = list(members)
        names = [self.variable() for _ in members]
        self.lines.append(f"{indent}{', '.join(names)}, = {source}")
        return [
            self.value(member, name, indent, depth + 1)
            for member, name in zip(members, names, strict=True)
        ]


def _compile_layout(sample: dict[str, object]) -> Callable[[dict[str, object]], str]:
    """Compile an encoder for dicts laid out as `sample`.

    The encoder may only be given a dict whose keys, joined, equal the sample's layout.
    """
    source = _EncoderSource()
    source.function("n", sample, flat=False)
    source.function("encode", sample, flat=True)
    helpers: dict[str, object] = {
        "e": json.encoder.encode_basestring,
        "g": _general_text,
        "j": _join_keys,
        "r": float.__repr__,
        "M": MAX_SAFE_INTEGER,
        "ed": "{}",
        "el": "[]",
    }
    namespace = {**helpers, **source.constants}
    code = compile("\n".join(source.lines), "<charter.canonical layout>", "exec")
    exec(code, namespace)  # noqa: S102 - the source names only the constants above
    encode: Callable[[dict[str, object]], str] = namespace["encode"]  # type: ignore[assignment]
    return encode


def _learn_layout(obj: dict[str, object], layout: str) -> None:
    """Count a plain object's layout; compile an encoder on its second sighting."""
    if layout in _layouts or len(_layouts) >= _MAX_LAYOUTS:
        return
    if layout.count(_KEY_SEPARATOR) != len(obj) - 1:
        return  # a key holds the separator: the layout's name would be ambiguous
    if _seen.get(layout, 0) == 0:
        if len(_seen) >= _MAX_SEEN:
            _seen.clear()
        _seen[layout] = 1
        return
    _seen.pop(layout, None)
    _layouts[layout] = _compile_layout(obj)


# The pattern of a canonical text's layout: keys and punctuation as they are, each string
# value any canonical string, each number any integer that needs no check or any plain
# decimal (captured, to check that it is the float's shortest spelling).
_TEXT_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^"{}\[\]:,]+|[{}\[\]:,]')
_STRING_PATTERN = (
    r'"[^"\\\x00-\x1f]*+(?:\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))[^"\\\x00-\x1f]*+)*+"'
)
_SCALAR_PATTERN = r"(?:0|-?[1-9][0-9]{0,14}|true|false|null|(-?(?:0|[1-9][0-9]*)\.[0-9]*[1-9]))"
_PUNCTUATION = frozenset("{}[]:,")
_text_patterns: dict[int, list[re.Pattern[str]]] = {}
_text_pattern_count = 0


def _matches_text_pattern(text: str) -> bool:
    """Whether `text` is canonical by a learned pattern (False means: not known here)."""
    for pattern in _text_patterns.get(text.count('"'), ()):
        match = pattern.fullmatch(text)
        if match is not None:
            for token in filter(None, match.groups()):
                number = float(token)
                if not (_is_fast_float(number) and repr(number) == token):
                    return False
            return True
    return False


def _learn_text_pattern(text: str) -> None:
    """Compile the pattern of a text just confirmed canonical, while there is room."""
    global _text_pattern_count  # noqa: PLW0603 - one process-wide cache, bounded
    if _text_pattern_count >= _MAX_LAYOUTS or not text.startswith("{"):
        return
    bucket = _text_patterns.setdefault(text.count('"'), [])
    if len(bucket) >= _MAX_PATTERNS_PER_COUNT:
        return
    tokens = _TEXT_TOKEN.findall(text)
    parts = []
    for index, token in enumerate(tokens):
        if token.startswith('"'):
            is_key = index + 1 < len(tokens) and tokens[index + 1] == ":"
            parts.append(re.escape(token) if is_key else _STRING_PATTERN)
        elif token in _PUNCTUATION:
            parts.append(re.escape(token))
        else:
            parts.append(_SCALAR_PATTERN)
    bucket.append(re.compile("".join(parts)))
    _text_pattern_count += 1


def _forget_learned() -> None:
    """Drop every compiled layout and pattern, as in a new process (for tests)."""
    global _text_pattern_count  # noqa: PLW0603 - the cache `_learn_text_pattern` bounds
    _layouts.clear()
    _seen.clear()
    _text_patterns.clear()
    _text_pattern_count = 0
