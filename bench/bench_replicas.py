"""Replicas benchmark: 1 and 2 `charter serve` replicas over one durable PostgreSQL ledger.

Run: python bench/bench_replicas.py [--duration 10] [--connections 64] [--rounds 3].
Prints one table. Needs wrk (`apt-get install wrk`) and PostgreSQL's server binaries
(Debian: `apt-get install postgresql`; `CHARTER_PG_BIN` names another folder).

Starts a throwaway PostgreSQL server (bench/_postgres_cluster.py: a temporary folder,
127.0.0.1 only, durable: fsync and synchronous_commit on) and, for each run, a fresh
database: `charter migrate --store URL`, an agent key from `charter keys create`, then 1
or 2 `charter serve --store URL` replicas (one uvicorn worker each, the ledger writer in
its child process). One wrk (two threads, `--connections` in all) loads them with
`POST /v1/decisions` of `crm.note` by `support-bot` (allowed with a grant, no budget: every
request takes the same path): with 2 replicas each wrk thread is bound to one replica
(wrk's `setup` hook sets `thread.addr`), so the connections are split evenly; with 1 both
threads go to the same replica. The load generator is therefore the same in both rows,
and p50/p99 come from one histogram over every request of the run, whichever replica
answered it (not a mix of per-replica percentiles).

After each run the replicas are stopped (SIGTERM: they drain), the ledger's decision
entries are counted against the 2xx answers wrk saw (0 lost: the ledger holds at least
every acknowledged decision; a request still in flight when wrk stopped may be in the
ledger without having been counted) and `charter ledger verify --store URL` checks the
one hash chain both replicas appended to. Rounds interleave the two configurations (1
then 2, then 2 then 1, ...) since the machine is shared; the table gives the medians over
rounds and the ratio 2/1 as the median of each round's own ratio. `cpu busy` is the
whole machine's CPU use during the counted runs (every process, other users' included):
near 100% the cores, not Charter, are the limit.
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from _postgres_cluster import PostgresCluster
from charter.examples import EXAMPLE_POLICY
from charter.store import open_store

START_TIMEOUT = 60.0  # seconds a replica may take to become ready
CLI_TIMEOUT = 120  # seconds for `charter migrate`, `keys create`, `ledger verify`
STOP_TIMEOUT = 30.0  # seconds a replica may take to drain after SIGTERM

# Each thread is bound to one replica (round robin over PORTS); done() prints one JSON
# line with the figures of the whole run, from wrk's own histogram (microseconds).
WRK_SCRIPT = """
local ports = {{{ports}}}
local threads = {{}}
local index = 0

function setup(thread)
  index = index + 1
  local port = ports[(index - 1) % #ports + 1]
  thread.addr = wrk.lookup("127.0.0.1", tostring(port))[1]
  thread:set("port", port)
  table.insert(threads, thread)
end

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

function done(summary, latency, requests)
  local sent = {{}}
  for _, thread in ipairs(threads) do
    local port = tostring(thread:get("port"))
    sent[port] = (sent[port] or 0) + thread:get("counter")
  end
  local parts = {{}}
  for port, count in pairs(sent) do
    table.insert(parts, string.format('"%s":%d', port, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d,"sent":{{%s}}}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
"""


@dataclass
class Run:
    """One load run against 1 or 2 replicas, and what the ledger said after it."""

    replicas: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    acknowledged: int  # 2xx answers wrk received, warm-up included
    errors: int  # non-2xx answers and socket errors
    in_ledger: int
    chain_ok: bool
    chain: str
    sent: dict[str, int]  # requests wrk sent to each replica's port (counted run only)
    cpu_busy: float  # the machine's CPU busy during the counted run, 0-1, all cores

    @property
    def lost(self) -> int:
        return max(0, self.acknowledged - self.in_ledger)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def charter_script() -> str:
    return str(Path(sys.executable).with_name("charter"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `charter ARGS`, failing with its output when it exits non-zero."""
    result = subprocess.run(
        [charter_script(), *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise SystemExit(
            f"charter {' '.join(args[:2])} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def create_key(store: str, *options: str) -> str:
    """`charter keys create`: the secret is the only line of stdout (the rest is stderr)."""
    out = cli("keys", "create", *options, "--store", store).stdout.split()
    secrets = [word for word in out if word.startswith("chk_")]
    if len(secrets) != 1:
        raise SystemExit(f"unexpected output of charter keys create: {out!r}")
    return secrets[0]


class Replica:
    """A `charter serve --store URL` in its own process group, logging to a file."""

    def __init__(self, store: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [charter_script(), "serve", "--policy", str(EXAMPLE_POLICY), "--store", store,
                 "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"a replica exited while starting:\n{self.tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            connection.close()
            time.sleep(0.1)
        raise SystemExit(f"a replica did not become ready in {START_TIMEOUT:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        """SIGTERM (the replica drains and closes its ledger), SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # The group too: the ledger writer child must be gone before the ledger is read.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def run_wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, Any]:
    """One wrk run (two threads); the JSON line its `done` hook prints."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    match = re.search(r"^BENCH (\{.*\})$", result.stdout, re.M)
    if not match:
        raise SystemExit(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}")
    figures: dict[str, Any] = json.loads(match.group(1))
    return figures


def cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def count_decisions(store_url: str) -> int:
    store = open_store(store_url, read_only=True)
    try:
        return sum(1 for _ in store.entries(kinds=("decision",)))
    finally:
        store.close()


def one_run(
    cluster: PostgresCluster, replicas: int, args: argparse.Namespace, tmp: Path, number: int
) -> Run:
    """A fresh database, `replicas` servers on it, wrk, then the ledger counted and verified."""
    name = f"bench_{number}"
    store = cluster.create_database(name)
    cli("migrate", "--store", store)
    secret = create_key(store, "--role", "agent", "--agent", "support-bot")
    servers: list[Replica] = []
    acknowledged = errors = 0
    try:
        for i in range(replicas):
            servers.append(Replica(store, tmp / f"{name}-replica-{i}.log"))
        deadline = time.monotonic() + START_TIMEOUT
        for server in servers:
            server.wait_ready(deadline)
        script = tmp / f"{name}.lua"
        script.write_text(
            WRK_SCRIPT.format(secret=secret, ports=", ".join(str(s.port) for s in servers))
        )
        url = f"http://127.0.0.1:{servers[0].port}/v1/decisions"
        if args.warmup > 0:  # pools filled, code paths warm; counted in the ledger check
            warm = run_wrk(url, args.connections, args.warmup, script)
            acknowledged += int(warm["requests"]) - int(warm["status_errors"])
            errors += int(warm["status_errors"]) + int(warm["socket_errors"])
        busy_before, total_before = cpu_ticks()
        figures = run_wrk(url, args.connections, args.duration, script)
        busy_after, total_after = cpu_ticks()
    finally:
        for server in servers:
            server.stop()
    requests, status_errors = int(figures["requests"]), int(figures["status_errors"])
    acknowledged += requests - status_errors
    errors += status_errors + int(figures["socket_errors"])
    in_ledger = count_decisions(store)
    verified = subprocess.run(
        [charter_script(), "ledger", "verify", "--store", store],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
    )  # fmt: skip
    chain = (verified.stdout.strip() or verified.stderr.strip()).splitlines()
    with contextlib.suppress(Exception):  # a dropped database only saves disk space
        cluster.drop_database(name)
    sent: dict[str, int] = figures["sent"]
    return Run(
        replicas=replicas,
        connections=args.connections,
        rps=requests / (int(figures["duration_us"]) / 1e6),
        p50_ms=int(figures["p50_us"]) / 1000,
        p99_ms=int(figures["p99_us"]) / 1000,
        acknowledged=acknowledged,
        errors=errors,
        in_ledger=in_ledger,
        chain_ok=verified.returncode == 0,
        chain=chain[0] if chain else "",
        sent={port: int(count) for port, count in sent.items()},
        cpu_busy=(busy_after - busy_before) / max(1, total_after - total_before),
    )


def print_table(runs: dict[int, list[Run]], args: argparse.Namespace) -> None:
    header = (
        f"{'replicas':>8}  {'connections':>11}  {'decisions/s':>11}  {'p50 ms':>7}  "
        f"{'p99 ms':>7}  {'worst p99':>9}  {'acknowledged':>12}  {'in ledger':>10}  "
        f"{'lost':>4}  {'errors':>6}  {'cpu busy':>8}  chain ok"
    )
    print(header)
    print("-" * len(header))
    for replicas, rows in runs.items():
        acknowledged = sum(r.acknowledged for r in rows)
        in_ledger = sum(r.in_ledger for r in rows)
        print(
            f"{replicas:>8}  {rows[0].connections:>11}  "
            f"{statistics.median(r.rps for r in rows):>11,.0f}  "
            f"{statistics.median(r.p50_ms for r in rows):>7.2f}  "
            f"{statistics.median(r.p99_ms for r in rows):>7.2f}  "
            f"{max(r.p99_ms for r in rows):>9.2f}  {acknowledged:>12,}  {in_ledger:>10,}  "
            f"{sum(r.lost for r in rows):>4}  {sum(r.errors for r in rows):>6}  "
            f"{statistics.median(r.cpu_busy for r in rows):>8.0%}  "
            f"{'yes' if all(r.chain_ok for r in rows) else 'NO'} ({len(rows)} chains)"
        )
    ratios = [two.rps / one.rps for one, two in zip(runs[1], runs[2], strict=True) if one.rps]
    spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
    print(f"\n2 replicas / 1 replica, decisions/s: {statistics.median(ratios):.2f}x{spread}")
    lost = sum(r.lost for rows in runs.values() for r in rows)
    chains = all(r.chain_ok for rows in runs.values() for r in rows)
    print(f"zero lost {'MET' if lost == 0 else 'MISSED'}; every chain verified "
          f"{'MET' if chains else 'MISSED'}")  # fmt: skip
    for rows in runs.values():
        for r in rows:
            share = ", ".join(f"{n:,}" for n in r.sent.values())
            print(f"  {r.replicas} replica(s): {r.rps:,.0f}/s, p99 {r.p99_ms:.2f} ms, "
                  f"requests sent per replica {share}; {r.chain}")  # fmt: skip
    print(json.dumps({
        "note": "loopback; wrk (2 threads) shares the machine's cores with the replicas and "
                "PostgreSQL", "duration_s": args.duration, "rounds": args.rounds,
        "fsync": args.pg_fsync,
    }))  # fmt: skip


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # the `finally` blocks stop everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per counted run")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of load before it")
    parser.add_argument("--connections", type=int, default=64, help="in all, over the replicas")
    parser.add_argument("--rounds", type=int, default=3, help="1-replica + 2-replica pairs")
    parser.add_argument(
        "--pg-fsync", choices=("on", "off"), default="on",
        help="PostgreSQL's fsync and synchronous_commit (on: the durable ledger)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    if args.connections < 2 or args.connections % 2:
        raise SystemExit("--connections must be even: wrk's two threads share them")
    signal.signal(signal.SIGTERM, on_sigterm)
    runs: dict[int, list[Run]] = {1: [], 2: []}
    with (
        tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp,
        PostgresCluster.start(durable=args.pg_fsync == "on") as cluster,
    ):
        number = 0
        for round_ in range(args.rounds):
            for replicas in (1, 2) if round_ % 2 == 0 else (2, 1):
                number += 1
                run = one_run(cluster, replicas, args, Path(tmp), number)
                print(
                    f"round {round_ + 1}/{args.rounds}, {replicas} replica(s): "
                    f"{run.rps:,.0f}/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                    f"lost {run.lost}, chain {'ok' if run.chain_ok else 'BROKEN'}",
                    file=sys.stderr,
                )
                runs[replicas].append(run)
    print_table(runs, args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything was stopped on the way out
        raise SystemExit("interrupted") from None
