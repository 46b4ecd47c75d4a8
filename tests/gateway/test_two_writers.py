"""Two gateways on one database: a grant still runs once, an outcome is still recorded once.

Each gateway checks its own view before it queues a redemption; two processes can both
see a grant unused. The database has the last word (it refuses the second write), and the
gateway that lost answers as if it had seen the redemption: refused, and recorded.

SQLite only: the second gateway's write is held in flight, after its check, by freezing
its writer process (a SQLite file's) behind the file's write lock; PostgreSQL has no such
process to freeze. The database's refusal itself is tested on PostgreSQL too
(tests/store/test_set_once.py), and what the gateway makes of it is the same code.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from charter import Charter
from charter.errors import Conflict, GrantRefused
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store, verify_store

REQUEST = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


def in_thread(call: Any) -> Future[Any]:
    """Run `call` in a thread; its result (or error) in a future."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


@pytest.fixture
def two(tmp_path: Path) -> Any:
    """Gateway `first` (thread writer) and `second` (writer process) on one database."""
    db = tmp_path / "shared.db"
    with (
        Charter(EXAMPLE_POLICY, db) as first,
        Charter(EXAMPLE_POLICY, db, writer="process") as second,
    ):
        yield first, second
    with open_store(db) as store:
        assert verify_store(store).ok


def frozen_while(second: Charter, call: Any) -> Future[Any]:
    """Start `call` on `second` so that its entry waits, uncommitted, in its frozen writer.

    The database's write lock is held meanwhile, so the call cannot commit on its own
    thread either (as an idle writer lets it) and hands its entry to the writer process.
    """
    pid = second._writer.pid  # type: ignore[attr-defined]
    other = sqlite3.connect(second.store.engine.url.database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    os.kill(pid, signal.SIGSTOP)
    try:
        pending = in_thread(call)
        threading.Event().wait(0.3)  # it has checked, and queued its entry to the child
        assert not pending.done()
    except BaseException:
        os.kill(pid, signal.SIGCONT)
        raise
    finally:
        other.execute("ROLLBACK")
        other.close()
    return pending


def thaw(second: Charter) -> None:
    os.kill(second._writer.pid, signal.SIGCONT)  # type: ignore[attr-defined]


def test_a_grant_redeemed_by_both_runs_once(two: Any) -> None:
    first, second = two
    record = first.decide(REQUEST)
    assert record.grant is not None
    grant, args = record.grant, REQUEST["args"]
    late = frozen_while(second, lambda: second.redeem(grant.id, grant.token, args))
    first.redeem(grant.id, grant.token, args)  # commits while the other is in flight
    thaw(second)
    with pytest.raises(GrantRefused) as refused:
        late.result(timeout=30)
    assert refused.value.code == "grant_used"
    kinds = [entry.kind for entry in first.store.entries()]
    assert kinds.count("grant.redeemed") == 1
    assert kinds.count("grant.refused") == 1
    view = first.get_decision(record.id)
    assert view is not None
    assert view.state == "redeemed"


def test_an_outcome_reported_to_both_is_recorded_once(two: Any) -> None:
    first, second = two
    record = first.decide(REQUEST)
    late = frozen_while(second, lambda: second.record_outcome(record.id, success=False))
    first.record_outcome(record.id, success=True)
    thaw(second)
    with pytest.raises(Conflict, match="already has an outcome"):
        late.result(timeout=30)
    kinds = [entry.kind for entry in first.store.entries()]
    assert kinds.count("outcome") == 1
    view = first.get_decision(record.id)
    assert view is not None
    assert view.row["outcome_success"] is True
