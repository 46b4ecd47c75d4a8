"""What telemetry costs: `POST /v1/decisions` at 32 connections, traced and logged or not.

Run: python bench/bench_tracing.py [--duration 10] [--connections 32] [--rounds 3].
Prints one table.

Starts four `charter serve` processes side by side (each its own SQLite ledger in a
temporary folder, one uvicorn worker, on a free loopback port):

- **off**: no traces, console logs (`charter serve` as it starts by default);
- **traced**: `--otel` with `OTEL_TRACES_EXPORTER=none`: every span is built, sampled and
  handed to a `BatchSpanProcessor` whose exporter drops it, so what is measured is
  Charter's tracing without a collector's network;
- **JSON logs**: `--log-format json` with its access line per request, written to a file;
- **both**: traced and JSON logs with access lines: what an on-call setup runs.

wrk (Debian's `wrk`, one thread) loads each in turn, round after round, with the requests
of `bench_server.py` (allowed `crm.note`s, each with a grant), so the four share whatever
else the machine does; each ratio is the median of the rounds' own ratios to **off**.
The target: traced >= 0.90 x off.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every setup, interleaved")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = [start(setup, folder, i) for i, setup in enumerate(SETUPS)]
        runs: dict[str, list[dict[str, float]]] = {s.setup.name: [] for s in servers}
        try:
            for running in servers:
                wait_ready(f"{running.url}/readyz", time.monotonic() + 30)
            for _ in range(args.rounds):
                for i, running in enumerate(servers):
                    script = folder / f"decide-{i}.lua"
                    url = f"{running.url}/v1/decisions"
                    runs[running.setup.name].append(
                        run_wrk(url, args.connections, args.duration, script)
                    )
        finally:
            for running in servers:
                stop_server(running.process)
        lines = {r.setup.name: len(r.log.read_text().splitlines()) for r in servers}

    base = runs[SETUPS[0].name]
    print(
        f"POST /v1/decisions, {args.connections} connections,"
        f" {args.rounds} rounds of {args.duration} s each"
    )
    columns = ("decisions/s", "x off (range)", "p50 ms", "p99 ms", "log lines")
    widths = (12, 18, 7, 7, 9)
    print(
        f"{'setup':<34}  "
        + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
        + "  target"
    )
    print(f"{'-' * 34}  " + "  ".join("-" * w for w in widths) + f"  {'-' * 20}")
    summary: dict[str, object] = {}
    for setup in SETUPS:
        mine = runs[setup.name]
        figures = median_run(mine)
        ratios = [m["rps"] / b["rps"] if b["rps"] else 0.0 for m, b in zip(mine, base, strict=True)]
        ratio = statistics.median(ratios)
        spread = f"{ratio:.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
        target = ""
        if setup is SETUPS[1]:
            met = ratio >= TARGET_TRACED and not figures["non2xx"]
            target = f">= {TARGET_TRACED} x off {'MET' if met else 'MISSED'}"
        print(
            f"{setup.name:<34}  {figures['rps']:>12,.0f}  {spread:>18}  {figures['p50']:>7.2f}"
            f"  {figures['p99']:>7.2f}  {lines[setup.name]:>9,}  {target}"
        )
        summary[setup.name] = {"rps": figures["rps"], "ratio": ratio, "errors": figures["non2xx"]}
    summary["note"] = "loopback; wrk shares the machine's cores with the servers"
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
