"""The published decision-request schema and the parser that checks requests agree.

`DecisionRequest` (in `/openapi.json`) only documents; `ActionRequest.from_json` decides.
A client generated from the schema must be refused for the same bodies the server refuses.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from charter.errors import RequestInvalid
from charter.model import CONTEXT_FIELDS, MAX_ID, REQUEST_FIELDS, ActionRequest
from charter.server._schemas import DecisionRequest


def test_the_schema_names_the_parsers_fields():
    """Same top-level and context fields, same required ones, same length limit."""
    schema = DecisionRequest.model_json_schema()
    assert set(schema["properties"]) == set(REQUEST_FIELDS)
    assert set(schema["required"]) == {"agent", "action"}
    context = schema["$defs"]["Context"]
    assert set(context["properties"]) == set(CONTEXT_FIELDS)
    assert schema["properties"]["agent"]["maxLength"] == MAX_ID


# Values near each rule's edge, for every field the parser checks.
_strings = st.sampled_from(["ok", "", " ", "x" * MAX_ID, "x" * (MAX_ID + 1), "a\nb", "é"])
_numbers = st.sampled_from([0, 1, 0.5, -0.1, 1.5, True, "0.5", None])
_label = st.sampled_from(["v", 3, 2.5, False, None, [1], {"k": 1}])
_source = st.one_of(
    st.fixed_dictionaries({"name": _strings}, optional={"age_seconds": _numbers}),
    st.fixed_dictionaries({"name": _strings, "extra": st.just(1)}),
    st.sampled_from(["feed", None, 1]),
)
_context = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "confidence": _numbers,
            "environment": _strings,
            "rationale": st.sampled_from(["why", "", "y" * (MAX_ID + 5), 3]),
            "alternatives": st.one_of(st.lists(st.sampled_from(["a", 1]), max_size=2), _strings),
            "data_sources": st.one_of(st.lists(_source, max_size=2), st.just("feed")),
            "labels": st.one_of(st.dictionaries(st.sampled_from(["a", "b"]), _label), _strings),
            "unknown": st.just(1),
        },
    ),
    st.sampled_from([[], "ctx", 1]),
)
_fields: dict[str, st.SearchStrategy[Any]] = {
    "agent": st.one_of(_strings, st.sampled_from([7, None])),
    "action": st.sampled_from(["crm.note", "a", "A.b", "a..b", "a-b_c.d9", "", 3, "x" * 300]),
    "args": st.one_of(st.dictionaries(st.sampled_from(["n", "m"]), _label), st.sampled_from([[1]])),
    "context": _context,
    "idempotency_key": st.one_of(_strings, st.sampled_from([1, "\u200b", "k\x7f"])),
    "trace_id": st.one_of(_strings, st.just(1)),
    "extra": st.just("x"),
}


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request with one to three fields replaced, added, nulled or left out."""
    body: dict[str, Any] = {"agent": "support-bot", "action": "crm.note"}
    for name in draw(st.lists(st.sampled_from(sorted(_fields)), min_size=1, max_size=3)):
        change = draw(st.sampled_from(["set", "set", "null", "drop"]))
        if change == "set":
            body[name] = draw(_fields[name])
        elif change == "null":
            body[name] = None
        else:
            body.pop(name, None)
    return body


def _accepted_by_schema(body: dict[str, Any]) -> bool:
    try:
        DecisionRequest.model_validate_json(_json(body))
    except ValidationError:
        return False
    return True


def _accepted_by_parser(body: dict[str, Any]) -> bool:
    try:
        ActionRequest.from_json(body)
    except RequestInvalid:
        return False
    return True


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)


@settings(max_examples=600, deadline=None)
@given(_requests())
def test_schema_and_parser_accept_the_same_requests(body: dict[str, Any]) -> None:
    """Whatever the schema accepts the parser accepts, and what one refuses the other does."""
    assert _accepted_by_schema(body) == _accepted_by_parser(body), body
