"""Ledger benchmarks: canonical encoding, durable appends, group commit, verification.

Run: python bench/bench_ledger.py [--entries 100000]. Prints one table. Uses a temporary
SQLite file with the store's real settings (WAL, synchronous=FULL).

The 64-per-commit append is measured against a raw loop in the same run: plain `sqlite3`,
the same table, the same pragmas, the same entry content (the stdlib's sorted compact
JSON of the payload, then the entry around it) hashed the same way (SHA-256 leaf, then
chain), 64 entries per `BEGIN IMMEDIATE` transaction that first reads the head. The two
run in alternating rounds, so that a noisy machine slows both alike; the row reports the
store's rate as a fraction of the raw loop's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import threading
import time
import timeit
from pathlib import Path

import rfc8785

from charter.canonical import canonical_bytes
from charter.ledger import NewEvent, verify_chain
from charter.store import GroupCommitWriter, LedgerStore, open_store, verify_store

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


_RAW_TABLE = """CREATE TABLE ledger_entries (
    seq INTEGER NOT NULL PRIMARY KEY, kind VARCHAR(64) NOT NULL, at VARCHAR(40) NOT NULL,
    payload TEXT NOT NULL, leaf_hash VARCHAR(64) NOT NULL, chain_hash VARCHAR(64) NOT NULL
)"""
_RAW_PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000")


class RawLedger:
    """The baseline: the same entries written by hand with `sqlite3`, `json` and `hashlib`."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        for pragma in _RAW_PRAGMAS:
            self.connection.execute(f"PRAGMA {pragma}")
        self.connection.execute(_RAW_TABLE)
        self.encode = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
        ).encode

    def append(self, kind: str, at: str, payloads: list[dict[str, object]]) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        row = cursor.execute(
            "SELECT seq, chain_hash FROM ledger_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, previous = (0, bytes(32)) if row is None else (row[0], bytes.fromhex(row[1]))
        head = f'{{"at":{json.dumps(at)},"kind":{json.dumps(kind)},"payload":'.encode()
        rows = []
        for payload in payloads:
            seq += 1
            text = self.encode(payload)
            content = head + text.encode() + f',"seq":{seq}}}'.encode()
            leaf = hashlib.sha256(b"\x00" + content).digest()
            previous = hashlib.sha256(b"\x02" + previous + leaf).digest()
            rows.append((seq, kind, at, text, leaf.hex(), previous.hex()))
        cursor.executemany("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?)", rows)
        cursor.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


def append_against_raw(
    store: LedgerStore, tmp: Path, *, batch: int, rounds: int, per_round: int
) -> tuple[float, float]:
    """Seconds per entry of `store.append` and of the raw loop, in alternating rounds.

    A first round of each warms up and is not counted; then the two take turns to go
    first, so that neither always runs right after the other's checkpoint of the WAL.
    """
    raw = RawLedger(tmp / "raw.db")
    seconds = {"ours": 0.0, "raw": 0.0}
    n = 0

    def ours() -> None:
        for k in range(0, per_round, batch):
            store.append([NewEvent("decision", AT, decision(n + k + i)) for i in range(batch)])

    def theirs() -> None:
        for k in range(0, per_round, batch):
            raw.append("decision", AT, [decision(n + k + i) for i in range(batch)])

    for turn in range(rounds + 1):
        for name, run in (("ours", ours), ("raw", theirs))[:: 1 if turn % 2 else -1]:
            start = time.perf_counter()
            run()
            if turn:
                seconds[name] += time.perf_counter() - start
        n += per_round
    raw.close()
    counted = rounds * per_round
    return seconds["ours"] / counted, seconds["raw"] / counted


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
    distinct = [decision(n) for n in range(20_000)]
    start = time.perf_counter()
    for value in distinct:
        canonical_bytes(value)
    each = (time.perf_counter() - start) / len(distinct) * 1e6
    rows.append(("canonical_bytes, 20,000 distinct decisions", f"{each:>9.1f} µs", "per call"))

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        n = 300
        start = time.perf_counter()
        for i in range(n):
            store.append([NewEvent("decision", AT, decision(i))])
        rows.append(
            ("append, 1 entry per commit", rate(n, time.perf_counter() - start), "entries/s")
        )

        ours, raw = append_against_raw(store, Path(tmp), batch=64, rounds=10, per_round=64 * 40)
        rows.append(("append, 64 per commit", rate(1, ours), "entries/s"))
        rows.append(("raw sqlite3 loop, 64 per commit", rate(1, raw), "entries/s"))
        rows.append(("append / raw loop, 64 per commit", f"{raw / ours:>11.2f}x", "ratio"))

        for batch in (512,):
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
