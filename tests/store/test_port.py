"""The storage port's contract, on every store: a SQLite file and a PostgreSQL database.

Appends, lookups, paging, bundles, checkpoints, raw tampering and the group-commit
writer behave the same whichever adapter holds the ledger. What only one adapter has
(SQLite's kept connections, pragmas and file locks; PostgreSQL's migrations and
sequencer) is tested in test_sqlite_store.py and test_postgres.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
from sqlalchemy.exc import IntegrityError

from _raw import drop_triggers, raw
from charter.ledger import (
    GENESIS,
    EventError,
    LedgerEntry,
    NewEvent,
    ProblemCode,
    chain_hash,
    generate_signing_key,
    verify_chain,
)
from charter.store import (
    BundleConflictError,
    GroupCommitWriter,
    IndexChange,
    LedgerStore,
    StoreError,
    checkpoint_store,
    open_store,
    verify_store,
)

AT = "2025-01-31T09:30:00Z"


def event(n: int, kind: str = "decision") -> NewEvent:
    return NewEvent(kind, AT, {"n": n, "verdict": "allow", "context": {"confidence": 0.82}})


@pytest.fixture
def store(store_target: str) -> Iterator[LedgerStore]:
    with open_store(store_target) as opened:
        yield opened


def refuse_kind(target: str, kind: str) -> None:
    """Make the database refuse (as an integrity error) any ledger row of `kind`."""
    with raw(target) as connection:
        if "://" not in target:
            connection.execute(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON ledger_entries"
                f" WHEN NEW.kind = '{kind}' BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
            return
        connection.execute(
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.kind = '{kind}' THEN"
            " RAISE EXCEPTION 'boom' USING ERRCODE = 'integrity_constraint_violation';"
            " END IF; RETURN NEW; END $$"
        )
        connection.execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON ledger_entries"
            " FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
        )


class TestOpen:
    def test_reopening_keeps_data_and_log_id(self, store_target: str) -> None:
        """Entries, bundles and the log id survive closing and reopening.

        A SQLite file is reopened by its `sqlite:///` URL: the same file.
        """
        with open_store(store_target, log_id="log-a") as first:
            first.append([event(1), event(2)])
            first.put_bundle("v1", b"bundle")
        again = store_target if "://" in store_target else f"sqlite:///{store_target}"
        with open_store(again) as second:
            assert second.log_id == "log-a"
            assert second.count() == 2
            assert second.get_bundle("v1") == b"bundle"
            assert verify_store(second).ok

    def test_log_id_mismatch_is_refused(self, store_target: str) -> None:
        """Opening an existing store under another log id is an error."""
        open_store(store_target, log_id="log-a").close()
        with pytest.raises(StoreError, match="`log-a`"):
            open_store(store_target, log_id="log-b")


class TestAppend:
    def test_assigns_contiguous_seqs_and_chains(self, store: LedgerStore) -> None:
        """Batches continue the seq from the head and chain onto it."""
        first = store.append([event(1), event(2)])
        second = store.append([event(3)])
        assert [entry.seq for entry in first + second] == [1, 2, 3]
        assert second[0].chain_hash == chain_hash(first[-1].chain_hash, second[0].leaf_hash)
        assert store.head().chain_hash == second[0].chain_hash

    def test_empty_batch_writes_nothing(self, store: LedgerStore) -> None:
        """Appending no events is a no-op."""
        assert store.append([]) == []
        assert store.head() == GENESIS

    def test_bad_event_leaves_nothing(self, store: LedgerStore) -> None:
        """A batch with one unencodable payload writes none of its events."""
        store.append([event(1)])
        bad = NewEvent("decision", AT, {"x": float("inf")})
        with pytest.raises(EventError):
            store.append([event(2), bad])
        assert store.count() == 1

    def test_failing_insert_rolls_back_the_batch(
        self, store: LedgerStore, store_target: str
    ) -> None:
        """If the database refuses one row mid-batch, the rows before it are rolled back."""
        store.append([event(1)])
        refuse_kind(store_target, "boom")
        with pytest.raises(IntegrityError):
            store.append([event(2), event(3), event(4, kind="boom")])
        assert store.count() == 1
        assert verify_store(store).ok

    def test_try_append_appends_when_nobody_holds_the_lock(self, store: LedgerStore) -> None:
        """With the database free, `try_append` is `append`."""
        store.append([event(1)])
        entries = store.try_append([event(2)])
        assert entries is not None
        assert [e.seq for e in entries] == [2]
        assert verify_store(store).ok


class TestDecisionRow:
    def test_lookups_see_commits_from_every_connection(
        self, store: LedgerStore, store_target: str
    ) -> None:
        """Lookups read what this store, and anyone else, committed last."""
        values = {"agent": "a", "action": "crm.note", "verdict": "allow", "grant_id": "g-1"}
        store.append([event(1)], [IndexChange("d-1", values, insert=True)])
        row = store.decision_row(grant_id="g-1")
        assert row is not None
        assert (row["id"], row["redeemed_seq"]) == ("d-1", None)
        with raw(store_target) as connection:
            connection.execute("UPDATE decisions SET redeemed_seq = 7 WHERE id = 'd-1'")
        again = store.decision_row(decision_id="d-1")
        assert again is not None
        assert again["redeemed_seq"] == 7


class TestEntries:
    def test_streams_in_pages(self, store: LedgerStore) -> None:
        """More entries than one page stream in seq order, with `after` and `limit`."""
        for start in range(0, 2500, 500):
            store.append([event(n) for n in range(start, start + 500)])
        assert [e.seq for e in store.entries()] == list(range(1, 2501))
        assert [e.seq for e in store.entries(after=998, limit=1003)] == list(range(999, 2002))
        assert list(store.entries(after=2500)) == []

    def test_filters_by_kind(self, store: LedgerStore) -> None:
        """`kinds` keeps only entries of those kinds."""
        store.append([event(1), event(2, "outcome"), event(3, "halt"), event(4)])
        assert [e.seq for e in store.entries(kinds={"outcome", "halt"})] == [2, 3]


class TestBundles:
    def test_stored_once(self, store: LedgerStore, store_target: str) -> None:
        """Putting the same bundle twice stores one row; other content is a conflict."""
        store.put_bundle("sha256:b", b"two")
        store.put_bundle("sha256:a", b"one")
        store.put_bundle("sha256:a", b"one")
        with raw(store_target) as connection:
            assert connection.execute("SELECT count(*) FROM bundles").fetchone()[0] == 2
        assert store.bundle_versions() == ["sha256:a", "sha256:b"]
        assert store.get_bundle("sha256:missing") is None
        with pytest.raises(BundleConflictError, match="`sha256:a`"):
            store.put_bundle("sha256:a", b"other")


class TestCheckpoints:
    def test_checkpoint_then_truncate_is_detected(
        self, store: LedgerStore, store_target: str
    ) -> None:
        """A signed checkpoint makes a deleted tail show up as `truncated`."""
        key = generate_signing_key()
        store.append([event(n) for n in range(10)])
        signed = checkpoint_store(store, key, at=AT)
        assert store.latest_checkpoint() == signed
        assert verify_store(store, key.public_key()).ok
        store.append([event(10)])
        assert verify_store(store, key.public_key()).ok
        drop_triggers(store_target, "ledger_entries")
        with raw(store_target) as connection:
            connection.execute("DELETE FROM ledger_entries WHERE seq > 8")
        report = verify_store(store, key.public_key())
        assert report.problem is not None
        assert (report.problem.code, report.problem.seq) == (ProblemCode.TRUNCATED, 9)

    def test_one_checkpoint_per_size(self, store: LedgerStore) -> None:
        """A second checkpoint of the same size is refused."""
        key = generate_signing_key()
        checkpoint_store(store, key, at=AT)
        with pytest.raises(StoreError, match="`0`"):
            checkpoint_store(store, key, at=AT)


class TestTamperViaSQL:
    @pytest.mark.parametrize(
        ("statements", "code", "seq"),
        [
            (["UPDATE ledger_entries SET payload = '{\"n\":0}' WHERE seq = 5"], "edited", 5),
            (["UPDATE ledger_entries SET kind = 'outcome' WHERE seq = 1"], "edited", 1),
            (["DELETE FROM ledger_entries WHERE seq = 7"], "deleted", 7),
            (["UPDATE ledger_entries SET chain_hash = leaf_hash WHERE seq = 3"], "chain_broken", 3),
            (
                [
                    "UPDATE ledger_entries SET seq = -4 WHERE seq = 4",
                    "UPDATE ledger_entries SET seq = 4 WHERE seq = 5",
                    "UPDATE ledger_entries SET seq = 5 WHERE seq = -4",
                ],
                "reordered",
                4,
            ),
        ],
        ids=["payload", "kind", "deleted", "chain", "reordered"],
    )
    def test_raw_sql_tampering_is_detected(
        self,
        store: LedgerStore,
        store_target: str,
        statements: list[str],
        code: str,
        seq: int,
    ) -> None:
        """With the triggers dropped, any raw edit is found by `verify_store`."""
        store.append([event(n) for n in range(10)])
        drop_triggers(store_target, "ledger_entries")
        with raw(store_target) as connection:
            for statement in statements:
                connection.execute(statement)
        report = verify_store(store)
        assert report.problem is not None
        assert (report.problem.code, report.problem.seq) == (code, seq)


class TestGroupCommitWriter:
    def test_many_threads_get_contiguous_verified_entries(self, store: LedgerStore) -> None:
        """Events from 16 threads commit with contiguous seqs and a chain that verifies."""
        results: list[LedgerEntry] = []
        lock = threading.Lock()

        def work(writer: GroupCommitWriter, worker: int) -> None:
            futures = [writer.submit(event(worker * 1000 + n)) for n in range(50)]
            entries = [future.result() for future in futures]
            with lock:
                results.extend(entries)

        with GroupCommitWriter(store, max_batch=64) as writer:
            threads = [threading.Thread(target=work, args=(writer, w)) for w in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(entry.seq for entry in results) == list(range(1, 801))
        assert verify_chain(store.entries()).ok
        by_seq = {entry.seq: entry for entry in results}
        assert all(by_seq[e.seq] == e for e in store.entries())

    def test_bad_event_fails_only_its_caller(self, store: LedgerStore) -> None:
        """A malformed event raises in `submit` and does not reach the batch."""
        with GroupCommitWriter(store) as writer:
            good = writer.submit(event(1))
            with pytest.raises(EventError):
                writer.submit(NewEvent("decision", "yesterday", {}))
            assert good.result().seq == 1

    def test_failed_commit_reaches_every_waiter(
        self, store: LedgerStore, store_target: str
    ) -> None:
        """When a batch's commit fails, each of its futures carries the error."""
        refuse_kind(store_target, "boom")
        writer = GroupCommitWriter(store, max_batch=512)
        futures: list[Future[LedgerEntry]] = [writer.submit(event(9, kind="boom"))]
        writer.close()
        with pytest.raises(IntegrityError):
            futures[0].result()

    def test_closed_writer_refuses_events(self, store: LedgerStore) -> None:
        """Submitting after `close` raises `StoreError`; closing twice is fine."""
        writer = GroupCommitWriter(store)
        writer.close()
        writer.close()
        with pytest.raises(StoreError, match="closed"):
            writer.submit(event(1))


class Watched:
    """The real store, noting which thread ran each append (and how many there were)."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.appends: list[str] = []

    def append(self, *args: object, **kwargs: object) -> list[LedgerEntry]:
        self.appends.append(threading.current_thread().name)
        return self.store.append(*args, **kwargs)  # type: ignore[arg-type]

    def try_append(self, *args: object, **kwargs: object) -> list[LedgerEntry] | None:
        entries = self.store.try_append(*args, **kwargs)  # type: ignore[arg-type]
        if entries is not None:
            self.appends.append(threading.current_thread().name)
        return entries

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


class TestAwaitedAppends:
    """An append its caller waits for at once commits on the caller's thread when idle."""

    def test_an_awaited_append_on_an_idle_writer_commits_on_the_callers_thread(
        self, store: LedgerStore
    ) -> None:
        watched = Watched(store)
        with GroupCommitWriter(watched) as writer:  # type: ignore[arg-type]
            first = writer.submit(event(1), awaited=True)
            assert first.done()  # answered before `submit` returned
            assert first.result().seq == 1
            group = writer.submit_many([(event(2), None), (event(3), None)], awaited=True)
            assert [f.result().seq for f in group] == [2, 3]
        assert watched.appends == [threading.current_thread().name] * 2
        assert verify_store(store).ok

    def test_appends_queued_together_still_share_a_transaction(self, store: LedgerStore) -> None:
        """Queue-then-wait callers (not awaited) keep group commit: a few transactions."""
        watched = Watched(store)
        with GroupCommitWriter(watched) as writer:  # type: ignore[arg-type]
            futures = [writer.submit(event(n)) for n in range(60)]
            assert [f.result(timeout=10).seq for f in futures] == list(range(1, 61))
        assert len(watched.appends) < 20
        assert set(watched.appends) == {"charter-ledger-writer"}
