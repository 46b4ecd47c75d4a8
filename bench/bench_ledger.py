"""Ledger benchmarks: canonical encoding, durable appends, group commit, verification.

Run: python bench/bench_ledger.py [--entries 100000]. Prints one table. Uses a temporary
SQLite file with the store's real settings (WAL, synchronous=FULL).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import timeit
from pathlib import Path

import rfc8785

from charter.canonical import canonical_bytes
from charter.ledger import NewEvent, verify_chain
from charter.store import GroupCommitWriter, open_store, verify_store

AT = "2025-01-31T09:30:00Z"


def decision(n: int) -> dict[str, object]:
    return {
        "decision_id": f"d-{n:08d}",
        "request": {
            "agent": "support-bot-1",
            "action": "payments.refund",
            "args": {"order_id": f"o-{n}", "amount": 120, "currency": "USD"},
            "context": {
                "confidence": 0.82,
                "environment": "prod",
                "rationale": "customer reported damaged item",
                "data_sources": [{"name": "orders-db", "age_seconds": 40}],
            },
        },
        "state": {"autonomy": 2, "budgets": {}},
        "decision": {
            "verdict": "allow",
            "risk": 20,
            "factors": [
                {"id": "refund-over-100", "points": 20, "reason": "refund is over 100 USD"}
            ],
            "reasons": [{"code": "allowed", "message": "within the agent's autonomy"}],
            "policy_version": "sha256:" + "ab" * 32,
            "autonomy_level": 2,
        },
    }


def per_call_us(func: object, number: int = 20_000) -> float:
    best = min(timeit.repeat(func, number=number, repeat=5))  # type: ignore[arg-type]
    return best / number * 1e6


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}"


def main() -> None:  # noqa: PLR0915 - a linear script of measurements
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000, help="ledger size to verify")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    payload = decision(1)
    size = len(canonical_bytes(payload))
    ours = per_call_us(lambda: canonical_bytes(payload))
    ref = per_call_us(lambda: rfc8785.dumps(payload))
    rows.append((f"canonical_bytes, {size} B decision", f"{ours:>9.1f} µs", "per call"))
    rows.append(("rfc8785.dumps, same payload", f"{ref:>9.1f} µs", "per call"))

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        n = 300
        start = time.perf_counter()
        for i in range(n):
            store.append([NewEvent("decision", AT, decision(i))])
        rows.append(
            ("append, 1 entry per commit", rate(n, time.perf_counter() - start), "entries/s")
        )

        for batch in (64, 512):
            total = 0
            start = time.perf_counter()
            while total < 20_000:
                store.append([NewEvent("decision", AT, decision(total + i)) for i in range(batch)])
                total += batch
            rows.append(
                (
                    f"append, {batch} per commit",
                    rate(total, time.perf_counter() - start),
                    "entries/s",
                )
            )

        threads, per_thread = 32, 1000
        with GroupCommitWriter(store, max_batch=512) as writer:

            def work(worker: int) -> None:
                futures = [
                    writer.submit(NewEvent("decision", AT, decision(worker * per_thread + i)))
                    for i in range(per_thread)
                ]
                for future in futures:
                    future.result()

            pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
            start = time.perf_counter()
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            elapsed = time.perf_counter() - start
        rows.append(
            (f"group commit, {threads} threads", rate(threads * per_thread, elapsed), "entries/s")
        )

        while store.count() < args.entries:
            missing = min(512, args.entries - store.count())
            store.append([NewEvent("decision", AT, decision(i)) for i in range(missing)])
        count = store.count()
        entries = list(store.entries(limit=args.entries))
        for label, check in (("hash chain only", False), ("+ canonical check", True)):
            start = time.perf_counter()
            report = verify_chain(entries, check_canonical=check)
            assert report.ok, report.problem
            rows.append(
                (
                    f"verify {len(entries):,} in memory, {label}",
                    rate(len(entries), time.perf_counter() - start),
                    "entries/s",
                )
            )
        start = time.perf_counter()
        report = verify_store(store)
        assert report.ok, report.problem
        rows.append(
            (
                f"verify_store {count:,} from SQLite, full",
                rate(count, time.perf_counter() - start),
                "entries/s",
            )
        )
        store.close()

    width = max(len(label) for label, _, _ in rows)
    print(f"{'measurement':<{width}}  {'value':>12}  unit")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 9}")
    for label, value, unit in rows:
        print(f"{label:<{width}}  {value:>12}  {unit}")


if __name__ == "__main__":
    main()
