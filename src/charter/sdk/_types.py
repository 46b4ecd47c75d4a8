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

__all__ = [
    "REFUSED",
    "WAITING",
    "ApprovalInfo",
    "DecisionResult",
    "DecisionStatus",
    "Grant",
    "Resolution",
]

#: The states of a decision still waiting for people: for approval, or taken over.
WAITING = frozenset({"pending", "escalated"})
#: The states of a decision that will not run: denied (by policy, a reviewer, or the
#: pending cap) or expired (nobody approved it in time).
REFUSED = frozenset({"denied", "expired"})


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Resolution:
    """How people (or a deadline) settled an approval.

    Attributes:
        code: `approved`, `modified`, `denied`, `expired`, or `too_many_pending` when the
            approval was never opened because the agent had too many pending.
        by: who settled it: a reviewer's name, `charter` for a deadline, or None.
        at: when, RFC 3339 UTC, or None.
        reason: the reviewer's reason or note, or why Charter settled it.
    """

    code: str
    by: str | None = None
    at: str | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Resolution:
        """Read a resolution from the API's JSON."""
        return cls(
            str(obj.get("code", "")),
            _text(obj.get("by")),
            _text(obj.get("at")),
            _text(obj.get("reason")),
        )


@dataclass(frozen=True, slots=True)
class ApprovalInfo:
    """What the agent sees of the approval a decision opened.

    Attributes:
        id: the approval's id; None when it was refused before opening.
        state: `pending`, `approved`, `denied`, `expired`, or `refused` (the per-agent
            pending cap).
        kind: `approval` or `escalation`.
        route: the id of the route it is on now (a timeout may move it up a tier).
        deadline: when the route's SLA runs out, RFC 3339 UTC.
        args: the arguments to approve, or approved: a reviewer may have modified them,
            and the grant is bound to these.
        args_hash: the canonical hash of `args`, the one the grant is bound to.
        modified: True when a reviewer changed the arguments.
        resolution: how it was settled, or None while pending.
    """

    id: str | None
    state: str
    kind: str | None = None
    route: str | None = None
    deadline: str | None = None
    args: Mapping[str, Any] | None = None
    args_hash: str | None = None
    modified: bool = False
    resolution: Resolution | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ApprovalInfo:
        """Read a decision's `approval` from the API's JSON."""
        state = str(obj.get("state", ""))
        resolved = obj.get("resolution")
        resolution = Resolution.from_json(resolved) if isinstance(resolved, Mapping) else None
        if resolution is None and state == "refused":  # never opened: the refusal says why
            resolution = Resolution(
                str(obj.get("code", "refused")), reason=_text(obj.get("reason"))
            )
        args = obj.get("args")
        return cls(
            id=_text(obj.get("id")),
            state=state,
            kind=_text(obj.get("kind")),
            route=_text(obj.get("route")),
            deadline=_text(obj.get("deadline")),
            args=dict(args) if isinstance(args, Mapping) else None,
            args_hash=_text(obj.get("args_hash")),
            modified=bool(obj.get("modified", False)),
            resolution=resolution,
        )


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
        approval: the approval it opened, as it stood when read, for a decision that
            needs people; else None.
    """

    id: str
    decision: Decision
    grant: Grant | None = None
    replayed: bool = False
    seq: int | None = None
    at: str | None = None
    approval: ApprovalInfo | None = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DecisionResult:
        """Read the API's answer to `POST /v1/decisions`."""
        grant = obj.get("grant")
        approval = obj.get("approval")
        return cls(
            id=str(obj["id"]),
            decision=Decision.from_json(obj),
            grant=Grant.from_json(grant) if grant and grant.get("token") else None,
            replayed=bool(obj.get("idempotent_replay", False)),
            seq=obj.get("seq"),
            at=obj.get("at"),
            approval=ApprovalInfo.from_json(approval) if isinstance(approval, Mapping) else None,
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

    @property
    def agent(self) -> str:
        """The agent the decision is for."""
        return self.decision.agent

    @property
    def resolution(self) -> Resolution | None:
        """How people (or a deadline) settled the decision's approval, if they have."""
        return self.approval.resolution if self.approval is not None else None


@dataclass(frozen=True, slots=True)
class DecisionStatus:
    """A decision and where it stands now.

    Attributes:
        id: the decision's id.
        state: `allowed`, `pending` (awaiting approval), `escalated` (taken over by
            people), `approved` (a grant was issued), `denied` (by the policy, a
            reviewer, or the pending cap), `expired` (nobody approved it in time),
            `redeemed`, `executed`, `failed`, or another state a newer server reports;
            `wait` returns once it is none of `WAITING`.
        result: the decision as recorded, with its approval; its grant carries the token
            when the reader may redeem it (the decision's own agent, or an admin).
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
    def refused(self) -> bool:
        """True when the action will not run: denied or expired."""
        return self.state in REFUSED

    @property
    def grant(self) -> Grant | None:
        """The grant, with its token, when the decision (or its approval) yielded one."""
        return self.result.grant

    @property
    def approval(self) -> ApprovalInfo | None:
        """The approval the decision opened, or None for one that needed nobody."""
        return self.result.approval

    @property
    def resolution(self) -> Resolution | None:
        """How the approval was settled: by whom, when, and why; None while pending."""
        return self.result.resolution

    @property
    def args(self) -> Mapping[str, Any] | None:
        """The arguments people approved (a reviewer may have modified them).

        These are what the grant is bound to: redeem it with exactly these. None for a
        decision that opened no approval.
        """
        return self.approval.args if self.approval is not None else None
