"""The ledger's explicit transaction: staged appends and their index changes commit together.

On each store: a SQLite file and a PostgreSQL database.
"""

from __future__ import annotations

import pytest

from charter.ledger import EventError, NewEvent
from charter.store import IndexChange, SetOnceConflict, StoreError, open_store, verify_store

AT = "2025-01-31T09:30:00Z"


def decided(decision_id: str) -> IndexChange:
    return IndexChange(decision_id, {"agent": "a", "action": "x", "verdict": "allow"}, insert=True)


def test_staged_appends_commit_together_with_their_index_changes(store_target: str) -> None:
    """Nothing is visible inside the block; after it, every entry and every row is."""
    with open_store(store_target) as store:
        with store.transaction() as txn:
            txn.append(NewEvent("decision", AT, {"n": 1}), decided("d-1"))
            txn.append(NewEvent("note", AT, {"n": 2}))
            txn.append(NewEvent("decision", AT, {"n": 3}), decided("d-3"))
            assert store.count() == 0
            assert txn.entries == []
        assert [e.seq for e in txn.entries] == [1, 2, 3]
        assert store.count() == 3
        assert store.decision_row(decision_id="d-3")["seq"] == 3  # type: ignore[index]
        assert verify_store(store).ok


def test_an_exception_in_the_block_writes_nothing(store_target: str) -> None:
    """Leaving the block by an exception aborts the transaction."""
    with open_store(store_target) as store:

        def change_of_mind() -> None:
            with store.transaction() as txn:
                txn.append(NewEvent("decision", AT, {"n": 1}), decided("d-1"))
                raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError):
            change_of_mind()
        assert store.count() == 0
        assert store.decision_row(decision_id="d-1") is None


def test_a_refused_write_refuses_the_whole_transaction(store_target: str) -> None:
    """One index change the database refuses (a second outcome) and no entry is written."""
    with open_store(store_target) as store:
        store.append([NewEvent("decision", AT, {"n": 1})], [decided("d-1")])
        outcome = IndexChange("d-1", {"outcome_success": True}, seq_column="outcome_seq")
        store.append([NewEvent("outcome", AT, {"n": 2})], [outcome])

        def second_outcome() -> None:
            with store.transaction() as txn:
                txn.append(NewEvent("decision", AT, {"n": 3}), decided("d-3"))
                txn.append(NewEvent("outcome", AT, {"n": 4}), outcome)

        with pytest.raises(SetOnceConflict):
            second_outcome()
        assert store.count() == 2
        assert store.decision_row(decision_id="d-3") is None


def test_a_malformed_event_refuses_the_whole_transaction(store_target: str) -> None:
    """Every staged event is checked before anything is written."""
    with open_store(store_target) as store:

        def with_a_bad_time() -> None:
            with store.transaction() as txn:
                txn.append(NewEvent("decision", AT, {"n": 1}))
                txn.append(NewEvent("decision", "yesterday", {"n": 2}))

        with pytest.raises(EventError):
            with_a_bad_time()
        assert store.count() == 0


def test_a_committed_transaction_takes_no_more(store_target: str) -> None:
    """Staging after the commit is an error, not a silent drop."""
    with open_store(store_target) as store:
        with store.transaction() as txn:
            txn.append(NewEvent("decision", AT, {"n": 1}))
        with pytest.raises(StoreError, match="committed"):
            txn.append(NewEvent("decision", AT, {"n": 2}))
        assert store.count() == 1


def test_a_read_only_store_opens_no_transaction(store_target: str) -> None:
    """A reader refuses to stage writes at all."""
    open_store(store_target).close()
    with (
        open_store(store_target, read_only=True) as store,
        pytest.raises(StoreError, match="read-only"),
    ):
        store.transaction()
