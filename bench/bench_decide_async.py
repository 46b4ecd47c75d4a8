"""The gateway without HTTP: `Charter.decide_async` on one event loop, durable ledger.

Run: python bench/bench_decide_async.py [--count 20000] [--in-flight 32]. Prints one table.

It is the ceiling the HTTP server works under: the same path `POST /v1/decisions` takes
(decide on the loop, await the group commit), without uvicorn, and the CPU it costs per
decision across the event loop and the ledger writer thread (process CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from charter import Charter
from charter.examples import EXAMPLE_POLICY


def note(n: int) -> dict[str, Any]:
    """An allowed request with a grant, the same load as bench_server.py."""
    return {
        "agent": "support-bot",
        "action": "crm.note",
        "args": {"customer_id": f"c-{n}", "text": "called back about the order"},
        "context": {"confidence": 0.9, "rationale": "damaged item, photo attached"},
    }


async def run(charter: Charter, count: int, in_flight: int) -> tuple[float, float]:
    """Decide `count` requests, `in_flight` at a time; wall seconds and CPU seconds."""
    gate = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with gate:
            await charter.decide_async(note(n))

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=32)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="charter-bench-async-"))
    try:
        with Charter(EXAMPLE_POLICY, folder / "a.db") as charter:
            asyncio.run(run(charter, 2_000, options.in_flight))  # warm up
            wall, cpu = asyncio.run(run(charter, options.count, options.in_flight))
            recorded = sum(1 for e in charter.store.entries() if e.kind == "decision")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'bench_decide_async':<44}  figure")
    print(
        f"{f'decide_async, {options.in_flight} in flight, durable':<44}  "
        f"{options.count / wall:,.0f} decisions/s"
    )
    print(f"{'CPU per decision (loop + ledger writer)':<44}  {cpu / options.count * 1e6:.0f} µs")
    print(f"{'decisions in the ledger':<44}  {recorded:,} (of {options.count + 2_000:,})")


if __name__ == "__main__":
    main()
