"""The values the SDK hands back, the same whether Charter runs remotely or in-process.

Each reads from the HTTP API's JSON (`from_json`); the embedded adapter builds them from
the service's own records. Unknown JSON fields are ignored so that a newer server does
not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.model import Decision, Reason, RouteRef, Verdict

__all__ = ["WAITING", "DecisionResult", "DecisionStatus", "Grant"]

#: The states of a decision still waiting for people: for approval, or taken over.
WAITING = frozenset({"pending", "escalated"})


@dataclass(frozen=True, slots=True)
class Grant:
    """A single-use permission to run one allowed action with exactly the decided args.

    Attributes:
        id: the grant's id.
        token: the secret presented when redeeming; keep it out of logs.
        expires_at: RFC 3339 UTC time after which redeeming is refused.
        args_hash: the hash of the canonical arguments the grant is bound to.
    """

    id: str
    token: str
    expires_at: str
    args_hash: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Grant:
        """Read a grant from the API's JSON."""
        return cls(str(obj["id"]), str(obj["token"]), str(obj["expires_at"]), str(obj["args_hash"]))

    def __repr__(self) -> str:
        return f"Grant(id={self.id!r}, expires_at={self.expires_at!r}, token=<hidden>)"


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """Charter's answer to one request: the recorded decision and, when allowed, a grant.

    Attributes:
        id: the decision's id; wait on it, or find it in the ledger.
        decision: the verdict with the risk, factors, reasons and policy version behind it.
        grant: the single-use grant for an allowed action, else None.
        replayed: True when an idempotency key matched an earlier request and this is
            that earlier decision, not a new one.
        seq: the decision's position in the ledger.
        at: when it was decided, RFC 3339 UTC.
    """

    id: str
    decision: Decision
    grant: Grant | None = None
    replayed: bool = False
    seq: int | None = None
    at: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DecisionResult:
        """Read the API's answer to `POST /v1/decisions`."""
        grant = obj.get("grant")
        return cls(
            id=str(obj["id"]),
            decision=Decision.from_json(obj),
            grant=Grant.from_json(grant) if grant and grant.get("token") else None,
            replayed=bool(obj.get("idempotent_replay", False)),
            seq=obj.get("seq"),
            at=obj.get("at"),
        )

    @property
    def verdict(self) -> Verdict:
        """Shorthand for `decision.verdict`."""
        return self.decision.verdict

    @property
    def allowed(self) -> bool:
        """True when the action may run now."""
        return self.decision.verdict is Verdict.ALLOW

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Shorthand for `decision.reasons`."""
        return self.decision.reasons

    @property
    def route(self) -> RouteRef | None:
        """Where a decision that needs people went."""
        return self.decision.route

    @property
    def action(self) -> str:
        """The action decided on."""
        return self.decision.action


@dataclass(frozen=True, slots=True)
class DecisionStatus:
    """A decision and where it stands now.

    Attributes:
        id: the decision's id.
        state: `allowed`, `pending` (awaiting approval), `escalated`, `denied`,
            `redeemed`, `executed`, `failed`, or another state a newer server reports;
            `wait` returns once it is none of `WAITING`.
        result: the decision as recorded; its grant only when the answer carries the
            token (reading a decision does not hand out its token).
        outcome: the recorded outcome (`seq`, `success`), or None before one is reported.
    """

    id: str
    state: str
    result: DecisionResult
    outcome: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DecisionStatus:
        """Read the API's answer to `GET /v1/decisions/{id}`."""
        return cls(
            str(obj["id"]), str(obj["state"]), DecisionResult.from_json(obj), obj.get("outcome")
        )

    @property
    def waiting(self) -> bool:
        """True while people have not decided yet."""
        return self.state in WAITING

    @property
    def verdict(self) -> Verdict:
        """The verdict first recorded for the decision."""
        return self.result.verdict

    @property
    def grant(self) -> Grant | None:
        """The grant, when the decision (or its approval) yielded one still usable."""
        return self.result.grant
