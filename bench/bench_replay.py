"""Replay benchmarks: recording a ledger of decisions, then verifying and replaying it.

Run: python bench/bench_replay.py [--count 100000] [--batch 250]. Prints one table.

It records `--count` decisions of the demo's fleet traffic with `Charter.decide_many` (a
simulated clock, as `charter demo` uses) into a temporary SQLite file with the store's real
settings (WAL, synchronous=FULL), then times `charter.replay()` under the recorded version,
`charter.verify()`, `verify_store` with and without the canonical check, and a what-if
replay against `charter.demo.what_if_bundle`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from charter.demo import Fleet, what_if_bundle
from charter.examples import EXAMPLE_POLICY
from charter.policy import load_bundle
from charter.service import Charter, check_recorded_state, replay_ledger
from charter.store import open_store, verify_store

START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # a Monday morning, as in the demo
TARGET_REPLAY = 20_000
TARGET_VERIFY = 100_000


def simulated_clock(rng: random.Random) -> Callable[[], dt.datetime]:
    """The demo's clock: a request every ~6 s of simulated time."""
    moment = [START]

    def tick() -> dt.datetime:
        moment[0] += dt.timedelta(seconds=rng.expovariate(1 / 6))
        return moment[0]

    return tick


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}"


def main() -> None:  # noqa: PLR0915 - a linear script of measurements
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000, help="decisions to record")
    parser.add_argument("--batch", type=int, default=250, help="requests per decide_many")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, count: int, seconds: float, unit: str, target: int | None = None) -> None:
        goal = ""
        if target is not None:
            goal = f">= {target:,} " + ("MET" if count / seconds >= target else "MISSED")
        rows.append((label, rate(count, seconds), unit, goal))

    bundle = load_bundle(EXAMPLE_POLICY)
    fleet = Fleet(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "replay.db"
        charter = Charter(bundle, db, clock=simulated_clock(random.Random(args.seed)))
        try:
            generated = 0.0
            done = 0
            start = time.perf_counter()
            while done < args.count:
                size = min(args.batch, args.count - done)
                t = time.perf_counter()
                batch = [fleet.next() for _ in range(size)]
                generated += time.perf_counter() - t
                charter.decide_many(batch)
                done += size
            elapsed = time.perf_counter() - start - generated
            add(
                f"decide_many + durable append, {args.batch}/call",
                done,
                elapsed,
                "decisions/s",
            )
            entries = charter.store.count()
            size_mb = db.stat().st_size / 1e6
            wal = db.with_name(db.name + "-wal")
            if wal.exists():
                size_mb += wal.stat().st_size / 1e6

            start = time.perf_counter()
            report = charter.replay()
            seconds = time.perf_counter() - start
            assert report.ok, report.to_json()
            assert report.total == done, (report.total, done)
            add(f"replay() {report.total:,}, recorded version", report.total, seconds,
                "decisions/s", TARGET_REPLAY)  # fmt: skip

            for workers in (1, 2):
                start = time.perf_counter()
                from_file = replay_ledger(db, workers=workers)
                seconds = time.perf_counter() - start
                assert from_file.ok, from_file.to_json()
                add(
                    f"charter replay (file, {workers} process{'es' if workers > 1 else ''})",
                    from_file.total,
                    seconds,
                    "decisions/s",
                    TARGET_REPLAY,
                )

            # Part of each `charter replay` above: the one sequential pass of the fold.
            with open_store(db, read_only=True) as store:
                start = time.perf_counter()
                check = check_recorded_state(store)
                seconds = time.perf_counter() - start
            assert check.differing == 0, check.to_json()
            add(
                f"  of which the recorded-state check, {check.checked:,}",
                check.checked,
                seconds,
                "decisions/s",
            )

            alternative = what_if_bundle(bundle)
            start = time.perf_counter()
            what_if = charter.replay(alternative)
            seconds = time.perf_counter() - start
            assert what_if.ok, what_if.errors
            add(
                f"replay(what_if_bundle) {what_if.total:,}, {what_if.changed:,} change",
                what_if.total,
                seconds,
                "decisions/s",
                TARGET_REPLAY,
            )

            start = time.perf_counter()
            verified = charter.verify()
            seconds = time.perf_counter() - start
            assert verified.ok, verified.problem
            add(f"charter.verify() {entries:,} entries", entries, seconds, "entries/s",
                TARGET_VERIFY)  # fmt: skip
            for check in (False, True):
                start = time.perf_counter()
                verified = verify_store(charter.store, check_canonical=check)
                seconds = time.perf_counter() - start
                assert verified.ok, verified.problem
                add(f"verify_store(check_canonical={check})", entries, seconds, "entries/s",
                    TARGET_VERIFY)  # fmt: skip
        finally:
            charter.close()

    rows.append((f"ledger size: {entries:,} entries", f"{size_mb:>12,.1f}", "MB", ""))
    width = max(len(label) for label, _, _, _ in rows)
    print(f"{'measurement':<{width}}  {'value':>12}  {'unit':<11}  target")
    print(f"{'-' * width}  {'-' * 12}  {'-' * 11}  {'-' * 18}")
    for label, value, unit, target in rows:
        print(f"{label:<{width}}  {value:>12}  {unit:<11}  {target}")


if __name__ == "__main__":
    main()
