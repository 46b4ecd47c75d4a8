"""Canonical encoding stays exactly RFC 8785 once it has learned a layout, and so does its check.

`canonical_bytes` compiles an encoder for an object layout it has seen twice, and
`is_canonical` a pattern for a canonical text it has confirmed. These properties feed each
a layout first and then values and texts of the same layout that differ inside, and
compare every answer with the reference `rfc8785` package.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalError,
    _forget_learned,
    canonical_bytes,
    canonical_text,
    is_canonical,
)

# Text with what encoders disagree on: controls, quote, backslash, characters on both sides
# of the surrogate range (keys among them sort differently by UTF-16 code units and by code
# points), and characters outside the BMP.
_characters = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(['"', "\\", "\x00", "\x08", "\x1f", "\x7f", "\u2028", "/", "{", "}"]),
    st.sampled_from(["\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"]),
)
texts = st.text(_characters, max_size=10)
keys = st.one_of(st.sampled_from(["a", "b", "id", "amount", "\ue000", "\U0001f600"]), texts)
integers = st.one_of(
    st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER),
    st.integers(min_value=MAX_SAFE_INTEGER - 3, max_value=MAX_SAFE_INTEGER + 3),
    st.integers(min_value=-MAX_SAFE_INTEGER - 3, max_value=-MAX_SAFE_INTEGER + 3),
    st.integers(min_value=2**60, max_value=2**70),
)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [-0.0, 0.0, 5e-324, 1e-7, 1e-6, 1e-5, 1e-4, 1e16, 1e21, 1.7976931348623157e308]
    ),
    st.floats(min_value=1e-4, max_value=1e16).map(lambda x: round(x, 3)),
)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)
objects = st.dictionaries(keys, values, min_size=1, max_size=5)
# What RFC 8785 cannot write: NaN and the infinities, integers a double does not hold
# exactly, keys that are not strings, lone surrogates.
unwritable = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 2**53, -(2**53), 2**64, "\ud800", "a\udfff"]),
    st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), scalars, min_size=1),
)


def _outcome(value: Any) -> tuple[str, object]:
    """What `canonical_bytes` answers: its bytes, or the path of its refusal."""
    try:
        return "bytes", canonical_bytes(value)
    except CanonicalError as error:
        return "refused", error.path


def _text_outcome(value: Any) -> tuple[str, object]:
    """What `canonical_text` answers, in the terms of `_outcome`."""
    try:
        return "bytes", canonical_text(value).encode()
    except CanonicalError as error:
        return "refused", error.path


def _reference(value: Any) -> bytes | None:
    """What `rfc8785` writes, or None where it refuses the value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return None


def _same_layout(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """A value laid out as `value` (same keys in the same order, same lengths) or not quite."""
    if depth > 0 and draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(values, unwritable))  # anything at all in this place
    if isinstance(value, dict):
        return {key: _same_layout(draw, item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_same_layout(draw, item, depth + 1) for item in value]
    return draw(scalars)


@st.composite
def layout_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    first = draw(objects)
    return first, _same_layout(draw, first)


@pytest.fixture(autouse=True)
def _fresh_process() -> None:
    """Each test learns its own layouts, as a new process would."""
    _forget_learned()


class TestLearnedLayouts:
    @settings(max_examples=400)
    @given(layout_pairs())
    def test_equals_reference_after_learning(self, pair: tuple[dict[str, Any], Any]) -> None:
        """After a layout is learned, values of that layout encode exactly as `rfc8785` does."""
        first, second = pair
        _forget_learned()
        for value in (first, first, first, second, second):
            expected = _reference(value)
            kind, got = _outcome(value)
            if expected is None:
                assert kind == "refused"  # a CanonicalError, which is a ValueError
            else:
                assert (kind, got) == ("bytes", expected)
            assert _text_outcome(value) == (kind, got)

    @pytest.mark.parametrize(
        ("value", "path"),
        [
            ({"k": "v", "n": 1, "f": 0.5, "d": {"x": 1}, "l": [1]}, None),
            ({"k": "v", "n": 2**53, "f": 0.5, "d": {"x": 1}, "l": [1]}, "$.n"),
            ({"k": "v", "n": 1, "f": math.nan, "d": {"x": 1}, "l": [1]}, "$.f"),
            ({"k": "v", "n": 1, "f": -math.inf, "d": {"x": 1}, "l": [1]}, "$.f"),
            ({"k": "v", "n": 1, "f": 0.5, "d": {1: 1}, "l": [1]}, "$.d"),
            ({"k": "v", "n": 1, "f": 0.5, "d": {"x": 1}, "l": [2**64]}, "$.l[0]"),
            ({"k": "\ud800", "n": 1, "f": 0.5, "d": {"x": 1}, "l": [1]}, "$.k"),
            ({"k": "v", "n": 1, "f": 0.5, "d": {"x": {1, 2}}, "l": [1]}, "$.d.x"),
            ({"k": 1, "n": True, "f": 1.0, "d": [], "l": {}}, None),
        ],
    )
    def test_refusals_name_their_path_after_learning(self, value: Any, path: str | None) -> None:
        """A learned layout refuses what RFC 8785 cannot write, naming where, like the others."""
        learned = {"k": "v", "n": 1, "f": 0.5, "d": {"x": 1}, "l": [1]}
        canonical_bytes(learned)
        canonical_bytes(dict(learned))
        if path is None:
            assert canonical_bytes(value) == rfc8785.dumps(value)
            assert canonical_text(value) == rfc8785.dumps(value).decode()
            return
        for encode in (canonical_bytes, canonical_text):
            with pytest.raises(CanonicalError) as caught:
                encode(value)
            assert caught.value.path == path

    def test_keys_sort_by_utf16_code_units_after_learning(self) -> None:
        """A learned layout writes keys in UTF-16 order, whatever order it was given them in."""
        value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
        for _ in range(3):
            assert canonical_bytes(value) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()

    def test_a_key_that_only_pretends_to_match_is_refused(self) -> None:
        """A key object that claims equality with every string cannot borrow a learned layout."""

        class Liar:
            def __eq__(self, other: object) -> bool:
                return True

            def __hash__(self) -> int:
                return hash("a")

        canonical_bytes({"a": 1, "b": 2})
        canonical_bytes({"a": 1, "b": 2})
        with pytest.raises(CanonicalError, match="not a string"):
            canonical_bytes({Liar(): 1, "b": 2})


def _reference_is_canonical(text: str) -> bool:
    """Whether `text` is what `rfc8785` writes for the value it holds, read as JavaScript would."""

    def number(token: str) -> int | float:
        value = int(token)
        return value if abs(value) <= MAX_SAFE_INTEGER else float(token)

    def constant(token: str) -> None:
        raise ValueError(token)

    try:
        value = json.loads(text, parse_int=number, parse_constant=constant)
        return rfc8785.dumps(value) == text.encode("utf-8")
    except (ValueError, TypeError, RecursionError, rfc8785.CanonicalizationError):
        return False


_NUMBER_SPELLINGS = [
    lambda n: f"{n}.0",
    lambda n: f"{n}e0",
    lambda n: f"{n}E+0",
    lambda n: f"0{n}" if n >= 0 else f"-0{-n}",
    lambda n: f"{n:.3f}",
    lambda n: f" {n}",
]


@st.composite
def respelled(draw: st.DrawFn, value: Any) -> str:
    """A JSON text of `value` in which some parts may be spelled other than canonically."""
    if isinstance(value, dict):
        items = list(value.items())
        if draw(st.booleans()):
            items.sort(key=lambda item: item[0].encode("utf-16-be"))
        members = [
            json.dumps(key, ensure_ascii=False) + ":" + draw(respelled(item)) for key, item in items
        ]
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(draw(respelled(item)) for item in value) + "]"
    if type(value) is int and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(_NUMBER_SPELLINGS))(value)
    if isinstance(value, float) and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([repr(value), f"{value:.17g}", f"{value:e}"]))
    if isinstance(value, str) and draw(st.integers(0, 3)) == 0:
        return json.dumps(value, ensure_ascii=draw(st.booleans()))
    try:
        return canonical_bytes(value).decode()
    except CanonicalError:
        return json.dumps(value)


@st.composite
def learned_and_respelled(draw: st.DrawFn) -> tuple[str, str]:
    """A canonical text to learn, and a text of the same layout, canonical or not."""
    first = draw(objects.filter(lambda value: _reference(value) is not None))
    second = _same_layout(draw, first)
    if _reference(second) is None:
        second = first
    return canonical_bytes(first).decode(), draw(respelled(second))


class TestLearnedTextPatterns:
    @settings(max_examples=400)
    @given(learned_and_respelled())
    def test_is_canonical_agrees_with_reference(self, pair: tuple[str, str]) -> None:
        """Once a canonical text's layout is learned, texts of that layout are judged as before."""
        learned, candidate = pair
        _forget_learned()
        assert is_canonical(learned)
        assert is_canonical(learned.encode())
        expected = _reference_is_canonical(candidate)
        assert is_canonical(candidate) == expected
        assert is_canonical(candidate.encode("utf-8", "surrogatepass")) == expected

    @pytest.mark.parametrize(
        "text",
        [
            '{"a":1.50,"b":"x"}',
            '{"a":1.0,"b":"x"}',
            '{"a":01,"b":"x"}',
            '{"a":-0,"b":"x"}',
            '{"a":1e2,"b":"x"}',
            '{"a":0.1000000000000000055511151231257827,"b":"x"}',
            '{"a":1,"b":"\\u0041"}',
            '{"a":1,"b":"\\/"}',
            '{"a":1,"b":"\x1f"}',
            '{"a":1,"b":"\\u001F"}',
            '{"a":NaN,"b":"x"}',
            '{"a":9007199254740993,"b":"x"}',
        ],
    )
    def test_respellings_of_a_learned_layout_are_refused(self, text: str) -> None:
        """A text laid out like a learned one but spelled otherwise is still not canonical."""
        assert is_canonical('{"a":1,"b":"x"}')
        assert is_canonical('{"a":0.5,"b":"\\n"}')
        assert not is_canonical(text)
        assert not is_canonical(text.encode())

    def test_other_values_of_a_learned_layout_are_accepted(self) -> None:
        """A learned pattern accepts other canonical values: strings, integers, floats, literals."""
        assert is_canonical('{"a":1,"b":"x"}')
        for text in [
            '{"a":-7,"b":"\\"quoted\\" \\u001f é \U0001f600"}',
            '{"a":0.1,"b":""}',
            '{"a":null,"b":"x"}',
            '{"a":true,"b":"x"}',
            '{"a":9007199254740991,"b":"x"}',
            '{"a":0.00001,"b":"x"}',
        ]:
            assert is_canonical(text)
