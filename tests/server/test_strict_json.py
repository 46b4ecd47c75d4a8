"""The strict body reader's fast path refuses and accepts exactly what the full check does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.server._body import MAX_DEPTH, _check, _decode, _Duplicate, parse_json
from charter.server._errors import ApiError


def checked_fully(body: bytes) -> Any:
    """`parse_json` as it was: decode every body, then walk all of it for what to refuse."""
    if not body.strip():
        raise ApiError("malformed_json", "the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("malformed_json", "the body is not UTF-8 text") from None
    try:
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _decode(text)
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
    except ValueError as exc:
        raise ApiError("malformed_json", f"invalid JSON: {exc}") from None
    _check(value, "", 0)
    return value


def outcome(parse: Any, body: bytes) -> Any:
    try:
        return ("ok", repr(parse(body)))
    except ApiError as exc:
        return ("error", exc.code, exc.message, exc.field)


def nested(depth: int, leaf: str) -> str:
    text = leaf
    for i in range(depth):
        text = f'{{"k{i}": {text}}}' if i % 2 else f"[{text}]"
    return text


fragments = st.sampled_from(
    ["NaN", "-Infinity", "Infinity", "1e400", "-1e400", "1.5", "2", '"[{"', "[]", "{}", "0.0"]
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """JSON documents, some nested past the limit, some holding numbers that are refused."""
    leaf = draw(fragments)
    depth = draw(st.sampled_from([0, 1, 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 70]))
    inner = nested(depth, leaf)
    siblings = draw(st.lists(fragments, max_size=3))
    return "[" + ", ".join([*siblings, inner]) + "]" if draw(st.booleans()) else inner


class TestStrictJson:
    """`parse_json` answers every body as decoding it fully and walking all of it would."""

    @settings(max_examples=300, deadline=None)
    @given(documents())
    def test_same_value_or_same_error(self, text: str) -> None:
        """Refused numbers, nesting around the limit and brackets inside strings."""
        assert outcome(parse_json, text.encode()) == outcome(checked_fully, text.encode())

    @pytest.mark.parametrize(
        "text",
        [
            '{"a": 1, "a": NaN}',
            '{"a": NaN, "a": 1}',
            '{"a": 1e400} x',
            '{"a": NaN} x',
            "[1e400, " + "[" * 3000 + "]" * 3000 + "]",
            "[" * 3000 + "]" * 3000,
            "[" * 995 + "1.5" + "]" * 995,
            '{"a": [1.0, 2.5e-3, -0.0, 1E+2]}',
            '"[[[[{{{{"',
            "\ufeff[]",
            "",
            "1" * 5000,
        ],
    )
    def test_bodies_wrong_in_two_ways(self, text: str) -> None:
        """When a body is wrong in two ways, or right, the answer is the same."""
        assert outcome(parse_json, text.encode()) == outcome(checked_fully, text.encode())
