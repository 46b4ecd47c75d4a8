"""`kill -9` of a server with 500 pending approvals: none lost, none fired twice.

The bundle gives two routes a 2-second SLA: `ops-review` expires (deny) and
`finance-review` moves to `finance-managers`. The server is killed with SIGKILL right
after the first deadlines start firing, stays down while the rest fall due, and a new
server fires what is overdue at start. Every approval must then have exactly one
timeout step in the ledger, and the ledger must verify: on a SQLite file, and on a
PostgreSQL database, where the database itself decides each step once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from test_uvicorn import free_port

from charter import Charter, load_bundle
from charter.examples import EXAMPLE_POLICY

SLA = 2  # seconds
COUNT = 500


@pytest.fixture
def policy(tmp_path: Path) -> Path:
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


class Process:
    """A `charter serve` in its own process group, killed at the end whatever happens."""

    def __init__(self, policy: Path, db: str) -> None:
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
                db,
                "--port",
                str(self.port),
                "--max-pending",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError("the server did not become ready within 20 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def servers() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for server in started:
        server.kill()


def test_no_approval_is_lost_or_fired_twice_across_kill_9(
    policy: Path, store_target: str, servers: list[Process]
) -> None:
    db = store_target
    with Charter(policy, db) as setup:
        support = setup.create_key("agent", agent="support-bot")[1]
        infra = setup.create_key("agent", agent="infra-bot")[1]
    first = Process(policy, db)
    servers.append(first)

    def ask(n: int) -> str:
        if n % 2:
            body = {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {"order_id": f"ord-{n}", "amount": 2500, "currency": "USD"},
                "context": {"rationale": "customer sent photos of the damage"},
            }
            key = support
        else:
            body = {
                "agent": "infra-bot",
                "action": "infra.scale",
                "args": {"service": f"svc-{n}", "replicas": 0},
                "context": {"rationale": "the service is being retired"},
            }
            key = infra
        answer = client.post(
            f"{first.url}/v1/decisions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["approval"]["state"] == "pending"
        return str(answer.json()["id"])

    opened = time.monotonic()
    with httpx2.Client() as client, ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(ask, range(COUNT)))
    assert len(set(ids)) == COUNT
    # Kill while the timers are firing: the first deadlines have passed, later ones not.
    time.sleep(max(0.0, opened + SLA + 0.3 - time.monotonic()))
    first.kill()
    time.sleep(SLA + 0.5)  # every remaining deadline falls due while the server is down

    second = Process(policy, db)  # fires everything overdue before it serves
    servers.append(second)
    second.kill()  # a second kill -9 straight after must not double-fire anything either

    with Charter(load_bundle(policy), db) as charter:
        assert charter.verify().ok
        fired = charter.fire_due()  # anything still due (nothing, if the restart did it)
        steps = Counter()
        per_decision: Counter[str] = Counter()
        for entry in charter.store.entries():
            if entry.kind in ("approval.expired", "approval.escalated"):
                payload = entry.payload_object()
                steps[entry.kind] += 1
                per_decision[payload["decision_id"]] += 1
        assert fired == [] or all(v.approval["tier"] == 1 for v in fired)
        assert set(per_decision) == set(ids), "an approval's deadline was lost"
        assert max(per_decision.values()) == 1, "a deadline fired twice"
        assert steps == {"approval.expired": COUNT // 2, "approval.escalated": COUNT // 2}
        assert charter.count_approvals(state="expired") == COUNT // 2
        # the escalated ones wait on finance-managers (1 h): pending, at tier 1
        tiers = {v.approval["tier"] for v in charter.approvals(state="pending", limit=500)}
        assert tiers == {1}
