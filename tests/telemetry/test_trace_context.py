"""W3C `traceparent` read and written without OpenTelemetry (`charter.telemetry._context`)."""

from __future__ import annotations

import pytest

from charter.telemetry import TraceParent, span_id_for
from charter.telemetry._context import is_trace_id, new_trace_id, trace_id_of

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


class TestTraceParent:
    """`TraceParent.parse` takes what the spec calls valid and ignores everything else."""

    def test_a_valid_header_is_read(self) -> None:
        """Version 00: trace id, parent span id and flags."""
        parsed = TraceParent.parse(f"00-{TRACE_ID}-{SPAN_ID}-01")
        assert parsed == TraceParent(TRACE_ID, SPAN_ID, 1)
        assert parsed is not None
        assert parsed.sampled

    def test_it_writes_back_what_it_read(self) -> None:
        """`header()` gives the same text, flags included."""
        header = f"00-{TRACE_ID}-{SPAN_ID}-00"
        parsed = TraceParent.parse(header)
        assert parsed is not None
        assert parsed.header() == header
        assert not parsed.sampled

    def test_a_later_version_may_carry_more_fields(self) -> None:
        """A version it does not know is read for its first four fields, as the spec says."""
        assert TraceParent.parse(f"01-{TRACE_ID}-{SPAN_ID}-01-what-comes") is not None

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "garbage",
            f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # uppercase hex
            f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
            f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
            f"ff-{TRACE_ID}-{SPAN_ID}-01",  # the forbidden version
            f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has exactly four fields
            f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",  # a short trace id
        ],
    )
    def test_an_invalid_header_is_ignored(self, header: str) -> None:
        """Anything else is None: the request starts a trace of its own."""
        assert TraceParent.parse(header) is None
        assert trace_id_of(header) is None


class TestIds:
    """Trace ids, and the span id a decision's span has."""

    def test_a_decisions_span_id_is_derived_from_its_id(self) -> None:
        """The same decision id always gives the same 16 hex digits; another, others."""
        first = span_id_for("d-000001")
        assert first == span_id_for("d-000001")
        assert first != span_id_for("d-000002")
        assert TraceParent.parse(f"00-{TRACE_ID}-{first}-01") is not None

    def test_new_trace_ids_are_valid_and_distinct(self) -> None:
        """A random trace id is a W3C trace id; two are never the same."""
        made = {new_trace_id() for _ in range(100)}
        assert len(made) == 100
        assert all(is_trace_id(trace_id) for trace_id in made)

    @pytest.mark.parametrize("value", [None, 7, "run-42", "0" * 32, TRACE_ID.upper()])
    def test_other_values_are_not_trace_ids(self, value: object) -> None:
        """A free-form `trace_id` stays in the ledger but names no W3C trace."""
        assert not is_trace_id(value)
