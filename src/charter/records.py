"""What the service hands back: recorded decisions, their state, redemptions.

These are the edge's views of ledger entries and the decisions index; the core's
`Decision` sits inside them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.canonical import content_hash
from charter.grants import GrantTicket
from charter.model import ActionRequest, Decision, Verdict

__all__ = [
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
            "idempotent_replay": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class DecisionView:
    """A recorded decision and where it stands now."""

    record: DecisionRecord
    state: str
    row: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The decision, its state, its grant (without the token) and its outcome."""
        out = {**self.record.to_json(), "state": self.state}
        out.pop("idempotent_replay", None)
        grant = self.record.grant
        out["grant"] = (
            {
                "id": grant.id,
                "expires_at": grant.expires_at,
                "args_hash": grant.args_hash,
                "redeemed": self.row["redeemed_seq"] is not None,
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


def state_of(row: Mapping[str, Any]) -> str:
    """Where a decision stands: its verdict, then redeemed, then executed or failed."""
    if row["outcome_seq"] is not None:
        return "executed" if row["outcome_success"] else "failed"
    if row["redeemed_seq"] is not None:
        return "redeemed"
    return _STATES[row["verdict"]]


def payload_hash(request: ActionRequest) -> str:
    """What an idempotency key is bound to: the request less its ids."""
    return content_hash(
        {
            "agent": request.agent,
            "action": request.action,
            "args": dict(request.args),
            "context": dict(request.context),
        }
    )


def conflict_message(key: str) -> str:
    """Why a reused idempotency key was refused, and what to do."""
    return (
        f"idempotency key `{key}` was already used with a different request; "
        "use a new key for a new request"
    )
