"""The strict body reader's fast path refuses and accepts exactly what the full check does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import RequestInvalid
from charter.model import MAX_DEPTH, ActionRequest
from charter.server._body import (
    BODY_DEPTH,
    _check,
    _decode,
    _Duplicate,
    parse_json,
    parse_request,
)
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
        raise ApiError("too_deep", f"the body nests deeper than {BODY_DEPTH} levels") from None
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
    depth = draw(
        st.sampled_from([0, 1, 2, MAX_DEPTH, BODY_DEPTH, BODY_DEPTH + 1, BODY_DEPTH + 2, 70])
    )
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


def request_outcome(body: bytes, *, once: bool) -> Any:
    """What a decision body becomes: the request, or the error's code and field.

    `once` reads it as the server does (`parse_request`, then the model trusting it);
    otherwise the body is decoded strictly and the model copies and walks it all.
    """
    try:
        if once:
            value, trusted = parse_request(body)
            request = ActionRequest.from_json(value, trusted=trusted)
        else:
            request = ActionRequest.from_json(parse_json(body))
    except ApiError as exc:
        return ("error", exc.code, exc.field)
    except RequestInvalid as exc:
        return ("error", exc.code, exc.field)
    return ("ok", repr(request))


arg_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**60), max_value=2**60),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([5.0, -0.0, 1e16, 2.0**53, 9007199254740993.0, 1.5]),
        st.text(max_size=4),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def decision_bodies(draw: st.DrawFn) -> bytes:
    """Decision requests, some nested around the limit, some with numbers the model changes."""
    args = draw(st.dictionaries(st.text(max_size=3), arg_values, max_size=3))
    depth = draw(st.sampled_from([0, 1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1]))
    if depth:
        args = {"deep": nested_value(depth, draw(arg_values))}
    request: dict[str, Any] = {
        "agent": draw(st.sampled_from(["support-bot", "", "x" * 300])),
        "action": draw(st.sampled_from(["crm.note", "Not An Action"])),
        "args": args,
    }
    if draw(st.booleans()):
        request["context"] = {
            "confidence": draw(st.sampled_from([0.5, 1.0, 2, True])),
            "labels": draw(st.dictionaries(st.text(max_size=3), arg_values, max_size=2)),
        }
    if draw(st.booleans()):
        request["idempotency_key"] = draw(st.sampled_from(["k-1", "", "a\nb", "k" * 257]))
    return json.dumps(request).encode()


def nested_value(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


class TestOneParse:
    """A decision body read once and trusted gives what decoding and walking it gives."""

    @settings(max_examples=400, deadline=None)
    @given(decision_bodies())
    def test_same_request_or_same_refusal(self, body: bytes) -> None:
        """Same request, or a refusal naming the same field; depth is refused by the reader."""
        once, walked = request_outcome(body, once=True), request_outcome(body, once=False)
        if once[0] == "error" and once[1] == "too_deep":
            assert walked == ("error", "too_deep", once[2])
        else:
            assert once == walked

    @pytest.mark.parametrize("levels", [MAX_DEPTH, MAX_DEPTH + 1])
    def test_the_reader_and_the_model_draw_one_line(self, levels: int) -> None:
        """Nesting the model accepts the reader accepts, and what it refuses the reader does."""
        args = {"x": nested_value(levels, 1)}
        body = json.dumps({"agent": "a", "action": "a.b", "args": args}).encode()
        try:
            ActionRequest.from_json(json.loads(body))
        except RequestInvalid:
            model_accepts = False
        else:
            model_accepts = True
        assert (request_outcome(body, once=True)[0] == "ok") is model_accepts
