"""HTTP benchmark: `POST /v1/decisions` on a real `charter serve`, loaded by wrk.

Run: python bench/bench_server.py [--duration 10] [--connections 1 32] [--rounds 3].
Prints one table.

The yardstick is a bare Starlette `GET /ping` answering a small JSON body, served by
uvicorn with the same settings as `charter serve` (one worker, uvloop, httptools, no
access log) in its own process, loaded by the same wrk at the same connection count,
interleaved with the decision runs in one run: the ratio of the two is the figure, since
the machine is shared and absolute rates move from run to run. Each connection count runs
`--rounds` such pairs; the table gives the medians and the ratios' range.

Starts `charter serve` (one uvicorn worker, SQLite ledger with synchronous=FULL) on a free
loopback port in a temporary folder, loads it with wrk (Debian's `wrk`; `apt-get install
wrk`; one wrk thread) for each connection count, then stops the server and checks that the
ledger holds at least every decision wrk saw acknowledged (zero lost). Finally it times the
grant redeem + outcome round trip, one at a time: with the standard library's HTTP client
(the figure: what the server takes), then through the SDK's `charter.Client` (httpx2 adds
its own time per request on top).

wrk's requests are `crm.note` for `support-bot` in the example policy: each is allowed and
carries a grant, and no budget runs out, so every one takes the same path for the whole run
(refunds would exhaust their hourly budget after 40 and then pile up approvals until the
per-agent cap answers 429).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

import charter
from charter.examples import EXAMPLE_POLICY
from charter.service import KeyRing, system_clock
from charter.store import open_store

TARGET_RATIO = 0.5  # decisions/s over the same-run Starlette /ping requests/s, 32 connections
TARGET_P99_MS = 10.0
TARGET_P50_ONE_MS = 0.45
TARGET_ROUND_TRIP_MS = 2.0

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {secret}"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{{"agent":"support-bot","action":"crm.note","args":{{"customer_id":"cus-%d",' ..
    '"text":"refund of %d USD for a damaged item, photo attached"}},' ..
    '"context":{{"confidence":0.9,"rationale":"keeping the customer record current"}}}}',
    counter, 20 + counter % 300)
  return wrk.format(nil, nil, nil, body)
end
"""


PING_SERVER = """
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def ping(request):
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/ping", ping)])
# The settings `charter serve` passes to uvicorn (src/charter/server/_run.py).
uvicorn.run(
    app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, log_level="warning",
    access_log=False, server_header=False, proxy_headers=False,
)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def charter_script() -> str:
    return str(Path(sys.executable).with_name("charter"))


def wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def parse_wrk(text: str) -> dict[str, float]:
    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "total": float(total.group(1)) if total else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
    }


ROUND_TRIP_CONTEXT = {"confidence": 0.9, "rationale": "keeping the customer record current"}


def round_trip_args(label: str, i: int) -> dict[str, str]:
    return {"customer_id": f"{label}-{i}", "text": "called back about the damaged item"}


def raw_round_trips(port: int, secret: str, count: int) -> list[float]:
    """Milliseconds for redeem + outcome after an allowed decision, one at a time.

    The client is the standard library's `http.client` on one keep-alive connection:
    it adds the least of its own to what is measured, which is the server's round trip.
    """
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(path: str, body: dict[str, object]) -> tuple[int, bytes]:
        connection.request("POST", path, json.dumps(body).encode(), headers)
        response = connection.getresponse()
        return response.status, response.read()

    timings = []
    try:
        for i in range(count):
            args = round_trip_args("raw", i)
            status, body = post(
                "/v1/decisions",
                {"agent": "support-bot", "action": "crm.note", "args": args,
                 "context": ROUND_TRIP_CONTEXT},
            )  # fmt: skip
            decided = json.loads(body)
            if status != 200 or not decided.get("grant"):
                raise SystemExit(f"the round trip's decision was not allowed: {body!r}")
            grant = decided["grant"]
            start = time.perf_counter()
            redeemed = post(
                "/v1/grants/redeem",
                {"grant_id": grant["id"], "token": grant["token"], "args": args},
            )
            reported = post("/v1/outcomes", {"decision_id": decided["id"], "success": True})
            timings.append((time.perf_counter() - start) * 1000)
            if redeemed[0] != 200 or reported[0] != 200:
                raise SystemExit(f"redeem or outcome failed: {redeemed!r} {reported!r}")
    finally:
        connection.close()
    return timings


def sdk_round_trips(base: str, secret: str, count: int) -> list[float]:
    """The same round trip through the SDK's `charter.Client` (over httpx2)."""
    timings = []
    with charter.Client(base, secret) as client:
        for i in range(count):
            args = round_trip_args("sdk", i)
            decided = client.decide("support-bot", "crm.note", args, context=ROUND_TRIP_CONTEXT)
            if decided.grant is None:
                raise SystemExit(f"the round trip's decision was not allowed: {decided!r}")
            start = time.perf_counter()
            client.redeem(decided.grant, args)
            client.report_outcome(decided.id, success=True)
            timings.append((time.perf_counter() - start) * 1000)
    return timings


def round_trip_row(label: str, timings: list[float], target: bool) -> tuple[str, str, str, str]:
    p50 = statistics.median(timings)
    p99 = sorted(timings)[max(0, int(len(timings) * 0.99) - 1)]
    verdict = "MET" if p50 <= TARGET_ROUND_TRIP_MS else "MISSED"
    return (
        label,
        f"{p50:.2f} ms p50",
        f"p99 {p99:.2f} ms, n={len(timings)}",
        f"<= {TARGET_ROUND_TRIP_MS} ms p50 {verdict}" if target else "(for reference)",
    )


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>16}  {'detail':<44}  target")
    print(f"{'-' * width}  {'-' * 16}  {'-' * 44}  {'-' * 30}")
    for label, value, detail, target in rows:
        print(f"{label:<{width}}  {value:>16}  {detail:<44}  {target}")
    print(json.dumps({"note": "loopback; wrk shares the machine's cores with the server"}))


def run_wrk(url: str, connections: int, duration: int, script: Path | None) -> dict[str, float]:
    """One wrk run (one thread: a second takes CPU from the server on a 2-core machine)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    result = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration + 30
    )
    return parse_wrk(result.stdout)


def start_server(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over interleaved rounds (errors: their sum)."""
    out = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    out["non2xx"] = sum(run["non2xx"] for run in runs)
    return out


def load_rows(
    connections: int, pings: list[dict[str, float]], decides: list[dict[str, float]]
) -> list[tuple[str, str, str, str]]:
    """The /ping row and the decisions row for one connection count, with the ratio.

    The ratio is the median of each round's own ratio: a round's two runs are seconds
    apart, so they share whatever else the machine was doing.
    """
    ping, decide = median_run(pings), median_run(decides)
    ratios = [d["rps"] / p["rps"] if p["rps"] else 0.0 for p, d in zip(pings, decides, strict=True)]
    ratio = statistics.median(ratios)
    spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    if connections >= 32:
        met = ratio >= TARGET_RATIO and decide["p99"] <= TARGET_P99_MS and not decide["non2xx"]
        target = (
            f">= {TARGET_RATIO}x /ping, p99 <= {TARGET_P99_MS:.0f} ms, 0 errors "
            f"{'MET' if met else 'MISSED'}"
        )
    elif connections == 1:
        met = decide["p50"] <= TARGET_P50_ONE_MS
        target = f"p50 <= {TARGET_P50_ONE_MS} ms {'MET' if met else 'MISSED'}"
    else:
        target = ""
    return [
        (
            f"GET /ping (bare Starlette), {connections} connection(s)",
            f"{ping['rps']:,.0f}/s",
            f"p50 {ping['p50']:.2f} ms, p99 {ping['p99']:.2f} ms",
            "(the yardstick)",
        ),
        (
            f"POST /v1/decisions, {connections} connection(s)",
            f"{decide['rps']:,.0f}/s",
            f"{ratio:.2f}x /ping{spread}; p50 {decide['p50']:.2f} ms, p99 {decide['p99']:.2f} ms, "
            f"errors {int(decide['non2xx'])}",
            target,
        ),
    ]


def load(
    args: argparse.Namespace, ping_url: str, decide_url: str, script: Path
) -> tuple[list[tuple[str, str, str, str]], int]:
    """The load rows for every connection count, and how many decisions wrk saw acked."""
    rows: list[tuple[str, str, str, str]] = []
    acked = 0
    for connections in args.connections:
        # Interleaved: the yardstick, then the decisions, at the same connection count.
        pings, decides = [], []
        for _ in range(args.rounds):
            pings.append(run_wrk(ping_url, connections, args.duration, None))
            decide = run_wrk(decide_url, connections, args.duration, script)
            acked += int(decide["total"] - decide["non2xx"])
            decides.append(decide)
        rows += load_rows(connections, pings, decides)
    return rows, acked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved /ping + decisions runs per count"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "server.db"
        store = open_store(db)
        try:
            _, secret = KeyRing(store, system_clock).create("admin", label="bench")
        finally:
            store.close()
        script = Path(tmp) / "decide.lua"
        script.write_text(WRK_SCRIPT.format(secret=secret))
        ping_script = Path(tmp) / "ping_server.py"
        ping_script.write_text(PING_SERVER)
        port, ping_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        ping_url = f"http://127.0.0.1:{ping_port}/ping"
        server = start_server(
            [charter_script(), "serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db),
             "--port", str(port)]
        )  # fmt: skip
        ping_server = start_server([sys.executable, str(ping_script), str(ping_port)])
        acked = 0
        try:
            wait_ready(f"{base}/readyz", time.monotonic() + 30)
            wait_ready(ping_url, time.monotonic() + 30)
            loaded, acked = load(args, ping_url, f"{base}/v1/decisions", script)
            rows += loaded
            rows.append(
                round_trip_row(
                    "redeem + outcome round trip",
                    raw_round_trips(port, secret, args.round_trips),
                    target=True,
                )
            )
            rows.append(
                round_trip_row(
                    "  the same through charter.Client",
                    sdk_round_trips(base, secret, args.round_trips),
                    target=False,
                )
            )
        finally:
            stop_server(ping_server)
            stop_server(server)
        store = open_store(db)
        try:
            recorded = sum(1 for _ in store.entries(kinds=("decision",)))
        finally:
            store.close()
        recorded -= 2 * args.round_trips  # the round trips' own decisions
        lost = max(0, acked - recorded)
        rows.append(
            (
                "ledger after the runs",
                f"{recorded:,} decisions",
                f"{acked:,} acknowledged by wrk, {lost} lost",
                "zero lost " + ("MET" if lost == 0 else "MISSED"),
            )
        )
    print_table(rows)


if __name__ == "__main__":
    main()
