"""A replica whose database goes away fails closed, says why, and recovers by itself.

The requirement (issue #11): while its database is lost, a replica answers a decision
`deny` with the reason "store unavailable" (HTTP 503, `Retry-After`), every route that
needs the store 503 `store_unavailable`, `/readyz` 503 with the reason; nothing it
acknowledged is lost; and when the database returns it works again with no restart.

Every test here runs on a PostgreSQL server of this module's own
(`Cluster.start(private=True)`), which it stops, crashes, freezes and starts again under a
live app and gateway; the session's shared server is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from _postgres import Cluster, private_cluster
from charter import Bundle, Charter
from charter.sdk import AsyncClient, CharterUnavailable, governed
from charter.server import create_app
from charter.testing import FakeClock, make_charter

#: How long the database may take to be usable again after it starts, in seconds.
RECOVERY = 15.0
#: The most `/readyz` may take to answer while the database host is silent.
READY_BOUND = 4.0

DENIED = {"code": "store_unavailable", "message": "store unavailable"}
WHY = {"confidence": 0.9, "rationale": "customer received a damaged item"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """This module's own PostgreSQL server, which its tests may stop and start."""
    yield from private_cluster()


@pytest.fixture
def database(cluster: Cluster) -> Iterator[str]:
    """A fresh ledger on the module's server, which is running again after the test."""
    url = cluster.database()
    yield url
    if not _running(cluster):
        cluster.resume()


def _running(cluster: Cluster) -> bool:
    assert cluster.data is not None
    return (cluster.data / "postmaster.pid").exists()


@pytest.fixture
def charter(bundle: Bundle, database: str, clock: FakeClock) -> Iterator[Charter]:
    with make_charter(bundle, database, clock=clock) as opened:
        yield opened


@pytest.fixture
def reviewer(charter: Charter) -> str:
    return charter.create_key("reviewer", label="alice@example.com", groups=("finance",))[1]


def decide(client: TestClient, keys: Keys, order: int, **more: Any) -> Any:
    return client.post(
        "/v1/decisions", json=refund(order=order, **more), headers=bearer(keys.agent)
    )


def assert_denied_unrecorded(answer: Any) -> None:
    """The answer is 503 `store_unavailable`, a `deny` with no decision, grant or id."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    error = answer.json()["error"]
    assert error["code"] == "store_unavailable"
    assert error["message"].startswith("store unavailable: ")
    assert (error["verdict"], error["reasons"]) == ("deny", [DENIED])
    assert set(answer.json()) == {"error"}  # no id, seq or grant: nothing was recorded


def eventually(check: Callable[[], bool], within: float = RECOVERY) -> float:
    """Seconds until `check()` holds, polled; fails the test when it does not in time."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            pytest.fail(f"not true within {within} s")
        time.sleep(0.1)
    return time.monotonic() - started


def acknowledged_ids_in_ledger(charter: Charter, ids: list[str]) -> list[str]:
    """Which of `ids` the database's decisions index holds."""
    return [i for i in ids if charter.store.decision_row(decision_id=i) is not None]


class TestWhileTheDatabaseIsDown:
    """Stopped or crashed, the database makes every route answer 503 and decide `deny`."""

    @pytest.mark.parametrize("mode", ["immediate", "fast"])
    def test_a_decision_is_denied_and_recorded_nowhere(
        self, client: TestClient, keys: Keys, charter: Charter, cluster: Cluster, mode: str
    ) -> None:
        """A crash (`immediate`) or a shutdown (`fast`): `deny`, store unavailable, 503."""
        assert decide(client, keys, 1).status_code == 200
        cluster.halt(mode)
        assert_denied_unrecorded(decide(client, keys, 2))
        keyed = client.post(
            "/v1/decisions",
            json=refund(order=3),
            headers={**bearer(keys.agent), "Idempotency-Key": "outage-1"},
        )
        assert_denied_unrecorded(keyed)  # the idempotency index cannot be read either

    def test_a_decision_needing_people_is_denied_too(
        self, client: TestClient, keys: Keys, cluster: Cluster
    ) -> None:
        """A request that would open an approval opens none: it is denied, unrecorded."""
        cluster.halt()
        assert_denied_unrecorded(decide(client, keys, 4, amount=2500))
        assert client.get("/healthz").status_code == 200  # the process itself is alive

    def test_readyz_says_503_and_why(self, client: TestClient, cluster: Cluster) -> None:
        """Readiness names the store as the reason, and answers at once."""
        assert client.get("/readyz").status_code == 200
        cluster.halt()
        started = time.monotonic()
        answer = client.get("/readyz")
        assert time.monotonic() - started < READY_BOUND
        assert answer.status_code == 503
        assert answer.json()["status"] == "not ready"
        checks = answer.json()["checks"]
        assert checks["store"].startswith("store unavailable: ")
        assert (checks["bundle"], checks["ledger_writer"]) == ("ok", "ok")

    def test_every_route_that_needs_the_store_answers_503(
        self, client: TestClient, keys: Keys, charter: Charter, cluster: Cluster, reviewer: str
    ) -> None:
        """Redeem, outcome, reads and approval steps: 503 `store_unavailable`, never 500."""
        allowed = decide(client, keys, 5).json()
        pending = decide(client, keys, 6, amount=2500).json()
        approval = pending["approval"]["id"]
        cluster.halt()
        grant = allowed["grant"]
        answers = {
            "redeem": client.post(
                "/v1/grants/redeem",
                json={"grant_id": grant["id"], "token": grant["token"], "args": refund()["args"]},
                headers=bearer(keys.agent),
            ),
            "outcome": client.post(
                "/v1/outcomes",
                json={"decision_id": allowed["id"], "success": True},
                headers=bearer(keys.agent),
            ),
            "decision": client.get(f"/v1/decisions/{allowed['id']}", headers=bearer(keys.admin)),
            "ledger": client.get("/v1/ledger", headers=bearer(keys.admin)),
            "verify": client.get("/v1/ledger/verify", headers=bearer(keys.auditor)),
            "inbox": client.get("/v1/approvals", headers=bearer(reviewer)),
            "approve": client.post(
                f"/v1/approvals/{approval}/approve", json={}, headers=bearer(reviewer)
            ),
        }
        for route, answer in answers.items():
            assert answer.status_code == 503, (route, answer.text)
            assert answer.json()["error"]["code"] == "store_unavailable", route
            assert answer.headers["Retry-After"] == "1", route
            assert "verdict" not in answer.json()["error"], route  # only a decision is one


class TestWhenTheDatabaseReturns:
    """Started again, the database is used again by the same app: no restart."""

    def test_decisions_work_again_and_nothing_acknowledged_is_lost(
        self, client: TestClient, keys: Keys, charter: Charter, cluster: Cluster, reviewer: str
    ) -> None:
        """Decide, redeem, approve and readiness recover; the ledger verifies, whole."""
        before = [decide(client, keys, 10 + n).json() for n in range(3)]
        pending = decide(client, keys, 20, amount=2500).json()
        cluster.halt()
        refused = [decide(client, keys, 30 + n) for n in range(3)]
        for answer in refused:
            assert_denied_unrecorded(answer)
        approve = client.post(
            f"/v1/approvals/{pending['approval']['id']}/approve", json={}, headers=bearer(reviewer)
        )
        assert approve.status_code == 503
        cluster.resume()

        eventually(lambda: decide(client, keys, 40).status_code == 200)
        eventually(lambda: client.get("/readyz").status_code == 200)
        assert charter.writer_problem() is None
        after = decide(client, keys, 41)
        assert after.status_code == 200, after.text
        grant = before[0]["grant"]  # issued before the outage, redeemable after it
        redeemed = client.post(
            "/v1/grants/redeem",
            json={
                "grant_id": grant["id"],
                "token": grant["token"],
                "args": refund(order=10)["args"],
            },
            headers=bearer(keys.agent),
        )
        assert redeemed.status_code == 200, redeemed.text
        approved = client.post(
            f"/v1/approvals/{pending['approval']['id']}/approve", json={}, headers=bearer(reviewer)
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "approved"

        report = charter.verify()
        assert report.ok, report.problem
        acknowledged = [d["id"] for d in (*before, pending, after.json())]
        assert acknowledged_ids_in_ledger(charter, acknowledged) == acknowledged

    @pytest.mark.parametrize("round_", range(3))
    def test_a_crash_under_load_loses_no_acknowledged_decision(
        self, charter: Charter, keys: Keys, cluster: Cluster, round_: int
    ) -> None:
        """Decisions in flight as the server crashes: each 200 is in the ledger, the rest deny.

        The requests go through the event loop and the group-commit writer thread (no
        idempotency key: the hot path), many per transaction, while the server is killed
        (`immediate`) mid-stream and started again; each round crashes it a little later.
        """
        app = create_app(charter)

        async def run() -> list[httpx2.Response]:
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:

                async def one(order: int) -> httpx2.Response:
                    body = refund(order=1000 + order)
                    return await http.post("/v1/decisions", json=body, headers=bearer(keys.agent))

                async def stream(first: int, count: int) -> list[httpx2.Response]:
                    answers = []
                    for start in range(first, first + count, 8):
                        answers += await asyncio.gather(*(one(n) for n in range(start, start + 8)))
                    return answers

                load = asyncio.create_task(stream(0, 240))
                await asyncio.sleep(0.05 + 0.04 * round_)
                await asyncio.to_thread(cluster.halt, "immediate")
                answers = await load
                await asyncio.to_thread(cluster.resume)
                deadline = time.monotonic() + RECOVERY
                while (await one(10_000)).status_code != 200:
                    assert time.monotonic() < deadline, "decisions did not come back"
                    await asyncio.sleep(0.1)
                return answers + await stream(20_000, 16)

        answers = asyncio.run(run())
        ok = [a.json()["id"] for a in answers if a.status_code == 200]
        for answer in answers:
            if answer.status_code != 200:
                assert_denied_unrecorded(answer)
        assert ok  # some were acknowledged before the crash ...
        assert len(ok) < len(answers)  # ... and some met it
        assert charter.verify().ok
        assert acknowledged_ids_in_ledger(charter, ok) == ok


class TestTheSdkOverHttp:
    """The HTTP client reads the 503 `deny` as Charter's own answer: nothing runs."""

    def test_a_governed_coroutine_does_not_run_even_failing_open(
        self, charter: Charter, keys: Keys, cluster: Cluster
    ) -> None:
        """`CharterUnavailable(denied=True)`, and `fail_open` does not apply to it."""
        ran: list[str] = []
        client = AsyncClient(
            "http://test",
            keys.agent,
            transport=httpx2.ASGITransport(app=create_app(charter)),
            fail_open=True,
        )

        @governed("payments.refund", client=client, agent="support-bot", context=WHY)
        async def refund_it(order_id: str, amount: float, currency: str) -> str:
            ran.append(order_id)
            return order_id

        async def run() -> CharterUnavailable:
            assert await refund_it("ord-50", 40, "USD") == "ord-50"
            await asyncio.to_thread(cluster.halt)
            with pytest.raises(CharterUnavailable) as raised:
                await refund_it("ord-51", 40, "USD")
            await client.aclose()
            return raised.value

        refused = asyncio.run(run())
        assert (refused.status, refused.denied) == (503, True)
        assert "store_unavailable" in refused.message
        assert (ran, client.stats.failed_open) == (["ord-50"], 0)


class TestWhenTheDatabaseHostGoesSilent:
    """A host that answers nothing (frozen, black-holed) must not hang readiness."""

    def test_readyz_answers_within_its_bound_then_recovers(
        self, client: TestClient, cluster: Cluster
    ) -> None:
        """Frozen, the store is reported as not answering in bounded time; thawed, `ok`."""
        assert client.get("/readyz").status_code == 200
        cluster.freeze()
        try:
            for _ in range(2):  # the second poll finds the first probe still waiting
                started = time.monotonic()
                answer = client.get("/readyz")
                assert time.monotonic() - started < READY_BOUND
                assert answer.status_code == 503
                assert answer.json()["checks"]["store"].startswith(
                    "store unavailable: no answer from the database"
                )
        finally:
            cluster.thaw()
        eventually(lambda: client.get("/readyz").status_code == 200)
