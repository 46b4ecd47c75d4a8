"""Approvals benchmark: the inbox with 10,000 pending, and a reviewer's click to the agent.

Run: python bench/bench_approvals.py [--pending 10000] [--clicks 40]. Prints one table.

1. Inbox: fills a temporary SQLite ledger with `--pending` approvals (refunds that need
   finance, spread over four agents), then times, in-process and server-side only, the
   first page of `GET /v1/approvals` and of the reviewer UI's inbox (`GET /ui/`, signed
   in), each rendered `--repeat` times.
2. Click to return: starts `charter serve` on a loopback port, and for each of `--clicks`
   pending decisions an agent thread blocks in the SDK (`Client.wait`, the long poll) while
   a reviewer approves over HTTP; the figure is the time from sending the approve request
   to the agent's call returning with the approved decision.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
from starlette.testclient import TestClient

from charter import Charter
from charter.examples import EXAMPLE_POLICY
from charter.server import create_app

TARGET_INBOX_MS = 300.0
TARGET_CLICK_MS = 200.0
AGENTS = ("support-bot", "support-bot-trainee")


def refund(n: int) -> dict[str, Any]:
    return {
        "agent": AGENTS[n % len(AGENTS)],
        "action": "payments.refund",
        "args": {"order_id": f"ord-{n}", "amount": 1500 + n % 5000, "currency": "USD"},
        "context": {"confidence": 0.8, "rationale": "damaged in transit, photos attached"},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def inbox(folder: Path, pending: int, repeat: int) -> list[tuple[str, str, str]]:
    """Time the API's and the UI's first inbox page with `pending` approvals open."""
    db = folder / "inbox.db"
    start = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    ticks = iter(range(10**9))

    def clock() -> dt.datetime:
        return start + dt.timedelta(milliseconds=next(ticks))

    rows: list[tuple[str, str, str]] = []
    with Charter(EXAMPLE_POLICY, db, clock=clock, max_pending=pending) as charter:
        began = time.perf_counter()
        for first in range(0, pending, 500):
            charter.decide_many([refund(n) for n in range(first, min(pending, first + 500))])
        filled = time.perf_counter() - began
        assert charter.count_approvals() == pending
        rows.append((f"open {pending:,} approvals (decide_many, durable)", f"{filled:.1f} s", ""))
        secret = charter.create_key("reviewer", label="alice@example.com", groups=("finance",))[1]
        with TestClient(create_app(charter)) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            targets = [("GET /v1/approvals (first 50)", "/v1/approvals?limit=50", headers)]
            form = client.get("/ui/signin").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            signed_in = client.post(
                "/ui/signin",
                data={"key": secret, "csrf": token.group(1) if token else ""},
                follow_redirects=False,
            )
            if signed_in.status_code == 303:
                targets.append(("GET /ui/ inbox (signed in)", "/ui/", {}))
            else:
                rows.append(("GET /ui/ inbox", "the UI sign-in failed", f"{signed_in.status_code}"))
            for name, path, extra in targets:
                times = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    answer = client.get(path, headers=extra)
                    times.append((time.perf_counter() - t) * 1000)
                    assert answer.status_code == 200, answer.text[:300]
                p50 = statistics.median(times)
                p99 = percentile(times, 0.99)
                verdict = "MET" if p99 <= TARGET_INBOX_MS else "MISSED"
                rows.append((name, f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", f"<= 300 ms {verdict}"))
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(sdk: Any, decision_id: str, ready: threading.Event, returned: list[float]) -> None:
    """The agent: block in the SDK until the decision settles, note when it returned."""
    ready.set()
    status = sdk.wait(decision_id, timeout=30)
    returned.append(time.perf_counter())
    assert status.state == "approved", status


def clicks(folder: Path, count: int) -> list[tuple[str, str, str]]:
    """Time a reviewer's approve request to the waiting SDK call's return."""
    from charter import Client  # noqa: PLC0415 - the SDK client, as an agent uses it

    db = folder / "clicks.db"
    with Charter(EXAMPLE_POLICY, db) as setup:
        agent = setup.create_key("agent", agent="support-bot")[1]
        reviewer = setup.create_key("reviewer", label="alice@example.com", groups=("finance",))[1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        ["timeout", "300", sys.executable, "-m", "charter", "serve", "--policy",
         str(EXAMPLE_POLICY), "--db", str(db), "--port", str(port), "--max-pending", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.05)
        times: list[float] = []
        with Client(url, api_key=agent) as sdk, httpx2.Client(base_url=url) as http:
            for n in range(count):
                decided = http.post(
                    "/v1/decisions",
                    json=refund(2 * n),
                    headers={"Authorization": f"Bearer {agent}"},
                ).json()
                returned: list[float] = []
                ready = threading.Event()
                waiter = threading.Thread(target=_wait, args=(sdk, decided["id"], ready, returned))
                waiter.start()
                ready.wait()
                time.sleep(0.05)  # the waiter's long poll is in flight
                clicked = time.perf_counter()
                approved = http.post(
                    f"/v1/approvals/{decided['approval']['id']}/approve",
                    headers={"Authorization": f"Bearer {reviewer}"},
                )
                assert approved.status_code == 200, approved.text
                waiter.join(30)
                times.append((returned[0] - clicked) * 1000)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    p50 = statistics.median(times)
    verdict = "MET" if p50 <= TARGET_CLICK_MS else "MISSED"
    return [
        (
            f"approve click → SDK wait() returns ({count} clicks)",
            f"p50 {p50:.1f} ms, p99 {percentile(times, 0.99):.1f} ms",
            f"p50 <= 200 ms {verdict}",
        )
    ]


def main() -> None:
    """Run both measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=40)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="charter-bench-approvals-"))
    try:
        rows = inbox(folder, options.pending, options.repeat) + clicks(folder, options.clicks)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'bench_approvals':<{width}}  {'figure':<32}  target")
    for name, figure, target in rows:
        print(f"{name:<{width}}  {figure:<32}  {target}")


if __name__ == "__main__":
    main()
