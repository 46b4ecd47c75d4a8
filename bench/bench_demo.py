"""End-to-end benchmark: `charter demo` as a user runs it, in a fresh folder each time.

Run: python bench/bench_demo.py [--runs 3] [--requests N]. Prints one table.

Each run starts the `charter` script installed next to this interpreter as a subprocess,
in a new temporary working directory (so the demo's ledger starts empty), and times it
from start to exit: interpreter start-up, imports, deciding, verifying and replaying.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 15.0


def charter_script() -> Path:
    script = Path(sys.executable).with_name("charter")
    if not script.exists():
        sys.exit(f"no `charter` script next to {sys.executable}; install the package first")
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=None, help="pass -n to the demo")
    args = parser.parse_args()
    command = [str(charter_script()), "demo"]
    if args.requests is not None:
        command += ["--requests", str(args.requests)]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    walls: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            done = subprocess.run(
                command, cwd=tmp, env=env, capture_output=True, text=True, check=False
            )
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
                sys.exit(f"`{' '.join(command)}` exited with {done.returncode}")
            assert (Path(tmp) / "charter-demo.db").exists()

    best, median = min(walls), statistics.median(walls)
    verdict = "MET" if median < TARGET_SECONDS else "MISSED"
    rows = [
        (f"charter demo, {args.runs} runs: min", f"{best:>8.2f}", "s", ""),
        ("charter demo: median", f"{median:>8.2f}", "s", f"< {TARGET_SECONDS:.0f} s {verdict}"),
        ("charter demo: each run", " ".join(f"{w:.2f}" for w in walls), "s", ""),
    ]
    width = max(len(label) for label, _, _, _ in rows)
    value_width = max(8, *(len(value) for _, value, _, _ in rows))
    print(f"{'measurement':<{width}}  {'value':>{value_width}}  unit  target")
    print(f"{'-' * width}  {'-' * value_width}  ----  {'-' * 14}")
    for label, value, unit, target in rows:
        print(f"{label:<{width}}  {value:>{value_width}}  {unit:<4}  {target}")


if __name__ == "__main__":
    main()
