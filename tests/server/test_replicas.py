"""Two real `charter serve` replicas on one PostgreSQL database behave as one Charter.

Each test starts two server processes on a fresh database of the session's throwaway
PostgreSQL server and talks to them over HTTP, as a load balancer's clients would:
what one replica records or settles is in force on the other within a second, a grant
and an idempotency key are honoured once whichever replica is asked, an approval's
deadline fires once however many replicas time it (even with one killed mid-firing),
and a replica killed with `kill -9` in the middle of a burst loses nothing it
acknowledged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest
from test_uvicorn import free_port

from _postgres import Cluster
from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store, verify_store

SLA = 2  # seconds, for the deadline test's routes
START = 30.0  # seconds a replica may take to become ready


class Replica:
    """A `charter serve --store URL` in its own process group, killed at the end."""

    def __init__(self, policy: Path, store: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "charter",
                "serve",
                "--policy",
                str(policy),
                "--store",
                store,
                "--port",
                str(self.port),
                "--max-pending",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the replica exited while starting"
            try:
                if httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"the replica did not become ready within {START:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Cluster2:
    """Two replicas, the keys to call them with, and the database they share."""

    def __init__(self, store: str, policy: Path) -> None:
        self.store = store
        self.policy = policy
        with Charter(policy, store) as setup:
            self.agent = setup.create_key("agent", agent="support-bot")[1]
            self.infra = setup.create_key("agent", agent="infra-bot")[1]
            self.reviewer = setup.create_key(
                "reviewer", label="alice@example.com", groups=("finance",)
            )[1]
        self.replicas: list[Replica] = []
        self.a = self.start()
        self.b = self.start()

    def start(self) -> Replica:
        replica = Replica(self.policy, self.store)
        self.replicas.append(replica)
        return replica

    def stop(self) -> None:
        for replica in self.replicas:
            replica.kill()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refund(amount: float, order: str) -> dict[str, Any]:
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": order, "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "customer sent photos of the damage"},
    }


NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


def short_slas(tmp_path: Path) -> Path:
    """The example policy with the review routes' SLAs cut to `SLA` seconds."""
    folder = tmp_path / "policy"
    shutil.copytree(EXAMPLE_POLICY, folder)
    routes = folder / "routes.yaml"
    text = routes.read_text()
    text = text.replace(
        "    sla: 2h\n    on_timeout: deny", f"    sla: {SLA}s\n    on_timeout: deny"
    )
    text = text.replace("    sla: 4h\n", f"    sla: {SLA}s\n")
    routes.write_text(text)
    return folder


@pytest.fixture
def pair(postgres: Cluster) -> Iterator[Cluster2]:
    """Two replicas of the example policy on a fresh database; the chain verifies after."""
    two = Cluster2(postgres.database(), EXAMPLE_POLICY)
    try:
        yield two
    finally:
        two.stop()
    with open_store(two.store, read_only=True) as store:
        assert verify_store(store).ok


def stored_decisions(store: str) -> set[str]:
    with open_store(store, read_only=True) as reader:
        return {e.payload_object()["decision_id"] for e in reader.entries(kinds={"decision"})}


def test_an_approval_settled_on_one_replica_wakes_a_long_poll_on_the_other(
    pair: Cluster2,
) -> None:
    with httpx2.Client(timeout=30) as client:
        opened = client.post(
            f"{pair.a.url}/v1/decisions", json=refund(2500, "ord-1"), headers=bearer(pair.agent)
        )
        assert opened.status_code == 200, opened.text
        decision_id, approval_id = opened.json()["id"], opened.json()["approval"]["id"]
        answered: dict[str, Any] = {}

        def long_poll() -> None:
            answer = httpx2.get(
                f"{pair.b.url}/v1/decisions/{decision_id}",
                params={"wait": 20},
                headers=bearer(pair.agent),
                timeout=30,
            )
            answered["at"] = time.monotonic()
            answered["body"] = answer.json()

        waiter = threading.Thread(target=long_poll)
        waiter.start()
        time.sleep(0.5)  # the long poll is held on b
        assert "at" not in answered
        approved = client.post(
            f"{pair.a.url}/v1/approvals/{approval_id}/approve", headers=bearer(pair.reviewer)
        )
        assert approved.status_code == 200, approved.text
        settled_at = time.monotonic()
        waiter.join(timeout=25)
        assert answered["body"]["state"] == "approved"
        assert answered["at"] - settled_at < 1.0, "the long poll on b woke late"


def test_a_halt_from_any_process_is_in_force_on_both_replicas_within_a_second(
    pair: Cluster2,
) -> None:
    with httpx2.Client(timeout=30) as client:

        def verdict(replica: Replica) -> str:
            answer = client.post(
                f"{replica.url}/v1/decisions", json=NOTE, headers=bearer(pair.agent)
            )
            assert answer.status_code == 200, answer.text
            return str(answer.json()["verdict"])

        assert verdict(pair.a) == verdict(pair.b) == "allow"
        with Charter(EXAMPLE_POLICY, pair.store) as operator:  # a third process's halt
            operator.halt("agent", "support-bot", reason="runaway notes", by="ops")
            halted = time.monotonic()
            for replica in (pair.a, pair.b):
                while verdict(replica) != "deny":
                    assert time.monotonic() - halted < 1.0, "a replica still allows"
                    time.sleep(0.01)
            operator.resume("agent", "support-bot", by="ops")
            resumed = time.monotonic()
            for replica in (pair.a, pair.b):
                while verdict(replica) != "allow":
                    assert time.monotonic() - resumed < 1.0, "a replica still denies"
                    time.sleep(0.01)


def test_a_grant_and_an_idempotency_key_are_honoured_once_across_replicas(
    pair: Cluster2,
) -> None:
    with httpx2.Client(timeout=30) as client:
        key = {"Idempotency-Key": "note-1", **bearer(pair.agent)}
        first = client.post(f"{pair.a.url}/v1/decisions", json=NOTE, headers=key)
        again = client.post(f"{pair.b.url}/v1/decisions", json=NOTE, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        other = client.post(
            f"{pair.b.url}/v1/decisions",
            json={**NOTE, "args": {**NOTE["args"], "text": "something else"}},
            headers=key,
        )
        assert other.status_code == 422, other.text
        assert other.json()["error"]["code"] == "idempotency_conflict"

        grant = first.json()["grant"]
        redeem = {"grant_id": grant["id"], "token": grant["token"], "args": NOTE["args"]}
        used = client.post(
            f"{pair.a.url}/v1/grants/redeem", json=redeem, headers=bearer(pair.agent)
        )
        assert used.status_code == 200, used.text
        twice = client.post(
            f"{pair.b.url}/v1/grants/redeem", json=redeem, headers=bearer(pair.agent)
        )
        assert twice.status_code == 409, twice.text
    assert len(stored_decisions(pair.store)) == 1


def test_a_deadline_fires_once_across_replicas_even_with_one_killed(
    postgres: Cluster, tmp_path: Path
) -> None:
    """Each of 200 approvals times out once, though both replicas time them all.

    Approvals are opened on both replicas; one is killed with `kill -9` while the
    deadlines fire, and the other fires what is left.
    """
    count = 200
    two = Cluster2(postgres.database(), short_slas(tmp_path))
    try:

        def ask(n: int) -> str:
            replica = two.a if n % 2 else two.b
            if n % 4 < 2:
                body, key = refund(2500, f"ord-{n}"), two.agent
            else:
                body = {
                    "agent": "infra-bot",
                    "action": "infra.scale",
                    "args": {"service": f"svc-{n}", "replicas": 0},
                    "context": {"rationale": "the service is being retired"},
                }
                key = two.infra
            answer = client.post(f"{replica.url}/v1/decisions", json=body, headers=bearer(key))
            assert answer.status_code == 200, answer.text
            assert answer.json()["approval"]["state"] == "pending"
            return str(answer.json()["id"])

        opened = time.monotonic()
        with httpx2.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(ask, range(count)))
        time.sleep(max(0.0, opened + SLA + 0.3 - time.monotonic()))
        two.a.kill()  # while the timers fire: b takes over the rest
        deadline = time.monotonic() + SLA + 10
        steps: Counter[str] = Counter()
        while time.monotonic() < deadline:
            steps = Counter()
            with open_store(two.store, read_only=True) as reader:
                for entry in reader.entries(kinds={"approval.expired", "approval.escalated"}):
                    steps[entry.payload_object()["decision_id"]] += 1
            if set(steps) == set(ids):
                break
            time.sleep(0.2)
        assert set(steps) == set(ids), f"{len(set(ids) - set(steps))} deadlines never fired"
        assert max(steps.values()) == 1, "a deadline fired twice"
    finally:
        two.stop()
    with open_store(two.store, read_only=True) as store:
        assert verify_store(store).ok


@pytest.mark.parametrize("round_", range(3))
def test_a_replica_killed_mid_burst_loses_nothing_it_acknowledged(
    pair: Cluster2, round_: int
) -> None:
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst(replica: Replica) -> None:
        with httpx2.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = client.post(
                        f"{replica.url}/v1/decisions", json=NOTE, headers=bearer(pair.agent)
                    )
                except httpx2.HTTPError:
                    if replica.process.poll() is not None:
                        return  # killed: nothing more to ask of it
                    continue
                if answer.status_code == 200:
                    with lock:
                        acknowledged.append(str(answer.json()["id"]))

    threads = [threading.Thread(target=burst, args=(r,)) for r in (pair.a, pair.b) for _ in (1, 2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0 + 0.3 * round_)
        pair.a.kill()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(acknowledged) > 50
    missing = set(acknowledged) - stored_decisions(pair.store)
    assert not missing, f"{len(missing)} acknowledged decisions are not in the ledger"
