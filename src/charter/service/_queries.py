"""Reading what is recorded: decisions with their state, approvals with their context.

Nothing here writes. The approvals a reader sees come from the desk (the newest state,
even while a step commits); everything else from the store's indexes and the ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

from charter.approvals import Approval
from charter.errors import LedgerError, NotFound
from charter.ledger import LedgerEntry, events
from charter.model import ActionRequest, AgentState, Decision
from charter.policy import decide
from charter.service._audit import load_recorded_bundle
from charter.service._records import ApprovalView, DecisionRecord, DecisionView, state_of
from charter.service._session import Session
from charter.store import ApprovalFilters, DecisionFilters

__all__ = ["Queries"]


class Queries:
    """Views of decisions and approvals for the API, the reviewer UI and the SDK."""

    def __init__(self, session: Session) -> None:
        self._s = session

    # -- decisions ---------------------------------------------------------------------

    def record_of(
        self, row: Mapping[str, Any], request: ActionRequest | None, *, replayed: bool
    ) -> DecisionRecord:
        """The record of an indexed decision; `request` as asked, else as stored."""
        s = self._s
        entry = s.store.entry(int(row["seq"]))
        if entry is None:  # the index and the ledger are written together
            raise LedgerError(f"decision `{row['id']}` is indexed but not in the ledger")
        payload = entry.payload_object()
        grant = None
        if row["grant_id"] is not None:
            grant = s.ticket(row["grant_id"], row["grant_expires_at"], row["grant_args_hash"])
        if request is None:
            stored = payload["request"]
            request = ActionRequest(
                stored["agent"], stored["action"], stored.get("args", {}), stored.get("context", {})
            )
        return DecisionRecord(
            row["id"],
            entry.seq,
            entry.at,
            request,
            Decision.from_json(payload["decision"]),
            grant,
            replayed=replayed,
            approval=self._approval_summary(row, entry),
        )

    def _approval_summary(
        self, row: Mapping[str, Any], entry: LedgerEntry
    ) -> dict[str, Any] | None:
        """What a decision's agent sees of its approval: state, deadline, approved args."""
        state = row.get("approval_state")
        if state is None:
            return None
        if state == "refused":
            refused = next(
                (
                    e.payload_object()
                    for e in self._s.store.entries(after=entry.seq, limit=1)
                    if e.kind == events.APPROVAL_REFUSED
                ),
                {},
            )
            return {"id": None, "state": "refused", **refused}
        approval = self._s.desk.get(f"apr_{row['id']}")
        if approval is None:
            return {"id": f"apr_{row['id']}", "state": state}
        return {
            "id": approval.id,
            "state": approval.state.value,
            "kind": approval.kind,
            "route": approval.route.id,
            "deadline": approval.deadline,
            "args": dict(approval.args),
            "args_hash": approval.args_hash,
            "modified": bool(approval.modifications),
            "resolution": dict(approval.resolution) if approval.resolution else None,
        }

    def get_decision(self, decision_id: str) -> DecisionView | None:
        """A recorded decision with its state now (allowed, redeemed, executed, ...)."""
        row = self._s.store.decision_row(decision_id=decision_id)
        if row is None:
            return None
        return DecisionView(self.record_of(row, None, replayed=False), state_of(row), row)

    def _views(self, rows: Sequence[Mapping[str, Any]]) -> list[DecisionView]:
        return [
            DecisionView(self.record_of(row, None, replayed=False), state_of(row), row)
            for row in rows
        ]

    def recent_decisions(
        self, agent: str, action: str, *, limit: int = 5, before_seq: int | None = None
    ) -> list[DecisionView]:
        """The agent's latest decisions on this action, newest first, with outcomes."""
        rows = self._s.store.decision_rows(
            agent=agent, action=action, before_seq=before_seq, limit=limit
        )
        return self._views(rows)

    def search_decisions(
        self, *, limit: int = 50, **filters: Unpack[DecisionFilters]
    ) -> list[DecisionView]:
        """Decisions matching every filter given, newest first (`before_seq` pages)."""
        return self._views(self._s.store.decision_rows(limit=limit, **filters))

    def ledger_page(self, after: int = 0, limit: int = 100) -> list[LedgerEntry]:
        """Up to `limit` entries after `after`, in order."""
        return list(self._s.store.entries(after=after, limit=limit))

    # -- approvals ---------------------------------------------------------------------

    def pending(self, approval_id: str) -> Approval:
        """The approval as it stands now.

        Raises:
            NotFound: no such approval.
        """
        approval = self._s.desk.get(approval_id)
        if approval is None:
            raise NotFound(f"no approval `{approval_id}`")
        return approval

    def view(self, approval: Approval) -> ApprovalView:
        """An approval with its decision, the agent's context and profile, and runbook."""
        s = self._s
        row = s.store.decision_row(decision_id=approval.decision_id)
        entry = s.store.entry(int(row["seq"])) if row is not None else None
        payload = entry.payload_object() if entry is not None else {}
        decision = payload.get("decision", {})
        profile = dict(payload.get("provenance", {}))
        profile["autonomy"] = decision.get("autonomy_level")
        runbook = approval.runbook
        text = None
        if runbook is not None:
            text = s.bundle.runbooks.get(runbook)
            if text is None:  # deployed since: the recorded bundle still has it
                with contextlib.suppress(LedgerError, KeyError):
                    recorded = load_recorded_bundle(s.store, decision["policy_version"])
                    text = recorded.runbooks.get(runbook) if recorded else None
        context = payload.get("request", {}).get("context", {})
        halt = s.halt_over(approval.agent, approval.action) if approval.pending else None
        halted = None if halt is None else halt.reason or "halted"
        return ApprovalView(approval.to_json(), decision, context, profile, text, halted)

    def count_approvals(self, **filters: Unpack[ApprovalFilters]) -> int:
        """How many approvals match the filters (`state` is `pending` unless given)."""
        return self._s.store.count_approvals(**filters)

    def get_approval(self, approval_id: str) -> ApprovalView | None:
        """An approval with its decision, the agent's context and its runbook."""
        approval = self._s.desk.get(approval_id)
        return None if approval is None else self.view(approval)

    def approvals(
        self, *, limit: int = 100, offset: int = 0, **filters: Unpack[ApprovalFilters]
    ) -> list[ApprovalView]:
        """Approvals by deadline, then highest risk first, filtered as asked."""
        rows = self._s.store.approval_rows(limit=limit, offset=offset, **filters)
        out = []
        for row in rows:
            approval = self._s.desk.get(row["id"])  # the newest state, even mid-commit
            if approval is not None:
                out.append(self.view(approval))
        return out

    def similar_approvals(self, approval_id: str) -> list[ApprovalView]:
        """Pending approvals of the same agent, action and argument shape as this one."""
        approval = self.pending(approval_id)
        rows = self._s.store.approval_rows(state="pending", shape=approval.shape, limit=1000)
        held = (self._s.desk.get(r["id"]) for r in rows)
        return [self.view(a) for a in held if a is not None and a.pending]

    def autonomy_preview(self, approval_id: str) -> list[dict[str, Any]]:
        """What the live policy would decide for this request at each autonomy level."""
        s = self._s
        approval = self.pending(approval_id)
        view = self.view(approval)
        request = ActionRequest(approval.agent, approval.action, approval.args, dict(view.context))
        recorded = s.store.decision_row(decision_id=approval.decision_id)
        entry = s.store.entry(int(recorded["seq"])) if recorded else None
        state = AgentState.from_json(entry.payload_object()["state"]) if entry else AgentState()
        now = dt.datetime.fromisoformat(approval.opened_at)
        bundle = s.bundle
        return [
            {
                "level": level,
                "max_risk": max_risk,
                "verdict": decide(
                    request, bundle, dataclasses.replace(state, autonomy=level), now
                ).verdict.value,
                "current": level == view.profile.get("autonomy"),
            }
            for level, max_risk in bundle.levels.items()
        ]
