"""`charter.canonical` writes exactly RFC 8785, fast, and names bad values by path."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalError,
    canonical_bytes,
    content_hash,
    is_canonical,
)

safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Text biased towards the characters where encoders disagree: controls, quotes,
# backslashes, and code points on both sides of the UTF-16 surrogate range.
tricky_text = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\u2028", "\ue000", "\uffff"]),
        st.sampled_from(["\U00010000", "\U0001f600", "\U0010ffff", "\u00e9", "/"]),
    ),
    max_size=12,
)
scalars = st.one_of(st.none(), st.booleans(), safe_ints, finite_floats, tricky_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(tricky_text, children, max_size=6),
    ),
    max_leaves=40,
)

# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript spelling.
NUMBER_VECTORS = {
    "0000000000000000": "0",
    "8000000000000000": "0",
    "0000000000000001": "5e-324",
    "8000000000000001": "-5e-324",
    "7fefffffffffffff": "1.7976931348623157e+308",
    "ffefffffffffffff": "-1.7976931348623157e+308",
    "4340000000000000": "9007199254740992",
    "c340000000000000": "-9007199254740992",
    "4430000000000000": "295147905179352830000",
    "44b52d02c7e14af5": "9.999999999999997e+22",
    "44b52d02c7e14af6": "1e+23",
    "444b1ae4d6e2ef4e": "999999999999999700000",
    "444b1ae4d6e2ef4f": "999999999999999900000",
    "444b1ae4d6e2ef50": "1e+21",
    "3eb0c6f7a0b5ed8c": "9.999999999999997e-7",
    "3eb0c6f7a0b5ed8d": "0.000001",
    "41b3de4355555553": "333333333.3333332",
    "41b3de4355555554": "333333333.33333325",
    "41b3de4355555555": "333333333.3333333",
    "41b3de4355555556": "333333333.3333334",
    "41b3de4355555557": "333333333.33333343",
    "becbf647612f3696": "-0.0000033333333333333333",
    "43143ff3c1cb0959": "1424953923781206.2",
}

DECISION = {
    "decision_id": "d-1",
    "request": {
        "agent": "support-bot-1",
        "action": "payments.refund",
        "args": {"order_id": "o-1", "amount": 120, "currency": "USD"},
        "context": {"confidence": 0.82, "environment": "prod", "data_sources": []},
    },
    "decision": {"verdict": "allow", "risk": 20, "factors": [], "policy_version": "sha256:ab"},
}


class TestCanonicalBytes:
    @settings(max_examples=1500)
    @given(json_values)
    def test_equals_reference(self, value: Any) -> None:
        """Any JSON value encodes to the same bytes as the reference `rfc8785` package."""
        assert canonical_bytes(value) == rfc8785.dumps(value)

    @settings(max_examples=500)
    @given(st.one_of(finite_floats, st.lists(finite_floats, max_size=4)))
    def test_floats_equal_reference(self, value: Any) -> None:
        """Floats of every magnitude are spelled as ECMAScript spells them."""
        assert canonical_bytes(value) == rfc8785.dumps(value)

    @pytest.mark.parametrize(("bits", "expected"), NUMBER_VECTORS.items())
    def test_rfc8785_number_vectors(self, bits: str, expected: str) -> None:
        """The number examples of RFC 8785 Appendix B come out exactly."""
        value = struct.unpack(">d", bytes.fromhex(bits))[0]
        assert canonical_bytes(value) == expected.encode()
        assert canonical_bytes([value]) == f"[{expected}]".encode()

    def test_keys_sort_by_utf16_code_units(self) -> None:
        """A key above U+FFFF sorts before one in U+E000-U+FFFF, unlike code point order."""
        value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
        assert canonical_bytes(value) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()

    def test_string_escapes(self) -> None:
        """Only controls, quote and backslash are escaped, with lowercase hex."""
        value = '\b\f\n\r\t\x00\x1f\x7f"\\/é\u2028'
        assert (
            canonical_bytes(value) == '"\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\\"\\\\/é\u2028"'.encode()
        )

    def test_integral_floats_print_as_integers(self) -> None:
        """`1.0` is written `1` and `1e16` in full, as ECMAScript does."""
        assert (
            canonical_bytes({"a": 1.0, "b": 1e16, "c": -0.0})
            == b'{"a":1,"b":10000000000000000,"c":0}'
        )

    def test_tuples_and_subclasses(self) -> None:
        """Tuples encode as arrays and str or int subclasses by their value."""

        class Name(str):
            pass

        assert canonical_bytes({"t": (1, Name("x"))}) == b'{"t":[1,"x"]}'

    def test_typical_decision(self) -> None:
        """A decision payload takes the fast path and still matches the reference."""
        assert canonical_bytes(DECISION) == rfc8785.dumps(DECISION)

    @pytest.mark.parametrize(
        ("value", "path"),
        [
            ({"a": [1, math.nan]}, "$.a[1]"),
            ({"a": {"b": math.inf}}, "$.a.b"),
            ({"big": 2**53}, "$.big"),
            ({"neg": -(2**60)}, "$.neg"),
            ({"x": {1: "one"}}, "$.x"),
            ({"weird key": object()}, '$["weird key"]'),
            ({"s": "\ud800"}, "$.s"),
            ({"\udfff": 1}, '$["\\udfff"]'),
            ({"set": {1, 2}}, "$.set"),
        ],
    )
    def test_unencodable_values_name_their_path(self, value: Any, path: str) -> None:
        """An unencodable value raises a `CanonicalError` (a `ValueError`) naming its path."""
        with pytest.raises(CanonicalError) as caught:
            canonical_bytes(value)
        assert caught.value.path == path
        assert isinstance(caught.value, ValueError)
        assert f"`{path}`" in str(caught.value)

    def test_cycles_are_reported(self) -> None:
        """A value that contains itself is refused rather than recursing for ever."""
        value: dict[str, Any] = {}
        value["self"] = [value]
        with pytest.raises(CanonicalError, match="contains itself"):
            canonical_bytes(value)

    def test_largest_safe_integers_are_accepted(self) -> None:
        """±(2**53 - 1) are the bounds and are written in full."""
        assert canonical_bytes([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
            b"[9007199254740991,-9007199254740991]"
        )


class TestContentHash:
    def test_is_sha256_of_canonical_bytes(self) -> None:
        """The hash is `sha256:` and the hex digest of the canonical bytes."""
        expected = "sha256:" + hashlib.sha256(canonical_bytes(DECISION)).hexdigest()
        assert content_hash(DECISION) == expected

    def test_ignores_key_order_and_number_spelling(self) -> None:
        """Equal values hash equally whatever their key order or int/float spelling."""
        assert content_hash({"a": 1, "b": [2.0]}) == content_hash({"b": [2], "a": 1.0})


class TestIsCanonical:
    @settings(max_examples=500)
    @given(json_values)
    def test_accepts_canonical_output(self, value: Any) -> None:
        """Whatever `canonical_bytes` writes is recognised as canonical."""
        encoded = canonical_bytes(value)
        assert is_canonical(encoded)
        assert is_canonical(encoded.decode())

    @settings(max_examples=300)
    @given(st.dictionaries(tricky_text, scalars, min_size=1, max_size=5))
    def test_rejects_other_spellings(self, value: dict[str, Any]) -> None:
        """Python's default JSON spelling is refused unless it happens to be canonical."""
        text = json.dumps(value, indent=1)
        assert is_canonical(text.encode()) == (text.encode() == canonical_bytes(value))

    @pytest.mark.parametrize(
        "text",
        [
            b'{"b":1,"a":2}',
            b'{"a":1,"a":1}',
            b'{"a": 1}',
            b'{"a":1.0}',
            b'{"a":1e2}',
            b'{"a":-0}',
            b'{"a":NaN}',
            b'{"a":9007199254740993}',
            b'{"a":"\\u0041"}',
            b'{"a":"\\/"}',
            b' {"a":1}',
            b'{"a":1}\n',
            b"\xff",
            b'{"a":1',
            b'{"\xee\x80\x80":1,"\xf0\x9f\x98\x80":2}',
        ],
    )
    def test_rejects_non_canonical_text(self, text: bytes) -> None:
        """Unsorted or duplicate keys, spacing, number or escape variants are refused."""
        assert not is_canonical(text)
