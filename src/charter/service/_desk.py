"""The approval desk: pending approvals in memory, their rows, and who waits on them.

The gateway takes every approval step under its lock through the desk: the pending
approvals live here (loaded from the store when Charter opens), so a step always starts
from the approval as the last step left it, even before that step's commit is done.
Settled approvals are read from the store. Watchers are called once a decision's
approval settles (approved, denied, expired), after its ledger entry is durable.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from charter.approvals import Approval, ApprovalState
from charter.store import ApprovalRows

__all__ = ["SETTLED_STATES", "ApprovalDesk", "approval_row"]

_log = logging.getLogger("charter.approvals")

#: The decision states in which a waiting agent has its answer.
SETTLED_STATES = frozenset(
    {"allowed", "approved", "denied", "expired", "redeemed", "executed", "failed"}
)


def approval_row(approval: Approval) -> dict[str, Any]:
    """The approvals-table row of an approval as it stands."""
    return {
        "id": approval.id,
        "decision_id": approval.decision_id,
        "agent": approval.agent,
        "action": approval.action,
        "state": approval.state.value,
        "route_id": approval.route.id,
        "groups": json.dumps(list(approval.route.groups)),
        "deadline": approval.deadline,
        "risk": approval.risk,
        "shape": approval.shape,
        "body": json.dumps(approval.to_json(), ensure_ascii=False, sort_keys=True),
    }


class ApprovalDesk:
    """Pending approvals by id, counts by agent, and callbacks waiting on decisions."""

    def __init__(self, store: ApprovalRows) -> None:
        self._store = store
        self._pending: dict[str, Approval] = {}
        # (deadline, id) of every pending approval, entries of settled or re-timed ones
        # left in place and skipped when they surface: the timers look at the head only.
        self._deadlines: list[tuple[str, str]] = []
        self._per_agent: Counter[str] = Counter()
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._watch_lock = threading.Lock()
        self.changed = threading.Condition()
        for row in store.approval_rows(state=ApprovalState.PENDING.value, limit=None):
            self.put(Approval.from_json(json.loads(row["body"])))

    # -- the approvals -----------------------------------------------------------------

    def put(self, approval: Approval) -> None:
        """Keep an approval as it stands after a step (dropped from memory once settled)."""
        held = self._pending.pop(approval.id, None)
        if held is not None:
            self._per_agent[held.agent] -= 1
        if approval.pending:
            self._pending[approval.id] = approval
            self._per_agent[approval.agent] += 1
            if held is None or held.deadline != approval.deadline:
                heapq.heappush(self._deadlines, (approval.deadline, approval.id))
        with self.changed:
            self.changed.notify_all()

    def get(self, approval_id: str) -> Approval | None:
        """The approval as it stands: pending ones from memory, others from the store."""
        held = self._pending.get(approval_id)
        if held is not None:
            return held
        row = self._store.approval_row(approval_id=approval_id)
        return None if row is None else Approval.from_json(json.loads(row["body"]))

    def forget(self, approval_id: str) -> None:
        """Drop a pending approval whose opening failed to commit."""
        held = self._pending.pop(approval_id, None)
        if held is not None:
            self._per_agent[held.agent] -= 1

    def reload(self, approval_id: str) -> None:
        """Take the stored state back after a step's commit failed."""
        self.forget(approval_id)
        row = self._store.approval_row(approval_id=approval_id)
        if row is not None:
            self.put(Approval.from_json(json.loads(row["body"])))

    def refresh(self, approval_id: str) -> Approval | None:
        """Take the stored state of an approval another process may have stepped on.

        The one held here stays when it is what the store holds (this process's own
        step, read back), so nothing of it changes, down to its arguments' order.
        Returns the approval as it now stands, or None if the store has no such row.
        """
        row = self._store.approval_row(approval_id=approval_id)
        if row is None:
            return None
        held = self._pending.get(approval_id)
        if held is not None and approval_row(held)["body"] == row["body"]:
            return held
        stored = Approval.from_json(json.loads(row["body"]))
        self.forget(approval_id)
        self.put(stored)
        return stored

    def pending_for(self, agent: str) -> int:
        """How many approvals the agent has pending."""
        return self._per_agent[agent]

    def pending(self) -> Iterable[Approval]:
        """Every pending approval (a snapshot)."""
        return list(self._pending.values())

    def due(self, at: str) -> list[Approval]:
        """The pending approvals whose deadline is at or before `at`, earliest first.

        Costs O(k log n) for k due, so the timers can ask twice a second with ten
        thousand approvals pending.
        """
        out: list[Approval] = []
        seen: set[str] = set()
        while self._deadlines and self._deadlines[0][0] <= at:
            deadline, approval_id = heapq.heappop(self._deadlines)
            held = self._pending.get(approval_id)
            if held is not None and held.deadline == deadline and approval_id not in seen:
                seen.add(approval_id)
                out.append(held)
        return out

    def next_deadline(self) -> str | None:
        """The earliest deadline of a pending approval."""
        while self._deadlines:
            deadline, approval_id = self._deadlines[0]
            held = self._pending.get(approval_id)
            if held is not None and held.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)
        return None

    # -- waiting -----------------------------------------------------------------------

    def watch(self, decision_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` once when the decision's approval settles; returns an undo."""
        with self._watch_lock:
            self._watchers.setdefault(decision_id, []).append(callback)

        def cancel() -> None:
            with self._watch_lock:
                callbacks = self._watchers.get(decision_id)
                if callbacks and callback in callbacks:
                    callbacks.remove(callback)
                    if not callbacks:
                        del self._watchers[decision_id]

        return cancel

    def settled(self, decision_id: str) -> None:
        """Tell every watcher of the decision that its approval settled."""
        with self._watch_lock:
            callbacks = self._watchers.pop(decision_id, [])
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one broken watcher must not starve the others
                _log.exception("a watcher of decision %s failed", decision_id)
