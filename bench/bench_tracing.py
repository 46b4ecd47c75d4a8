"""What telemetry costs: `POST /v1/decisions` at 32 connections, traced and logged or not.

Run: python bench/bench_tracing.py [--duration 5] [--connections 32] [--rounds 8].
Prints one table.

Starts four `charter serve` processes side by side (each its own SQLite ledger in a
temporary folder, one uvicorn worker, on a free loopback port):

- **off**: no traces, console logs (`charter serve` as it starts by default);
- **traced**: `--otel` with `OTEL_TRACES_EXPORTER=none`: every span is built, sampled and
  handed to a `BatchSpanProcessor` whose exporter drops it, so what is measured is
  Charter's tracing without a collector's network;
- **JSON logs**: `--log-format json` with its access line per request, written to a file;
- **both**: traced and JSON logs with access lines: what an on-call setup runs.

wrk (Debian's `wrk`, one thread) loads each in turn for a few seconds, round after round
(each round starting with the next setup), with the requests of `bench_server.py`
(allowed `crm.note`s, each with a grant), so the four share whatever else the machine
does; each ratio is the median of the rounds' own ratios to **off**.
The target: traced >= 0.90 x off. Beside decisions/s, the table gives each server's CPU
time (its threads and its ledger-writer process, from `/proc`) per decision: on a machine
others use too, that figure holds where decisions/s moves from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_server import (
    WRK_SCRIPT,
    charter_script,
    free_port,
    median_run,
    run_wrk,
    stop_server,
    wait_ready,
)
from charter.examples import EXAMPLE_POLICY
from charter.service import KeyRing, system_clock
from charter.store import open_store

TARGET_TRACED = 0.90  # traced decisions/s over untraced, same run, 32 connections


@dataclass(frozen=True)
class Setup:
    """One way to serve: its flags and environment."""

    name: str
    options: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


SETUPS = (
    Setup("off", ()),
    Setup("traced (spans batched, dropped)", ("--otel",), (("OTEL_TRACES_EXPORTER", "none"),)),
    Setup("JSON logs + access lines", ("--log-format", "json")),
    Setup(
        "traced + JSON logs + access lines",
        ("--otel", "--log-format", "json"),
        (("OTEL_TRACES_EXPORTER", "none"),),
    ),
)


@dataclass
class Running:
    """A started server: its setup, address, process and the file its log lines go to."""

    setup: Setup
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start(setup: Setup, folder: Path, index: int) -> Running:
    """Start `charter serve` with an admin key of its own ledger; its wrk script beside it."""
    db = folder / f"server-{index}.db"
    store = open_store(db)
    try:
        _, secret = KeyRing(store, system_clock).create("admin", label="bench")
    finally:
        store.close()
    (folder / f"decide-{index}.lua").write_text(WRK_SCRIPT.format(secret=secret))
    port = free_port()
    log = folder / f"server-{index}.log"
    command = [charter_script(), "serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db)]
    command += ["--port", str(port), *setup.options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHARTER_LOG"))}
    env.update(setup.env)
    with log.open("wb") as out:
        # A file, not /dev/null: a line's cost includes writing it somewhere real.
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True, env=env
        )
    return Running(setup, f"http://127.0.0.1:{port}", process, log)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far (Linux `/proc`).

    The server's threads are in its own figure; its ledger writer is a child process.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def of(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / tick

    total = of(Path(f"/proc/{pid}/stat").read_text())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                total += of(stat)
    return total


def measure(running: Running, script: Path, args: argparse.Namespace) -> dict[str, float]:
    """One wrk run, with the server's CPU microseconds per acknowledged decision."""
    before = cpu_seconds(running.process.pid)
    figures = run_wrk(f"{running.url}/v1/decisions", args.connections, args.duration, script)
    spent = cpu_seconds(running.process.pid) - before
    answered = figures["total"] - figures["non2xx"]
    figures["cpu_us"] = spent / answered * 1e6 if answered else float("nan")
    return figures


def run_setups(
    setups: tuple[Setup, ...], args: argparse.Namespace
) -> tuple[dict[str, list[dict[str, float]]], dict[str, int]]:
    """Start a server per setup, load them round after round; the runs and log lines."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = [start(setup, folder, i) for i, setup in enumerate(setups)]
        runs: dict[str, list[dict[str, float]]] = {s.setup.name: [] for s in servers}
        try:
            for running in servers:
                wait_ready(f"{running.url}/readyz", time.monotonic() + 30)
            for round_ in range(args.rounds):
                # Each round starts with another setup: none always runs first (cold) or
                # right after the heaviest.
                order = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
                for running in order:
                    script = folder / f"decide-{servers.index(running)}.lua"
                    runs[running.setup.name].append(measure(running, script, args))
        finally:
            for running in servers:
                stop_server(running.process)
        lines = {r.setup.name: len(r.log.read_text().splitlines()) for r in servers}
    return runs, lines


def arguments(doc: str) -> argparse.Namespace:
    """The command line both load benchmarks share; exits when wrk is missing."""
    parser = argparse.ArgumentParser(description=doc.split("\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="runs of every setup, interleaved")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")
    return args


def main() -> None:
    args = arguments(__doc__ or "")
    runs, lines = run_setups(SETUPS, args)
    report(SETUPS, runs, lines, args, judged=SETUPS[1], target=TARGET_TRACED)


def report(
    setups: tuple[Setup, ...],
    runs: dict[str, list[dict[str, float]]],
    lines: dict[str, int],
    args: argparse.Namespace,
    *,
    judged: Setup,
    target: float,
) -> None:
    """The table: decisions/s and CPU per decision, each against the first setup.

    `judged` is the setup whose ratio to the first is held to `target`.
    """
    first = setups[0]
    base = runs[first.name]
    print(
        f"POST /v1/decisions, {args.connections} connections,"
        f" {args.rounds} rounds of {args.duration} s each"
    )
    short = first.name.split(" (")[0]
    columns = (
        "decisions/s",
        f"x {short} (range)",
        "CPU us/dec",
        f"{short}/this CPU",
        "p99 ms",
        "log lines",
    )
    widths = tuple(max(w, len(c)) for w, c in zip((11, 18, 10, 12, 7, 9), columns, strict=True))
    print(
        f"{'setup':<34}  "
        + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
        + "  target"
    )
    print(f"{'-' * 34}  " + "  ".join("-" * w for w in widths) + f"  {'-' * 26}")
    summary: dict[str, object] = {}
    for setup in setups:
        mine = runs[setup.name]
        figures = median_run(mine)
        ratios = [m["rps"] / b["rps"] if b["rps"] else 0.0 for m, b in zip(mine, base, strict=True)]
        ratio = statistics.median(ratios)
        cpu = statistics.median(m["cpu_us"] for m in mine)
        capacity = statistics.median(b["cpu_us"] for b in base) / cpu
        spread = f"{ratio:.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
        verdict = ""
        if setup is judged:
            met = ratio >= target and not figures["non2xx"]
            verdict = f">= {target} x {short} {'MET' if met else 'MISSED'}"
            verdict += f" (CPU {'MET' if capacity >= target else 'MISSED'})"
        print(
            f"{setup.name:<34}  {figures['rps']:>{widths[0]},.0f}  {spread:>{widths[1]}}"
            f"  {cpu:>{widths[2]}.0f}  {capacity:>{widths[3]}.3f}  {figures['p99']:>{widths[4]}.2f}"
            f"  {lines[setup.name]:>{widths[5]},}  {verdict}"
        )
        summary[setup.name] = {
            "rps": figures["rps"],
            "ratio": ratio,
            "cpu_us_per_decision": cpu,
            "cpu_ratio": capacity,
            "errors": figures["non2xx"],
        }
    summary["note"] = (
        f"loopback; wrk shares the machine's cores with the servers. `{short}/this CPU` is the"
        " capacity ratio: the server's CPU (its threads and ledger writer) per decision, so"
        " it holds where other work on the machine moves decisions/s from run to run"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
