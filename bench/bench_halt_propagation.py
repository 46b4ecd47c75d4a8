"""Halt propagation between replicas: how soon a halt is in force on the others.

Run: python bench/bench_halt_propagation.py [--halts 50] [--modes notify killed silent].
Prints one table. Needs PostgreSQL's server binaries (Debian: `apt-get install
postgresql`; `CHARTER_PG_BIN` names another folder).

Starts a throwaway PostgreSQL server (bench/_postgres_cluster.py: a temporary folder,
127.0.0.1 only, durable), one migrated database and two `charter serve --store URL`
replicas on it, A and B. `charter serve` has no HTTP route for halts (they are
`Charter.halt` / `Charter.resume`), so the halt is appended by an operator: a `Charter`
on the same database in this process, as an operator's script would, which neither
replica wrote. Both replicas learn of it the same way, by following the ledger, so both
are measured. Each round:

1. both replicas are polled with `POST /v1/decisions` (`crm.note` by `support-bot`), one
   thread and one keep-alive connection per replica, a request every `--poll-ms` (2 ms)
   at most (each is a durable decision, so a poll takes a round trip of a ledger append);
2. after a random pause (so that the halt lands anywhere in the followers' 0.25 s tick),
   the operator halts `support-bot` (`Charter.halt`, which returns once the halt is
   committed);
3. each replica's propagation time is from the moment `halt` returned (the halt is durable
   and acknowledged) to the arrival of the first `deny` whose reasons cite `halted`;
   the halt's own commit time is printed apart, so "from just before the halt was sent"
   is the sum of the two;
4. the operator resumes, and the time to the first `allow` on each replica is measured the
   same way (the "resume" rows); the next round starts once both allow again.

Modes (interleaved round by round, since the machine is shared):

- `notify`: as is: each append sends `NOTIFY charter_ledger`; a replica's listener
  (`application_name = 'charter-listener'`) wakes its follower at once.
- `killed`: right before the halt every listener connection is ended with
  `pg_terminate_backend` (through a superuser connection; the count ended is checked > 0
  each round). The listener wakes the follower when its connection drops and again once
  it has reconnected (0.1 s later), so this measures those wake-ups, not the poll.
- `silent`: every listener's server process is stopped (SIGSTOP) before the pause, and
  resumed (SIGCONT) once the round is over. The connection stays up but no notification
  arrives, as with a connection black-holed by the network: nothing wakes the follower
  and propagation rests on its 0.25 s poll alone (the timer restarts at each wake-up, and
  the polls' own appends woke it until the stop, so the halt lands anywhere in the tick).
  Checked each round: the listeners' processes were stopped (count > 0) and still were
  when the replicas denied. The resume rows of this mode are always close to a whole
  tick: the resume follows the tick that showed the halt.

Every figure includes the round trip of the poll that saw the change (a durable decision:
an agent learns of a halt from a deny the ledger holds) and up to one more (a poll in
flight when the change arrived answers as before); the table prints that round trip.

Target: max <= 1 s in every mode.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from _postgres_cluster import PostgresCluster
from charter import Charter
from charter.examples import EXAMPLE_POLICY

TARGET_MAX_MS = 1000.0
START_TIMEOUT = 60.0  # seconds a replica may take to become ready
CLI_TIMEOUT = 120  # seconds for `charter migrate` and `keys create`
STOP_TIMEOUT = 30.0  # seconds a replica may take to drain after SIGTERM
WAIT_TIMEOUT = 5.0  # seconds a replica may take to show a halt or resume before it counts as lost
LISTENER = "charter-listener"  # the application_name of the replicas' LISTEN connections

NOTE = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "cus-1", "text": "called back about the damaged item"},
    "context": {"confidence": 0.9, "rationale": "keeping the customer record current"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def charter_script() -> str:
    return str(Path(sys.executable).with_name("charter"))


def cli(*args: str) -> str:
    """Run `charter ARGS` and return its stdout, failing with its output on an error."""
    result = subprocess.run(
        [charter_script(), *args], capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise SystemExit(
            f"charter {' '.join(args[:2])} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


class Replica:
    """A `charter serve --store URL` in its own process group, logging to a file."""

    def __init__(self, name: str, store: str, log: Path) -> None:
        self.name = name
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
                raise SystemExit(f"replica {self.name} exited while starting:\n{self.tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    connection.close()
                    return
            connection.close()
            time.sleep(0.1)
        raise SystemExit(f"replica {self.name} was not ready in {START_TIMEOUT:.0f} s")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        """SIGTERM (the replica drains), SIGKILL if it hangs; its whole group at the end."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Seen:
    """The first answer of the awaited verdict: when it arrived, and how many polls it took."""

    at: float | None  # perf_counter() when it arrived; None if it never did
    polls: int
    poll_ms: float  # mean round trip of one poll
    unexpected: str = ""  # a deny that did not cite a halt, or an error answer


class Poller:
    """Decisions on one replica, one keep-alive connection, at most one per `interval`."""

    def __init__(self, replica: Replica, secret: str, interval: float) -> None:
        self.replica = replica
        self.interval = interval
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self._body = json.dumps(NOTE).encode()
        self._connection: http.client.HTTPConnection | None = None
        self.stopped = threading.Event()  # set: a poll loop ends at its next turn

    def _decide(self) -> tuple[int, dict[str, Any]]:
        for attempt in (1, 2):  # once more on a fresh connection if the kept one was closed
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    "127.0.0.1", self.replica.port, timeout=10
                )
            try:
                self._connection.request("POST", "/v1/decisions", self._body, self._headers)
                response = self._connection.getresponse()
                return response.status, json.loads(response.read())
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def first(self, verdict: str, deadline: float) -> Seen:
        """Poll until an answer has `verdict` (a `deny` must cite `halted`) or `deadline`."""
        polls, spent = 0, 0.0
        while time.perf_counter() < deadline and not self.stopped.is_set():
            sent = time.perf_counter()
            status, body = self._decide()
            arrived = time.perf_counter()
            polls += 1
            spent += arrived - sent
            mean = spent / polls * 1000
            if status != 200:
                return Seen(None, polls, mean, f"HTTP {status}: {body}")
            if body["verdict"] == verdict:
                codes = [reason["code"] for reason in body["reasons"]]
                if verdict == "deny" and "halted" not in codes:
                    return Seen(None, polls, mean, f"a deny not citing the halt: {codes}")
                return Seen(arrived, polls, mean)
            time.sleep(max(0.0, sent + self.interval - time.perf_counter()))
        return Seen(None, polls, spent / max(1, polls) * 1000)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


class Listeners:
    """The replicas' LISTEN connections, seen from a superuser connection to the server."""

    def __init__(self, admin_url: str, database: str, replicas: int) -> None:
        self._admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=10)
        self._database = database
        self.replicas = replicas
        self.frozen: list[int] = []  # server processes stopped with SIGSTOP, to resume

    def pids(self) -> list[int]:
        rows = self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s",
            [LISTENER, self._database],
        ).fetchall()
        return [int(pid) for (pid,) in rows]

    def wait_all(self, timeout: float) -> list[int]:
        """The listeners' pids once every replica has one (they reconnect after a kill)."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if len(pids) >= self.replicas or time.monotonic() > deadline:
                return pids
            time.sleep(0.01)

    def kill(self) -> int:
        """End every listener's connection; how many were ended."""
        rows = self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = %s",
            [LISTENER, self._database],
        ).fetchall()
        return sum(1 for (ended,) in rows if ended)

    def freeze(self) -> int:
        """SIGSTOP every listener's server process; how many were stopped."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self.frozen.append(pid)
        return len(self.frozen)

    def still_frozen(self) -> int:
        """How many of the stopped processes are still stopped (state T in /proc)."""
        count = 0
        for pid in self.frozen:
            with contextlib.suppress(OSError, IndexError):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                count += state in ("T", "t")
        return count

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def close(self) -> None:
        self.thaw()
        self._admin.close()


@dataclass
class Results:
    """Per mode: propagation times (ms) of halts and resumes, and the per-round checks."""

    halt_ms: list[float] = field(default_factory=list)
    resume_ms: list[float] = field(default_factory=list)
    #: replica-rounds where the change never showed within WAIT_TIMEOUT, per change
    missed: dict[str, int] = field(default_factory=lambda: {"halt": 0, "resume": 0})
    early: int = 0  # changes seen before the operator's call returned (counted as 0 ms)
    commit_ms: list[float] = field(default_factory=list)  # the operator's halt() call
    poll_ms: list[float] = field(default_factory=list)  # a poll's round trip
    checks: list[int] = field(default_factory=list)  # listeners killed / stopped per round
    held: list[int] = field(default_factory=list)  # stopped listeners still stopped at deny
    problems: list[str] = field(default_factory=list)


def watch(pool: ThreadPoolExecutor, pollers: list[Poller], verdict: str) -> list[Future[Seen]]:
    deadline = time.perf_counter() + WAIT_TIMEOUT
    return [pool.submit(poller.first, verdict, deadline) for poller in pollers]


def collect(futures: list[Future[Seen]], since: float, change: str, out: Results) -> None:
    """Propagation times of `change` (halt, resume) from `since`.

    A replica may answer with the change before the operator's own call has returned
    (its commit's acknowledgement still on the way back): that counts as 0 ms, and is
    counted in `early`.
    """
    for future in futures:
        seen = future.result()
        out.poll_ms.append(seen.poll_ms)
        if seen.unexpected:
            out.problems.append(seen.unexpected)
        if seen.at is None:
            out.missed[change] += 1
        else:
            out.early += seen.at < since
            times = out.halt_ms if change == "halt" else out.resume_ms
            times.append(max(0.0, seen.at - since) * 1000)


def one_round(
    mode: str,
    operator: Charter,
    pollers: list[Poller],
    listeners: Listeners,
    pool: ThreadPoolExecutor,
    rng: random.Random,
    out: Results,
) -> None:
    if len(listeners.wait_all(WAIT_TIMEOUT)) < listeners.replicas:
        out.problems.append("a replica's listener did not reconnect in time")
    denied = watch(pool, pollers, "deny")  # polling (and seeing allow) from here on
    try:
        if mode == "silent":
            # Before the pause: the followers' last wake-up was the last notification
            # before this, so the halt lands anywhere in their 0.25 s tick.
            out.checks.append(listeners.freeze())
        time.sleep(rng.uniform(0.05, 0.30))
        if mode == "killed":
            out.checks.append(listeners.kill())  # right before the halt
        start = time.perf_counter()
        operator.halt("agent", "support-bot", reason="bench: halt propagation", by="bench")
        committed = time.perf_counter()
        out.commit_ms.append((committed - start) * 1000)
        collect(denied, committed, "halt", out)
        if mode == "silent":
            out.held.append(listeners.still_frozen())
        allowed = watch(pool, pollers, "allow")
        operator.resume("agent", "support-bot", by="bench")
        collect(allowed, time.perf_counter(), "resume", out)
    finally:
        listeners.thaw()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0-100) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), math.ceil(q / 100 * len(ordered))) - 1)]


def print_table(results: dict[str, Results], args: argparse.Namespace) -> None:
    header = (
        f"{'mode':<7}  {'change':<6}  {'halts':>5}  {'samples':>7}  {'p50 ms':>7}  "
        f"{'p99 ms':>7}  {'max ms':>7}  {'missed':>6}  max <= 1 s  check"
    )
    print(header)
    print("-" * (len(header) + 24))
    verdicts = []
    for mode, out in results.items():
        if mode == "killed":
            ok = bool(out.checks) and min(out.checks) > 0
            check = f"listeners killed per round: min {min(out.checks, default=0)}"
        elif mode == "silent":
            ok = bool(out.checks) and min(out.checks) > 0 and min(out.held, default=0) > 0
            check = (
                f"listeners stopped per round: min {min(out.checks, default=0)}, "
                f"still stopped at deny: min {min(out.held, default=0)}"
            )
        else:
            ok, check = True, "-"
        if mode != "notify":
            check += " (> 0 every round: " + ("MET)" if ok else "MISSED)")
        for change, times in (("halt", out.halt_ms), ("resume", out.resume_ms)):
            met = bool(times) and not out.missed[change] and max(times) <= TARGET_MAX_MS
            if change == "halt":
                verdicts.append(met)
            row = (
                f"{percentile(times, 50):>7.1f}  {percentile(times, 99):>7.1f}  {max(times):>7.1f}"
                if times
                else f"{'-':>7}  {'-':>7}  {'-':>7}"
            )
            print(
                f"{mode:<7}  {change:<6}  {args.halts:>5}  {len(times):>7}  {row}  "
                f"{out.missed[change]:>6}  {'MET' if met else 'MISSED':<10}  "
                f"{check if change == 'halt' else ''}"
            )
    print()
    for mode, out in results.items():
        print(
            f"{mode}: the operator's halt() took p50 {percentile(out.commit_ms, 50):.1f} ms "
            f"(commit, before the clock starts); a poll's round trip p50 "
            f"{percentile(out.poll_ms, 50):.2f} ms (the resolution, with --poll-ms "
            f"{args.poll_ms:g}); seen before halt() returned (counted as 0 ms): {out.early}"
        )
        for problem in sorted(set(out.problems)):
            print(f"  PROBLEM in {mode}: {problem}")
    print(
        f"halt propagation max <= {TARGET_MAX_MS:.0f} ms in every mode: "
        f"{'MET' if all(verdicts) else 'MISSED'}"
    )
    print(json.dumps({
        "note": "time from the operator's halt() returning (committed) to the first deny "
                "citing the halt arriving from each replica; samples = halts x replicas",
        "replicas": 2, "poll_ms": args.poll_ms, "seed": args.seed,
    }))  # fmt: skip


@contextlib.contextmanager
def replicas_on(store: str, tmp: Path, names: list[str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for name in names:
            started.append(Replica(name, store, tmp / f"replica-{name}.log"))
        deadline = time.monotonic() + START_TIMEOUT
        for replica in started:
            replica.wait_ready(deadline)
        yield started
    finally:
        for replica in started:
            replica.stop()


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # the `finally` blocks stop everything


def run(args: argparse.Namespace, tmp: Path, cluster: PostgresCluster) -> dict[str, Results]:
    store = cluster.create_database("bench_halts")
    cli("migrate", "--store", store)
    out = cli("keys", "create", "--role", "agent", "--agent", "support-bot", "--store", store)
    secrets = [word for word in out.split() if word.startswith("chk_")]
    if len(secrets) != 1:
        raise SystemExit(f"unexpected output of charter keys create: {out!r}")
    results = {mode: Results() for mode in args.modes}
    rng = random.Random(args.seed)
    cleanup: list[Callable[[], None]] = []
    with replicas_on(store, tmp, ["A", "B"]) as replicas:
        try:
            pollers = [Poller(r, secrets[0], args.poll_ms / 1000) for r in replicas]
            cleanup += [poller.close for poller in pollers]
            listeners = Listeners(cluster.admin_url, "bench_halts", len(replicas))
            cleanup.append(listeners.close)
            operator = Charter(EXAMPLE_POLICY, store)
            cleanup.append(operator.close)
            pool = ThreadPoolExecutor(len(pollers), thread_name_prefix="poller")
            cleanup.append(pool.shutdown)
            cleanup += [poller.stopped.set for poller in pollers]  # first, on the way out
            for number in range(args.halts):
                for mode in args.modes:
                    one_round(mode, operator, pollers, listeners, pool, rng, results[mode])
                if (number + 1) % 10 == 0:
                    print(f"{number + 1}/{args.halts} rounds", file=sys.stderr)
        finally:
            for close in reversed(cleanup):
                close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--halts", type=int, default=50, help="halts per mode")
    parser.add_argument(
        "--modes", nargs="+", choices=("notify", "killed", "silent"),
        default=["notify", "killed", "silent"],
    )  # fmt: skip
    parser.add_argument("--poll-ms", type=float, default=2.0, help="least time between polls")
    parser.add_argument("--seed", type=int, default=1, help="for the pauses before each halt")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    # The pollers' threads take the GIL back within 0.5 ms rather than 5 ms: their
    # timestamps are what is measured.
    sys.setswitchinterval(0.0005)
    with (
        tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp,
        PostgresCluster.start() as cluster,
    ):
        results = run(args, Path(tmp), cluster)
    print_table(results, args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything was stopped on the way out
        raise SystemExit("interrupted") from None
