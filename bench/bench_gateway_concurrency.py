"""Gateway concurrency benchmark: many threads calling `Charter.decide` at once.

Run: python bench/bench_gateway_concurrency.py [--threads 1 8 32] [--duration 5]. Prints
one table.

For each thread count, a fresh `Charter` on a temporary SQLite ledger (WAL,
synchronous=FULL) is driven by that many threads for `--duration` seconds; each thread
decides one request at a time and each call returns only once its ledger entry is durable,
so concurrent callers share commits through the group-commit writer. Afterwards the ledger
is reopened from disk and its decision entries are counted: every acknowledged decision
must be there (zero lost), and nothing else.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from charter.demo import Fleet
from charter.examples import EXAMPLE_POLICY
from charter.ledger._replay import DECISION_KIND
from charter.model import ActionRequest
from charter.policy import Bundle, load_bundle
from charter.service import Charter
from charter.store import open_store

POOL = 2_000  # distinct requests per thread, cycled


def pct(sorted_ns: list[int], q: float) -> float:
    """The q-quantile (nearest rank) in ms."""
    index = min(len(sorted_ns) - 1, max(0, round(q * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


def run(bundle: Bundle, threads: int, duration: float, folder: Path) -> tuple[str, ...]:
    db = folder / f"gateway-{threads}.db"
    pools = [
        [ActionRequest.from_json(fleet.next()) for _ in range(POOL)]
        for fleet in (Fleet(1000 + t) for t in range(threads))
    ]
    latencies: list[list[int]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    charter = Charter(bundle, db)

    def work(index: int) -> None:
        pool, mine = pools[index], latencies[index]
        clock = time.perf_counter_ns
        barrier.wait()
        n = 0
        try:
            while not stop.is_set():
                start = clock()
                charter.decide(pool[n % POOL])
                mine.append(clock() - start)
                n += 1
        except BaseException as error:  # reported in the table
            failures.append(error)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    charter.close()

    acknowledged = sum(len(mine) for mine in latencies)
    with open_store(db) as store:
        recorded = sum(1 for _ in store.entries(kinds=(DECISION_KIND,)))
    lost = acknowledged - recorded
    ordered = sorted(ns for mine in latencies for ns in mine)
    status = "ok, zero lost" if lost == 0 and not failures else f"LOST {lost}"
    if failures:
        status += f", {len(failures)} failed: {failures[0]!r}"
    return (
        f"{threads} thread{'s' if threads > 1 else ''}",
        f"{acknowledged:,}",
        f"{acknowledged / elapsed:,.0f}",
        f"{pct(ordered, 0.50):.2f}",
        f"{pct(ordered, 0.99):.2f}",
        f"{statistics.fmean(ordered) / 1e6:.2f}",
        f"{recorded:,}",
        status,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per thread count")
    args = parser.parse_args()
    bundle = load_bundle(EXAMPLE_POLICY)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(bundle, n, args.duration, Path(tmp)) for n in args.threads]

    headers = ("threads", "acked", "decisions/s", "p50 ms", "p99 ms", "mean ms", "in ledger",
               "durability")  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(f"{h:<{w}}" if i in (0, 7) else f"{h:>{w}}"
                    for i, (h, w) in enumerate(zip(headers, widths, strict=True))))  # fmt: skip
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(f"{v:<{w}}" if i in (0, 7) else f"{v:>{w}}"
                        for i, (v, w) in enumerate(zip(r, widths, strict=True))))  # fmt: skip


if __name__ == "__main__":
    main()
