"""The embedded gateway when its database goes away: `StoreUnavailable`, then back.

`Charter.decide` (and every call that needs the store) raises `StoreUnavailable` while
the database is lost: a `LedgerError` whose `verdict` is `deny` and whose `reason` is
"store unavailable", with nothing recorded. The SDK's embedded client turns it into
`CharterUnavailable(denied=True)`, which no governed action runs on, even failing open.
When the database returns, the same gateway works again with no restart.

The PostgreSQL tests run on a server of this module's own, which they stop and start;
the SQLite one fills the "disk" of a child process (`RLIMIT_FSIZE`), so that the limit
touches nothing of the test run. What counts as an outage is checked on real drivers'
errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from _postgres import Cluster, private_cluster
from charter import Charter, load_bundle
from charter.errors import LedgerError, StoreUnavailable
from charter.examples import EXAMPLE_POLICY
from charter.sdk import CharterUnavailable, EmbeddedClient, governed
from charter.service import Principal
from charter.store._opening import unavailable
from charter.testing import make_charter

RECOVERY = 15.0  # seconds the database may take to be usable again once it runs
WHY = {"confidence": 0.9, "rationale": "the parcel arrived damaged"}
FINANCE = Principal("key_a", "reviewer", name="alice@example.com", groups=("finance",))


def refund(order: int, amount: float = 40) -> dict[str, Any]:
    """A refund `support-bot` may make alone (40), or one that needs finance (2500)."""
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{order}", "amount": amount, "currency": "USD"},
        "context": WHY,
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """This module's own PostgreSQL server, which its tests may stop and start."""
    yield from private_cluster()


@pytest.fixture
def charter(cluster: Cluster) -> Iterator[Charter]:
    """A gateway on a fresh ledger of the module's server, running again afterwards."""
    with make_charter(load_bundle(EXAMPLE_POLICY), cluster.database()) as opened:
        try:
            yield opened
        finally:
            assert cluster.data is not None
            if not (cluster.data / "postmaster.pid").exists():
                cluster.resume()


def until_it_decides(charter: Charter, order: int) -> str:
    """The id of the first decision that commits once the database is back."""
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            return charter.decide(refund(order)).id
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class TestEmbeddedGateway:
    """`Charter` itself: each call that needs the store fails closed, then works again."""

    def test_decide_raises_a_deny_that_records_nothing(
        self, charter: Charter, cluster: Cluster
    ) -> None:
        """`StoreUnavailable` is a ledger error that says `deny`, "store unavailable"."""
        charter.decide(refund(1))
        head = charter.store.head().seq
        cluster.halt()
        with pytest.raises(StoreUnavailable) as raised:
            charter.decide(refund(2))
        error = raised.value
        assert isinstance(error, LedgerError)
        assert (error.code, error.verdict, error.reason) == (
            "store_unavailable",
            "deny",
            "store unavailable",
        )
        assert error.message.startswith("store unavailable: ")
        with pytest.raises(StoreUnavailable):
            asyncio.run(charter.decide_async(refund(3)))
        with pytest.raises(StoreUnavailable):
            charter.decide(refund(4), idempotency_key="k-4")
        with pytest.raises(StoreUnavailable):
            charter.decide(refund(5, amount=2500))  # would open an approval
        cluster.resume()
        until_it_decides(charter, 6)
        assert charter.store.head().seq == head + 1  # the refused ones left nothing behind
        assert charter.approvals() == []  # nor an approval nobody could act on

    def test_every_step_recovers_and_nothing_acknowledged_is_lost(
        self, charter: Charter, cluster: Cluster
    ) -> None:
        """Redeem, outcome, approve and catch-up fail closed, then work; the ledger verifies."""
        allowed = charter.decide(refund(10))
        reported = charter.decide(refund(11))
        pending = charter.decide(refund(12, amount=2500))
        assert pending.approval is not None
        approval = str(pending.approval["id"])
        grant = allowed.grant
        assert grant is not None
        cluster.halt()
        with pytest.raises(StoreUnavailable):
            charter.redeem(grant.id, grant.token, refund(10)["args"])
        with pytest.raises(StoreUnavailable):
            charter.record_outcome(reported.id, success=True)
        with pytest.raises(StoreUnavailable):
            charter.catch_up()
        cluster.resume()

        after = until_it_decides(charter, 13)
        assert charter.writer_problem() is None
        charter.redeem(grant.id, grant.token, refund(10)["args"])
        charter.record_outcome(reported.id, success=True)
        charter.catch_up()
        assert charter.approve(approval, FINANCE).state == "approved"
        report = charter.verify()
        assert report.ok, report.problem
        acknowledged = [allowed.id, reported.id, pending.id, after]
        assert [i for i in acknowledged if charter.get_decision(i) is not None] == acknowledged


class TestReplayAfterAnOutage:
    """What decisions refused during the outage leave in the service's folded state."""

    def test_the_recorded_state_replays_after_refused_decisions(
        self, charter: Charter, cluster: Cluster
    ) -> None:
        """Replay finds each decision after the outage recorded the state the ledger gives."""
        charter.decide(refund(30))
        cluster.halt()
        for order in (31, 32):
            with pytest.raises(StoreUnavailable):
                charter.decide(refund(order))
        cluster.resume()
        until_it_decides(charter, 33)
        assert charter.replay().state.differing == 0


class TestEmbeddedClient:
    """The SDK on an embedded gateway whose database is lost: the action never runs."""

    def test_a_governed_action_does_not_run_even_failing_open(
        self, charter: Charter, cluster: Cluster
    ) -> None:
        """`denied` overrides `fail_open`: Charter was asked, and it said `deny`."""
        ran: list[str] = []
        client = EmbeddedClient(charter, fail_open=True)

        @governed("payments.refund", client=client, agent="support-bot", context=WHY)
        def refund_it(order_id: str, amount: float, currency: str) -> str:
            ran.append(order_id)
            return order_id

        assert refund_it("ord-20", 40, "USD") == "ord-20"
        cluster.halt()
        with pytest.raises(CharterUnavailable) as raised:
            refund_it("ord-21", 40, "USD")
        assert raised.value.denied
        assert "store unavailable" in raised.value.message
        assert (ran, client.stats.failed_open) == (["ord-20"], 0)
        cluster.resume()
        until_it_decides(charter, 22)
        assert refund_it("ord-23", 40, "USD") == "ord-23"


#: A child process that fills its own "disk" under an embedded gateway on SQLite.
_DISK_FULL = textwrap.dedent(
    """
    import json, resource, signal, sys
    from charter import load_bundle
    from charter.errors import StoreUnavailable
    from charter.examples import EXAMPLE_POLICY
    from charter.testing import make_charter

    def refund(order):
        return {"agent": "support-bot", "action": "payments.refund",
                "args": {"order_id": f"ord-{order}", "amount": 40, "currency": "USD"},
                "context": {"confidence": 0.9, "rationale": "damaged"}}

    said = {}
    with make_charter(load_bundle(EXAMPLE_POLICY), sys.argv[1]) as charter:
        said["before"] = charter.decide(refund(1)).id
        # The disk is full: every write to a file fails (EFBIG, not the signal).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
        try:
            charter.decide(refund(2))
        except StoreUnavailable as error:
            said["during"] = [error.code, error.verdict, error.reason, error.message]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        said["after"] = charter.decide(refund(3)).id
        said["ok"] = charter.verify().ok
        said["kept"] = [
            i for i in (said["before"], said["after"])
            if charter.store.decision_row(decision_id=i) is not None
        ]
        said["count"] = charter.store.head().seq
    print(json.dumps(said))
    """
)


class TestSQLiteDiskFull:
    """SQLite losing its file's writes (a full disk) fails closed too, and recovers."""

    def test_a_full_disk_denies_then_decisions_resume(self, tmp_path: Path) -> None:
        """The append that cannot be written is `StoreUnavailable`; the next one commits."""
        done = subprocess.run(
            [sys.executable, "-c", _DISK_FULL, str(tmp_path / "charter.db")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        said = json.loads(done.stdout.strip().splitlines()[-1])
        code, verdict, reason, message = said["during"]
        assert (code, verdict, reason) == ("store_unavailable", "deny", "store unavailable")
        assert message.startswith("store unavailable: ")
        assert said["ok"]
        assert said["kept"] == [said["before"], said["after"]]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestWhatIsAnOutage:
    """`unavailable` tells the database being away from a request being wrong."""

    def test_a_refused_connection_is_one(self) -> None:
        """Nothing listening: psycopg's connection failure is an outage."""
        with pytest.raises(psycopg.OperationalError) as raised:
            psycopg.connect(f"postgresql://charter@127.0.0.1:{_closed_port()}/x", connect_timeout=2)
        found = unavailable(raised.value)
        assert found is not None
        assert found.message.startswith("store unavailable: ")

    def test_a_read_only_standby_is_one(self, cluster: Cluster) -> None:
        """A write refused as read-only (25006), as a standby answers after a failover."""
        with psycopg.connect(cluster.database(migrated=False), autocommit=True) as connection:
            connection.execute("SET default_transaction_read_only = on")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as raised:
                connection.execute("CREATE TABLE t (x int)")
        assert unavailable(raised.value) is not None

    @pytest.mark.parametrize(
        "statement",
        [
            "SELEC 1",  # a bug: a syntax error
            "DO $$ BEGIN RAISE EXCEPTION 'set-once: refused'; END $$",  # a trigger's refusal
        ],
    )
    def test_a_wrong_request_is_not_one(self, cluster: Cluster, statement: str) -> None:
        """The server answered, and said no: that is not the database being away."""
        with (
            psycopg.connect(cluster.database(migrated=False), autocommit=True) as connection,
            pytest.raises(psycopg.Error) as raised,
        ):
            connection.execute(statement)  # type: ignore[arg-type]
        assert unavailable(raised.value) is None

    def test_sqlite_cannot_open_or_write_is_one(self, tmp_path: Path) -> None:
        """A file that cannot be opened, or written, is an outage; a constraint is not."""
        import sqlite3  # noqa: PLC0415 - only this test needs the driver itself

        with pytest.raises(sqlite3.OperationalError) as cannot_open:
            sqlite3.connect(tmp_path / "missing" / "charter.db")
        assert unavailable(cannot_open.value) is not None
        path = tmp_path / "ro.db"
        sqlite3.connect(path).execute("CREATE TABLE t (x PRIMARY KEY)").connection.close()
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with pytest.raises(sqlite3.OperationalError) as cannot_write:
            reader.execute("INSERT INTO t VALUES (1)")
        reader.close()
        assert unavailable(cannot_write.value) is not None
        writer = sqlite3.connect(path)
        writer.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError) as refused:
            writer.execute("INSERT INTO t VALUES (1)")
        writer.close()
        assert unavailable(refused.value) is None
