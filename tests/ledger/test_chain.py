"""Entries, the hash chain, checkpoints, and detection of any single tamper."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from _tamper import AT, SEED_KEY, Row, apply, build, checkpoint, rehash
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.canonical import canonical_bytes
from charter.ledger import (
    GENESIS,
    CheckpointError,
    EventError,
    NewEvent,
    ProblemCode,
    SignedCheckpoint,
    chain_hash,
    entry_content,
    generate_signing_key,
    key_id,
    leaf_hash,
    link_entries,
    load_private_key,
    load_public_key,
    prepare_event,
    private_key_pem,
    public_key_pem,
    verify_chain,
    verify_checkpoint,
)


class TestEntries:
    @given(
        st.integers(min_value=1, max_value=2**40),
        st.text(max_size=8),
        st.text(max_size=8),
        st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=3),
    )
    def test_content_is_canonical_json(
        self, seq: int, kind: str, at: str, payload: dict[str, Any]
    ) -> None:
        """An entry's content is the canonical JSON of its four fields."""
        expected = canonical_bytes({"seq": seq, "kind": kind, "at": at, "payload": payload})
        assert entry_content(seq, kind, at, canonical_bytes(payload)) == expected

    def test_link_numbers_and_chains(self) -> None:
        """Linked entries continue the seq and each chains onto the one before."""
        events = [prepare_event(NewEvent("decision", AT, {"n": n})) for n in range(3)]
        first = link_entries(GENESIS, events[:2])
        second = link_entries(replace(GENESIS, seq=2, chain_hash=first[-1].chain_hash), events[2:])
        assert [entry.seq for entry in first + second] == [1, 2, 3]
        assert verify_chain(first + second).ok
        assert second[0].payload_object() == {"n": 2}

    @settings(max_examples=200)
    @given(
        st.integers(min_value=0, max_value=2**40),
        st.lists(
            st.tuples(
                st.sampled_from(["decision", "outcome", "approval.opened"]),
                st.sampled_from([AT, "2025-01-31T09:30:00.123456Z", "2030-12-31T23:59:59Z"]),
                st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
            ),
            max_size=6,
        ),
    )
    def test_linked_hashes_are_those_of_the_content(
        self, start: int, events: list[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """Each linked entry's leaf hashes its content and its chain hash links the one before."""
        prepared = [prepare_event(NewEvent(kind, at, payload)) for kind, at, payload in events]
        head = replace(GENESIS, seq=start, chain_hash="ab" * 32)
        previous = head.chain_hash
        for entry in link_entries(head, prepared):
            content = entry_content(entry.seq, entry.kind, entry.at, entry.payload.encode())
            assert entry.leaf_hash == leaf_hash(content)
            assert entry.chain_hash == chain_hash(previous, entry.leaf_hash)
            previous = entry.chain_hash

    def test_a_kind_is_checked_every_time(self) -> None:
        """A well-formed kind seen before does not let a malformed one or a non-string through."""
        prepare_event(NewEvent("decision", AT, {}))
        for kind in ("Decision", "decision ", 7, None):
            with pytest.raises(EventError, match="kind"):
                prepare_event(NewEvent(kind, AT, {}))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("event", "match"),
        [
            (NewEvent("Decision", AT, {}), "kind"),
            (NewEvent("", AT, {}), "kind"),
            (NewEvent("decision", "2025-01-31 09:30:00", {}), "time"),
            (NewEvent("decision", "2025-01-31T09:30:00+01:00", {}), "time"),
            (NewEvent("decision", AT, [1]), "object"),  # type: ignore[arg-type]
            (NewEvent("decision", AT, {"x": float("nan")}), r"\$\.x"),
        ],
    )
    def test_bad_events_are_refused(self, event: NewEvent, match: str) -> None:
        """A malformed kind, a non-UTC or non-RFC 3339 time or a bad payload is refused."""
        with pytest.raises(EventError, match=match):
            prepare_event(event)


class TestVerifyChain:
    def test_empty_ledger_is_ok(self) -> None:
        """No rows verify as an empty ledger at genesis."""
        report = verify_chain([])
        assert report.ok
        assert report.head == GENESIS

    def test_report_carries_count_and_head(self) -> None:
        """A good ledger reports its length and last chain hash."""
        rows = build(5)
        report = verify_chain(rows)
        assert (report.ok, report.count, report.head.chain_hash) == (True, 5, rows[-1].chain_hash)

    def test_bytes_payloads_are_accepted(self) -> None:
        """Rows may hold their payload as bytes, as some drivers return it."""
        rows = build(3)
        for row in rows:
            row.payload = row.payload.encode()  # type: ignore[assignment]
        assert verify_chain(rows).ok

    def test_canonical_check_can_be_skipped(self) -> None:
        """With the canonical check off, a rehashed non-canonical payload passes."""
        rows = build(3)
        rows[1].payload = '{"n": 2}'
        for position in range(1, 3):
            rehash(rows, position)
        assert verify_chain(rows, check_canonical=False).ok
        assert verify_chain(rows).problem.code == ProblemCode.NOT_CANONICAL  # type: ignore[union-attr]

    def test_malformed_rows_are_reported(self) -> None:
        """A row with a field of the wrong type is a `malformed` problem, not a crash."""
        rows = build(3)
        rows[1].kind = None  # type: ignore[assignment]
        problem = verify_chain(rows).problem
        assert problem is not None
        assert (problem.code, problem.seq) == (ProblemCode.MALFORMED, 2)

    def test_problem_prints_location_and_code(self) -> None:
        """A problem reads `entry N: code: message`."""
        rows = build(3)
        rows[1].payload = "{}"
        assert str(verify_chain(rows).problem).startswith("entry 2: edited: ")

    def test_unsigned_checkpoint_is_still_compared(self) -> None:
        """Without a key the checkpoint's size and root are compared, but not its signature."""
        rows = build(4)
        report = verify_chain(rows[:3], checkpoint=checkpoint(rows))
        assert report.problem is not None
        assert report.problem.code == ProblemCode.TRUNCATED
        assert not report.signature_checked


TAMPERS = ["edit", "edit_hash", "delete", "delete_renumber", "insert", "insert_renumber", "swap"]


@st.composite
def tampered(draw: st.DrawFn) -> tuple[list[Row], str, int]:
    size = draw(st.integers(min_value=2, max_value=25))
    kind = draw(st.sampled_from(TAMPERS))
    seq = draw(st.integers(min_value=1, max_value=size - 1))  # a cut tail needs a checkpoint
    return build(size), kind, seq


class TestAnySingleTamper:
    @settings(max_examples=300, deadline=None)
    @given(tampered())
    def test_detected_at_the_right_entry(self, case: tuple[list[Row], str, int]) -> None:
        """Any single edit, deletion, insertion or swap is reported at the entry it hit."""
        rows, kind, seq = case
        expected = {
            "edit": ProblemCode.EDITED,
            "edit_hash": ProblemCode.EDITED,
            "delete": ProblemCode.DELETED,
            "delete_renumber": ProblemCode.DELETED,
            "insert": ProblemCode.INSERTED,
            "insert_renumber": ProblemCode.INSERTED,
            "swap": ProblemCode.REORDERED,
        }[kind]
        forged = '{"forged":true}'
        ops: dict[str, list[dict[str, Any]]] = {
            "edit": [{"op": "set", "seq": seq, "field": "payload", "value": forged}],
            "edit_hash": [{"op": "set", "seq": seq, "field": "leaf_hash", "value": "ab" * 32}],
            "delete": [{"op": "delete", "seq": seq}],
            "delete_renumber": [{"op": "delete", "seq": seq}, {"op": "renumber"}],
            "insert": [{"op": "insert", "position": seq, "seq": seq, "payload": forged}],
            "insert_renumber": [
                {"op": "insert", "position": seq - 1, "seq": seq, "payload": forged},
                {"op": "renumber"},
            ],
            "swap": [{"op": "swap_contents", "seqs": [seq, seq + 1]}],
        }
        for op in ops[kind]:
            apply(rows, op)
        problem = verify_chain(rows).problem
        assert problem is not None
        assert (problem.code, problem.seq) == (expected, seq), str(problem)


class TestCheckpoints:
    def test_sign_and_verify(self) -> None:
        """A signed checkpoint verifies with its key and round-trips through a dict."""
        signed = checkpoint(build(4))
        verify_checkpoint(SEED_KEY.public_key(), signed)
        assert SignedCheckpoint.from_dict(signed.to_dict()) == signed

    def test_other_key_or_changed_field_fails(self) -> None:
        """Another key, or any changed field, fails verification."""
        signed = checkpoint(build(4))
        with pytest.raises(CheckpointError, match="signed by key"):
            verify_checkpoint(generate_signing_key().public_key(), signed)
        moved = replace(signed, checkpoint=replace(signed.checkpoint, tree_size=5))
        with pytest.raises(CheckpointError, match="does not verify"):
            verify_checkpoint(SEED_KEY.public_key(), moved)

    def test_keys_load_from_pem_and_raw(self) -> None:
        """Keys load from PEM or raw 32 bytes and keep their id."""
        key = generate_signing_key()
        public = key.public_key()
        raw_private = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for loaded in (load_private_key(private_key_pem(key)), load_private_key(raw_private)):
            assert key_id(loaded.public_key()) == key_id(public)
        for loaded_public in (load_public_key(public_key_pem(public)), load_public_key(raw_public)):
            assert key_id(loaded_public) == key_id(public)

    def test_bad_key_data_is_refused(self) -> None:
        """Data that is no Ed25519 key raises `CheckpointError`."""
        with pytest.raises(CheckpointError):
            load_private_key(b"not a key")
        with pytest.raises(CheckpointError):
            load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
