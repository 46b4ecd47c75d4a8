"""Fast paths of the decision path give exactly what the general code gives."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hmac
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import RequestInvalid
from charter.examples import EXAMPLE_POLICY
from charter.model import ActionRequest, AgentState, Verdict, _copied, _json_copy
from charter.policy import decide, load_bundle
from charter.service import grant_token

NOTE = ActionRequest(
    "support-bot",
    "crm.note",
    {"customer_id": "c-1", "text": "called back"},
    {"confidence": 0.9, "rationale": "the customer asked for a call"},
)
NOW = dt.datetime(2026, 3, 4, 10, tzinfo=dt.UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(),  # NaN, infinities, whole and huge floats
    st.text(max_size=5),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
        st.dictionaries(st.integers(0, 3), children, min_size=1, max_size=2),
    ),
    max_leaves=12,
)


def outcome(copy: Any, value: Any) -> Any:
    """What copying gives: the copy, or the error it raises (field and message)."""
    try:
        return ("ok", copy(value, "args"))
    except RequestInvalid as exc:
        return ("error", str(exc), exc.field)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


class TestPlainCopy:
    """A request's values are copied without paths unless something needs naming."""

    @settings(max_examples=500, deadline=None)
    @given(values)
    def test_same_copy_or_same_error(self, value: Any) -> None:
        """Any value copies to the same value, or fails with the same field and message."""
        fast, general = outcome(_copied, value), outcome(_json_copy, value)
        if fast[0] == "ok" and general[0] == "ok":
            assert repr(fast) == repr(general)  # 1 and 1.0 and True differ in repr
        else:
            assert fast == general

    @pytest.mark.parametrize("depth", [30, 31, 32, 33, 34, 40])
    @pytest.mark.parametrize("leaf", [1, 1.5, "s", [], {}, math.nan])
    def test_depth_limit(self, depth: int, leaf: Any) -> None:
        """At and around the nesting limit, the copy and the error are the general ones."""
        value = nested(depth, leaf)
        fast, general = outcome(_copied, value), outcome(_json_copy, value)
        assert repr(fast) == repr(general)

    def test_subclasses_are_copied_as_before(self) -> None:
        """A str, int or dict subclass is copied as the general code copies it."""

        class Text(str):
            pass

        class Number(int):
            pass

        class Mapping(dict[str, Any]):
            pass

        value = {"a": Text("x"), "b": Number(3), "c": Mapping(d=1), "e": (1.0, 2.5)}
        assert repr(outcome(_copied, value)) == repr(outcome(_json_copy, value))


class TestGrantToken:
    """Grant tokens are HMAC-SHA256 of the grant id, URL-safe base64 without padding."""

    @settings(max_examples=200, deadline=None)
    @given(
        st.binary(max_size=200),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80),
    )
    def test_matches_hmac(self, secret: bytes, grant_id: str) -> None:
        """Any secret (shorter or longer than a block) and any id give `hmac`'s token."""
        mac = hmac.digest(secret, grant_id.encode("utf-8"), "sha256")
        expected = base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
        assert grant_token(secret, grant_id) == expected
        assert grant_token(secret, grant_id) == expected  # and again, from the kept pads


class TestRememberedDecisions:
    """A plan remembers its decisions per bundle and per input, never across them."""

    def test_same_inputs_same_decision(self) -> None:
        """Deciding the same inputs again hands back the decision combined the first time."""
        bundle = load_bundle(EXAMPLE_POLICY)
        first = decide(NOTE, bundle, AgentState(), NOW)
        assert decide(NOTE, bundle, AgentState(), NOW) is first

    def test_other_level_or_agent_decides_anew(self) -> None:
        """Another autonomy level or another agent of the role is decided on its own."""
        bundle = load_bundle(EXAMPLE_POLICY)
        first = decide(NOTE, bundle, AgentState(), NOW)
        lower = decide(NOTE, bundle, AgentState(autonomy=0), NOW)
        trainee = decide(
            dataclasses.replace(NOTE, agent="support-bot-trainee"), bundle, AgentState(), NOW
        )
        assert (first.autonomy_level, lower.autonomy_level) == (2, 0)
        assert trainee.agent == "support-bot-trainee"
        assert decide(NOTE, bundle, AgentState(), NOW) is first

    def test_a_bundle_sharing_plans_decides_anew(self) -> None:
        """A bundle copied with other levels shares the plans, not their remembered decisions."""
        bundle = load_bundle(EXAMPLE_POLICY)
        assert decide(NOTE, bundle, AgentState(), NOW).verdict is Verdict.ALLOW
        strict = dataclasses.replace(bundle, levels={0: 0, 1: 0, 2: -1, 3: 0})
        assert decide(NOTE, strict, AgentState(), NOW).verdict is Verdict.REQUIRE_APPROVAL
