"""Ledger events in the shapes Charter writes them, for the monitor tests.

Decisions and outcomes are made by the ledger's own builders (`charter.ledger.events`)
around a real `Decision`; approval steps carry the fields the approval machine writes
that the monitors read (`approval_id`, `decision_id`, `complete`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from charter.ledger import events
from charter.model import Decision, Reason, Verdict
from charter.monitors import MonitorBook

#: A Monday morning: every test's time 0.
T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


class Event(NamedTuple):
    kind: str
    at: str
    payload: Mapping[str, Any]


def at(seconds: float) -> str:
    """The ledger's time form of T0 + `seconds`."""
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decision(
    decision_id: str,
    t: float,
    *,
    agent: str = "support-bot",
    action: str = "payments.refund",
    verdict: str = "allow",
    args: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    model: tuple[str | None, str | None] = ("gpt-x", "1"),
    modifies: str | None = None,
) -> Event:
    """A decision entry at T0 + `t`, as the service records it."""
    context = dict(context if context is not None else {"confidence": 0.9})
    request = {
        "agent": agent,
        "action": action,
        "args": dict(args if args is not None else {"order_id": "o-1", "amount": 40}),
        "context": context,
    }
    verdict_ = Verdict(verdict)
    decided = Decision(
        verdict=verdict_,
        risk=10,
        factors=(),
        reasons=(Reason(verdict_.value, f"{verdict_.value} by the test", None),),
        policy_version="sha256:test",
        agent=agent,
        action=action,
        role="support",
        autonomy_level=2,
        autonomy_max_risk=45,
        ceiling=90,
    )
    sources = context.get("data_sources")
    sources = sources if isinstance(sources, list) else []
    provenance = {
        "agent": agent,
        "role": "support",
        "owner": "lead@example.com",
        "model_id": model[0],
        "model_version": model[1],
        "data_sources": [s.get("name") for s in sources if isinstance(s, dict)],
        "rationale": context.get("rationale"),
    }
    event = events.decision(
        at(t),
        decision_id,
        request=request,
        redacted=[],
        state={"autonomy": None, "budgets": {}, "halts": []},
        budgets=[],
        provenance=provenance,
        verdict=decided.to_json(),
        modifies=modifies,
    )
    return Event(event.kind, event.at, event.payload)


def outcome(decision_id: str, t: float, *, success: bool = True) -> Event:
    """An outcome entry for `decision_id` at T0 + `t`."""
    event = events.outcome(
        at(t),
        decision_id,
        success=success,
        error=None if success else "boom",
        duration_ms=12.0,
        result_digest=None,
    )
    return Event(event.kind, event.at, event.payload)


def overdue(decision_id: str, t: float, *, agent: str = "support-bot") -> Event:
    """An `outcome.overdue` entry: the outcome did not come by its due time."""
    payload = {"decision_id": decision_id, "agent": agent, "action": "payments.refund"}
    return Event("outcome.overdue", at(t), {**payload, "due": at(t - 1)})


def step(kind: str, approval_id: str, decision_id: str, t: float, **fields: Any) -> Event:
    """An approval step (`approval.opened`, `.approved`, `.denied`, ...) at T0 + `t`."""
    payload = {"approval_id": approval_id, "decision_id": decision_id, **fields}
    if kind == events.APPROVAL_OPENED:
        payload.setdefault("kind", "approval")
        payload.setdefault("route", "ops-review")
        payload.setdefault("deadline", at(t + 3600))
    return Event(kind, at(t), payload)


def redeemed(decision_id: str, t: float) -> Event:
    """A grant redemption of `decision_id`'s grant."""
    event = events.grant_redeemed(at(t), f"g_{decision_id}", decision_id)
    return Event(event.kind, event.at, event.payload)


def fold(book: MonitorBook, stream: Iterable[Event]) -> MonitorBook:
    """`book` after every event of `stream`, in order."""
    for event in stream:
        book.apply(event.kind, event.at, event.payload)
    return book
