"""What the service hands back: recorded decisions, their state, redemptions.

These are the edge's views of ledger entries and the decisions index; the core's
`Decision` sits inside them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.model import ActionRequest, Decision, Verdict
from charter.service._tickets import GrantTicket

__all__ = [
    "ApprovalView",
    "DecisionRecord",
    "DecisionView",
    "Redemption",
    "conflict_message",
    "payload_hash",
    "state_of",
]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision as recorded: its id, ledger position and time, and the decision."""

    id: str
    seq: int
    at: str
    request: ActionRequest
    decision: Decision
    grant: GrantTicket | None = None
    replayed: bool = False
    approval: Mapping[str, Any] | None = None

    @property
    def verdict(self) -> Verdict:
        """Shorthand for `decision.verdict`."""
        return self.decision.verdict

    def to_json(self) -> dict[str, Any]:
        """The decision with its id, ledger position and grant, as the CLI and API show it."""
        return {
            "id": self.id,
            "seq": self.seq,
            "at": self.at,
            **self.decision.to_json(),
            "grant": self.grant.to_json() if self.grant else None,
            "approval": dict(self.approval) if self.approval is not None else None,
            "idempotent_replay": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A recorded decision and where it stands now."""

    record: DecisionRecord
    state: str
    row: Mapping[str, Any]

    def to_json(self, *, with_token: bool = False) -> dict[str, Any]:
        """The decision, its state, its grant, its approval and its outcome.

        Args:
            with_token: include the grant's token; only for the agent the decision is
                for, which needs it to redeem a grant issued by an approval.
        """
        out = {**self.record.to_json(), "state": self.state}
        out.pop("idempotent_replay", None)
        grant = self.record.grant
        out["grant"] = (
            {
                "id": grant.id,
                "expires_at": grant.expires_at,
                "args_hash": grant.args_hash,
                "redeemed": self.row["redeemed_seq"] is not None,
                **({"token": grant.token} if with_token else {}),
            }
            if grant
            else None
        )
        out["outcome"] = (
            {"seq": self.row["outcome_seq"], "success": bool(self.row["outcome_success"])}
            if self.row["outcome_seq"] is not None
            else None
        )
        return out

    @property
    def settled(self) -> bool:
        """Whether the agent has its answer (nothing is waiting for people)."""
        return self.state not in ("pending", "escalated")


@dataclass(frozen=True, slots=True)
class ApprovalView:
    """An approval with what a reviewer needs to decide it: the decision and the agent.

    `approval` is the approval's own JSON (see `charter.approvals.Approval.to_json`);
    `decision` the recorded decision's JSON; `context` the agent's stated context
    (rationale, confidence, alternatives, data sources); `profile` the agent as the
    decision saw it; `runbook_text` the runbook's markdown when one applies; `halted`
    the reason of a halt in force over a pending one.
    """

    approval: Mapping[str, Any]
    decision: Mapping[str, Any]
    context: Mapping[str, Any]
    profile: Mapping[str, Any]
    runbook_text: str | None = None
    #: The reason of the halt that freezes it (pending, it cannot be approved), or None.
    halted: str | None = None

    @property
    def id(self) -> str:
        """The approval's id."""
        return str(self.approval["id"])

    @property
    def state(self) -> str:
        """pending, approved, denied or expired."""
        return str(self.approval["state"])

    def to_json(self) -> dict[str, Any]:
        """Everything the API and the reviewer UI show of an approval."""
        return {
            **self.approval,
            "factors": self.decision.get("factors", []),
            "reasons": self.decision.get("reasons", []),
            "policy_version": self.decision.get("policy_version"),
            "verdict": self.decision.get("verdict"),
            "context": dict(self.context),
            "agent_profile": dict(self.profile),
            "runbook_text": self.runbook_text,
            "halted": self.halted,
        }


@dataclass(frozen=True, slots=True)
class Redemption:
    """A grant redeemed: the action may run now, once."""

    grant_id: str
    decision_id: str
    seq: int
    at: str

    def to_json(self) -> dict[str, Any]:
        """The redemption as the API returns it."""
        return {
            "grant_id": self.grant_id,
            "decision_id": self.decision_id,
            "seq": self.seq,
            "redeemed_at": self.at,
        }


_STATES = {
    "allow": "allowed",
    "require_approval": "pending",
    "escalate": "escalated",
    "deny": "denied",
}


#: Where a decision stands while or after its approval is open, by approval state.
_APPROVAL_STATES = {
    "approved": "approved",
    "denied": "denied",
    "expired": "expired",
    "refused": "denied",
}


def state_of(row: Mapping[str, Any]) -> str:
    """Where a decision stands: executed or failed, redeemed, its approval, its verdict."""
    if row["outcome_seq"] is not None:
        return "executed" if row["outcome_success"] else "failed"
    if row["redeemed_seq"] is not None:
        return "redeemed"
    approval = row.get("approval_state")
    if approval is not None and approval in _APPROVAL_STATES:
        return _APPROVAL_STATES[approval]
    return _STATES[row["verdict"]]


def payload_hash(request: ActionRequest) -> str:
    """What an idempotency key is bound to: the request less its ids.

    The request's own `payload_digest`, computed on the first call and kept with it.
    """
    return request.payload_digest


def conflict_message(key: str) -> str:
    """Why a reused idempotency key was refused, and what to do."""
    return (
        f"idempotency key `{key}` was already used with a different request; "
        "use a new key for a new request"
    )
