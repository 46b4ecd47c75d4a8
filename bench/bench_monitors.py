"""Monitor benchmarks: `MonitorBook.apply` over a synthetic ledger, and its queries.

Run: python bench/bench_monitors.py [--events 200000] [--agents 50] [--repeat 5]. Prints one
table.

The events are made before timing, in the ledger's shapes (`charter.ledger.events`'
builders): `--agents` agents of 5 actions each on two model versions, a decision every
0.4 s of a simulated clock (so 200,000 events span about ten hours), each allowed decision
followed by its outcome and each one that needs approval by its opening, end and (when
approved) outcome; a few outcomes come overdue. Requests carry 4 arguments (one an id)
and a context with confidence, environment, labels and a data source, so drift (default
discovery), freshness, completeness and range checks all run. The fold is timed as one
loop over every event, best of `--repeat` fresh books, with the garbage collector off
(and a row with it on, the events made for the run frozen out of its way with
`gc.freeze`, as a service holds no such pile); then `figures()` at each level and one
agent's 60-point `series`, each best of `--repeat`, at the end of the stream.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import heapq
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from charter.ledger import events
from charter.monitors import MonitorBook, MonitorConfig

START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)  # a Monday, as in the demo
ACTIONS = ("payments.refund", "orders.cancel", "crm.note", "infra.restart", "mail.send")
CONFIG = MonitorConfig(
    freshness={"orders-db": 3600, "*": 86_400},
    required={"payments.*": ["args.amount", "context.rationale"]},
    ranges={"*": {"args.amount": [0, 5000]}},
)

Event = tuple[str, str, dict[str, Any]]


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def verdict_json(verdict: str, agent: str, action: str) -> dict[str, Any]:
    """A decision's JSON as `Decision.to_json` writes it."""
    return {
        "verdict": verdict,
        "risk": 15,
        "factors": [],
        "reasons": [{"code": verdict, "message": "synthetic"}],
        "policy_version": "sha256:bench",
        "agent": agent,
        "action": action,
        "role": "support",
        "autonomy_level": 2,
        "autonomy_max_risk": 45,
        "ceiling": 90,
        "route": None,
        "runbook": None,
    }


def synthetic(count: int, agents: int, seed: int) -> list[Event]:
    """`count` ledger events of `agents` agents, in time order."""
    rng = random.Random(seed)
    pending: list[tuple[dt.datetime, int, Event]] = []  # a heap of events due later
    out: list[Event] = []
    moment, n = START, 0
    while len(out) < count:
        moment += dt.timedelta(seconds=rng.expovariate(1 / 0.4))
        while pending and pending[0][0] <= moment:
            out.append(heapq.heappop(pending)[2])
        n += 1
        agent = f"agent-{rng.randrange(agents):02d}"
        action = rng.choice(ACTIONS)
        version = "2026-08" if rng.random() < 0.7 else "2026-11"
        d = f"d{n:08d}"
        context = {
            "confidence": round(rng.betavariate(8, 2), 3),
            "environment": rng.choice(["prod", "staging"]),
            "rationale": "the customer asked twice",
            "labels": {"ticket": rng.choice(["none", "T-1", "T-2"])},
            "data_sources": [{"name": "orders-db", "age_seconds": rng.choice([30, 600, 7200])}],
        }
        args = {
            "order_id": f"o-{n}",
            "amount": round(rng.lognormvariate(4, 1), 2),
            "currency": rng.choice(["USD", "EUR"]),
            "notify": rng.random() < 0.5,
        }
        verdict = rng.choices(["allow", "require_approval", "escalate", "deny"], [70, 20, 3, 7])[0]
        request = {"agent": agent, "action": action, "args": args, "context": context}
        provenance = {"agent": agent, "role": "support", "owner": "lead@example.com",
                      "model_id": "gpt-x", "model_version": version,
                      "data_sources": ["orders-db"], "rationale": context["rationale"]}  # fmt: skip
        event = events.decision(
            stamp(moment), d, request=request, redacted=[], state={}, budgets=[],
            provenance=provenance, verdict=verdict_json(verdict, agent, action),
        )  # fmt: skip
        out.append((event.kind, event.at, event.payload))
        later: list[tuple[float, Event]] = []
        executes = verdict == "allow"
        wait = 0.0
        if verdict in ("require_approval", "escalate"):
            step = {"approval_id": f"apr_{d}", "decision_id": d}
            out.append((events.APPROVAL_OPENED, event.at, step))
            wait = rng.expovariate(1 / 600)
            executes = rng.random() < 0.8
            if executes:
                later.append((wait, (events.APPROVAL_APPROVED, "", {**step, "complete": True})))
            else:
                later.append((wait, (events.APPROVAL_DENIED, "", {**step, "reason": "no"})))
        if executes:
            took = wait + rng.expovariate(1 / 5)
            if rng.random() < 0.01:
                body = {"decision_id": d, "agent": agent, "action": action, "due": ""}
                later.append((wait + 3600, ("outcome.overdue", "", body)))
            else:
                result = {"decision_id": d, "success": rng.random() < 0.9, "error": None,
                          "duration_ms": 12.0, "result_digest": None}  # fmt: skip
                later.append((took, (events.OUTCOME, "", result)))
        for k, (delay, (kind, _, payload)) in enumerate(later):
            due = moment + dt.timedelta(seconds=delay)
            heapq.heappush(pending, (due, 2 * n + k, (kind, stamp(due), payload)))
    return out[:count]


def fold(stream: Sequence[Event]) -> tuple[MonitorBook, float]:
    book = MonitorBook(CONFIG)
    apply = book.apply
    start = time.perf_counter()
    for kind, at, payload in stream:
        apply(kind, at, payload)
    return book, time.perf_counter() - start


def best_fold(stream: Sequence[Event], repeat: int, *, collect: bool) -> tuple[MonitorBook, float]:
    fold(stream[: len(stream) // 10])  # warm-up
    gc.collect()
    # The events made for the run are not the service's to collect: frozen, the collector
    # (when on) scans what the book makes, as it would in a running service.
    gc.freeze()
    if not collect:
        gc.disable()
    try:
        runs = [fold(stream) for _ in range(repeat)]
    finally:
        gc.enable()
        gc.unfreeze()
    return runs[-1][0], min(seconds for _, seconds in runs)


def best(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events to fold")
    parser.add_argument("--agents", type=int, default=50, help="agents in the fleet")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best is shown")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str]] = []

    start = time.perf_counter()
    stream = synthetic(args.events, args.agents, args.seed)
    span = dt.datetime.fromisoformat(stream[-1][1]) - dt.datetime.fromisoformat(stream[0][1])
    kinds = sum(kind == events.DECISION for kind, _, _ in stream)
    made = f"{kinds:,} decisions over {span.total_seconds() / 3600:.1f} h of simulated clock"
    rows.append(
        ("events made (untimed)", f"{len(stream):,}", f"{time.perf_counter() - start:.1f} s", made)
    )

    for collect in (False, True):
        book, seconds = best_fold(stream, args.repeat, collect=collect)
        rate = len(stream) / seconds
        label = f"MonitorBook.apply, gc {'on' if collect else 'off'}"
        per_event = f"{seconds * 1e6 / len(stream):.2f} µs/event; fold {seconds:.2f} s"
        rows.append((label, f"{len(stream):,}", f"{rate:,.0f} events/s", per_event))
    size = book.footprint()
    rows.append(("book after the fold", "", f"{size['buckets']:,} buckets",
                 f"{size['slices']} slices, {size['samples']:,} kept values, "
                 f"{size['open_decisions']:,} awaited decisions"))  # fmt: skip

    now = stream[-1][1]
    for level in ("model", "action", "agent", "fleet"):
        seconds, found = best(lambda level=level: book.figures(now, level=level), args.repeat)
        groups = len(found)
        per_group = f"{seconds * 1e6 / max(groups, 1):,.0f} µs/group"
        rows.append((f"figures(level={level!r})", f"{groups:,} groups",
                     f"{seconds * 1e3:.1f} ms", per_group))  # fmt: skip
    seconds, _ = best(lambda: book.figures(now, agent="agent-00"), args.repeat)
    rows.append(("figures(agent=one agent)", "5 groups", f"{seconds * 1e3:.1f} ms", ""))
    seconds, _ = best(lambda: book.series(now, "agent-00", points=60), args.repeat)
    rows.append(
        ("series(one agent, 60 points of 60 s)", "60 points", f"{seconds * 1e3:.1f} ms", "")
    )
    print_table(rows)


def print_table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    headers = ("measurement", "n", "result", "note")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, tuple("-" * w for w in widths), *rows):
        label, n, result, note = line
        cells = [f"{label:<{widths[0]}}", f"{n:>{widths[1]}}", f"{result:>{widths[2]}}", note]
        print("  ".join(cells).rstrip())


if __name__ == "__main__":
    main()
