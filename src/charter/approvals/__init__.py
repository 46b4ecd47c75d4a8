"""Approvals: the pure state machine behind `require_approval` and `escalate` decisions.

An approval is opened for a `require_approval` or `escalate` decision and routed by the
decision's escalation route. Each step here takes the approval as it stands, who acts and
the time (passed in, never read), and returns the approval after the step together with
the ledger payload that records it; a step that is not allowed raises and changes
nothing. The gateway stores the approvals, runs their timers and records each step's
payload in the ledger; nothing here does I/O.

The rules every step enforces:

| step    | allowed when                                                                  |
| ------- | ----------------------------------------------------------------------------- |
| claim   | pending; the reviewer is in one of the route's groups                          |
| approve | pending; in a group; has not voted on these arguments; not an agent key       |
| deny    | pending; in a group; not an agent key; a reason is given                      |
| modify  | pending; in a group; not an agent key; arguments differ from the current ones |
| expire  | pending and the deadline has passed                                           |

An approval is complete when `route.approvals` different people have approved the
current arguments, at least one of whom is not the agent's owner (an owner never
approves their own agent's action alone). A modification restarts the count: earlier
votes were for other arguments; the reviewer who modifies counts as the first vote.
At the deadline the approval moves to the route's next tier (`on_timeout: route:X`) with a
fresh SLA and a fresh count, or, with `on_timeout: deny`, it expires and the decision is
refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from charter.canonical import canonical_bytes, content_hash
from charter.errors import Conflict, Forbidden, RequestInvalid
from charter.ledger import events
from charter.model import RouteRef

__all__ = [
    "REVIEWING_ROLES",
    "Approval",
    "ApprovalState",
    "Forbidden",
    "Reviewer",
    "Step",
    "Vote",
    "args_shape",
    "claim",
    "complete",
    "deny",
    "diff_args",
    "due",
    "expire",
    "modify",
    "open_approval",
    "vote",
]

#: Roles whose keys may act on approvals (still only within the route's groups).
REVIEWING_ROLES = ("reviewer", "admin")


class ApprovalState(StrEnum):
    """Where an approval stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Reviewer:
    """Who acts on an approval: a person (by identity), their groups and their key."""

    identity: str
    groups: tuple[str, ...]
    key_id: str
    role: str

    def to_json(self) -> dict[str, Any]:
        """The reviewer as recorded in the ledger."""
        return {"reviewer": self.identity, "key_id": self.key_id, "role": self.role}


@dataclass(frozen=True, slots=True)
class Vote:
    """One approval of the current arguments."""

    reviewer: str
    at: str
    key_id: str

    def to_json(self) -> dict[str, Any]:
        """The vote as plain JSON."""
        return {"reviewer": self.reviewer, "at": self.at, "key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class Approval:
    """An approval and everything its steps need: route, deadline, arguments, votes."""

    id: str
    decision_id: str
    agent: str
    action: str
    kind: str
    state: ApprovalState
    route: RouteRef
    tier: int
    opened_at: str
    deadline: str
    risk: int
    args: Mapping[str, Any]
    args_hash: str
    shape: str
    owner: str | None
    runbook: str | None = None
    votes: tuple[Vote, ...] = ()
    claimed_by: str | None = None
    resolution: Mapping[str, Any] | None = None
    modifications: tuple[Mapping[str, Any], ...] = ()
    original_args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Whether people can still act on it."""
        return self.state is ApprovalState.PENDING

    def to_json(self) -> dict[str, Any]:
        """The approval as stored and as the API shows it."""
        return {
            "id": self.id,
            "decision_id": self.decision_id,
            "agent": self.agent,
            "action": self.action,
            "kind": self.kind,
            "state": self.state.value,
            "route": self.route.to_json(),
            "tier": self.tier,
            "required": self.route.approvals,
            "opened_at": self.opened_at,
            "deadline": self.deadline,
            "risk": self.risk,
            "args": dict(self.args),
            "original_args": dict(self.original_args),
            "args_hash": self.args_hash,
            "shape": self.shape,
            "owner": self.owner,
            "runbook": self.runbook,
            "votes": [v.to_json() for v in self.votes],
            "claimed_by": self.claimed_by,
            "resolution": dict(self.resolution) if self.resolution is not None else None,
            "modifications": [dict(m) for m in self.modifications],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Approval:
        """Rebuild an approval from `to_json`'s form."""
        return cls(
            id=obj["id"],
            decision_id=obj["decision_id"],
            agent=obj["agent"],
            action=obj["action"],
            kind=obj["kind"],
            state=ApprovalState(obj["state"]),
            route=RouteRef.from_json(obj["route"]),
            tier=int(obj["tier"]),
            opened_at=obj["opened_at"],
            deadline=obj["deadline"],
            risk=int(obj["risk"]),
            args=obj["args"],
            original_args=obj.get("original_args", obj["args"]),
            args_hash=obj["args_hash"],
            shape=obj["shape"],
            owner=obj.get("owner"),
            runbook=obj.get("runbook"),
            votes=tuple(Vote(v["reviewer"], v["at"], v["key_id"]) for v in obj["votes"]),
            claimed_by=obj.get("claimed_by"),
            resolution=obj.get("resolution"),
            modifications=tuple(obj.get("modifications", ())),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What a step did: the approval after it and the ledger event that records it."""

    approval: Approval
    kind: str
    payload: dict[str, Any]

    @property
    def settled(self) -> bool:
        """Whether the approval is no longer pending after this step."""
        return not self.approval.pending


def args_shape(agent: str, action: str, args: Mapping[str, Any]) -> str:
    """A digest of the agent, the action and the arguments' keys and value types.

    Requests with the same shape differ only in values (two refunds of different
    amounts), which is what lets a reviewer approve or deny a flood of them as a batch.
    """

    def kinds(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: kinds(v) for k, v in value.items()}
        if isinstance(value, list):
            return ["list"]
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int | float):
            return "number"
        return type(value).__name__

    body = canonical_bytes({"agent": agent, "action": action, "args": kinds(dict(args))})
    return hashlib.sha256(body).hexdigest()[:32]


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def open_approval(
    *,
    decision_id: str,
    agent: str,
    action: str,
    kind: str,
    route: RouteRef,
    risk: int,
    args: Mapping[str, Any],
    owner: str | None,
    runbook: str | None,
    at: str,
) -> Step:
    """Open the approval of a decision that needs people, due after the route's SLA."""
    deadline = _stamp(_time(at) + dt.timedelta(seconds=route.sla_seconds))
    approval = Approval(
        id=f"apr_{decision_id}",
        decision_id=decision_id,
        agent=agent,
        action=action,
        kind=kind,
        state=ApprovalState.PENDING,
        route=route,
        tier=0,
        opened_at=at,
        deadline=deadline,
        risk=risk,
        args=args,
        original_args=args,
        args_hash=content_hash(dict(args)),
        shape=args_shape(agent, action, args),
        owner=owner,
        runbook=runbook,
    )
    payload = {
        "approval_id": approval.id,
        "decision_id": decision_id,
        "kind": kind,
        "route": route.to_json(),
        "deadline": deadline,
        "args_hash": approval.args_hash,
    }
    return Step(approval, events.APPROVAL_OPENED, payload)


def _check_reviewer(approval: Approval, reviewer: Reviewer) -> None:
    if not approval.pending:
        raise Conflict(
            f"approval `{approval.id}` is already {approval.state.value}", code="not_pending"
        )
    if reviewer.role not in REVIEWING_ROLES:
        raise Forbidden(
            "role_cannot_review",
            f"a `{reviewer.role}` key cannot act on approvals; use a reviewer key",
        )
    if not set(reviewer.groups) & set(approval.route.groups):
        groups = ", ".join(approval.route.groups)
        raise Forbidden(
            "not_in_group",
            f"`{reviewer.identity}` is not in the route's reviewer groups ({groups})",
        )


def _base(approval: Approval, reviewer: Reviewer) -> dict[str, Any]:
    return {
        "approval_id": approval.id,
        "decision_id": approval.decision_id,
        **reviewer.to_json(),
    }


def claim(approval: Approval, reviewer: Reviewer, at: str) -> Step:
    """A reviewer takes the approval on, so others see someone is on it."""
    _check_reviewer(approval, reviewer)
    after = replace(approval, claimed_by=reviewer.identity)
    return Step(after, events.APPROVAL_CLAIMED, _base(approval, reviewer))


def complete(approval: Approval) -> bool:
    """Whether the votes on the current arguments meet the route's quorum."""
    people = {v.reviewer for v in approval.votes}
    if len(people) < approval.route.approvals:
        return False
    return approval.owner is None or any(p != approval.owner for p in people)


def vote(approval: Approval, reviewer: Reviewer, at: str, note: str = "") -> Step:
    """Approve the current arguments; the approval completes when the quorum is met."""
    _check_reviewer(approval, reviewer)
    if any(v.reviewer == reviewer.identity for v in approval.votes):
        raise Conflict(
            f"`{reviewer.identity}` has already approved this; "
            "the same person cannot count twice toward the quorum",
            code="already_voted",
        )
    votes = (*approval.votes, Vote(reviewer.identity, at, reviewer.key_id))
    after = replace(approval, votes=votes)
    done = complete(after)
    if done:
        after = replace(
            after,
            state=ApprovalState.APPROVED,
            resolution={"code": "approved", "by": reviewer.identity, "at": at, "reason": note},
        )
    payload = {
        **_base(approval, reviewer),
        "votes": len({v.reviewer for v in votes}),
        "required": approval.route.approvals,
        "complete": done,
        "args_hash": approval.args_hash,
        "note": note,
    }
    if not done and approval.owner is not None and {v.reviewer for v in votes} == {approval.owner}:
        payload["waiting_for"] = "a reviewer other than the agent's owner"
    return Step(after, events.APPROVAL_APPROVED, payload)


def deny(approval: Approval, reviewer: Reviewer, at: str, reason: str) -> Step:
    """Refuse the action; one reviewer in the route's groups suffices."""
    _check_reviewer(approval, reviewer)
    if not reason.strip():
        raise RequestInvalid("reason", "a denial needs a reason the agent's owner can read")
    after = replace(
        approval,
        state=ApprovalState.DENIED,
        resolution={"code": "denied", "by": reviewer.identity, "at": at, "reason": reason},
    )
    return Step(after, events.APPROVAL_DENIED, {**_base(approval, reviewer), "reason": reason})


def diff_args(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The top-level argument changes: one `{field, op, before, after}` per key changed."""
    changes: list[dict[str, Any]] = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            changes.append({"field": key, "op": "removed", "before": before[key]})
        elif key not in before:
            changes.append({"field": key, "op": "added", "after": after[key]})
        elif canonical_bytes(before[key]) != canonical_bytes(after[key]):
            changes.append(
                {"field": key, "op": "changed", "before": before[key], "after": after[key]}
            )
    return changes


def modify(
    approval: Approval,
    reviewer: Reviewer,
    args: Mapping[str, Any],
    at: str,
    *,
    redecision_id: str,
    note: str = "",
) -> Step:
    """Replace the arguments with a reviewer's; the reviewer's change is their vote.

    The gateway decides the modified request again first (`redecision_id`) and refuses
    the modification when the policy denies it.
    """
    _check_reviewer(approval, reviewer)
    changes = diff_args(approval.args, args)
    if not changes:
        raise RequestInvalid("args", "the modified arguments are the same as the current ones")
    record = {"by": reviewer.identity, "at": at, "diff": changes, "decision_id": redecision_id}
    after = replace(
        approval,
        args=args,
        args_hash=content_hash(dict(args)),
        votes=(Vote(reviewer.identity, at, reviewer.key_id),),
        modifications=(*approval.modifications, record),
    )
    done = complete(after)
    if done:
        after = replace(
            after,
            state=ApprovalState.APPROVED,
            resolution={"code": "modified", "by": reviewer.identity, "at": at, "reason": note},
        )
    payload = {
        **_base(approval, reviewer),
        "diff": changes,
        "args_hash": after.args_hash,
        "previous_args_hash": approval.args_hash,
        "redecision_id": redecision_id,
        "complete": done,
        "note": note,
    }
    return Step(after, events.APPROVAL_MODIFIED, payload)


def expire(approval: Approval, at: str, routes: Mapping[str, RouteRef]) -> Step:
    """Fire the deadline: on to the next tier, or expire (the decision is refused).

    A next route the live policy no longer defines expires the approval: Charter fails
    closed rather than leave it with nobody to act on it.
    """
    if not approval.pending:
        raise Conflict(f"approval `{approval.id}` is already {approval.state.value}")
    if at < approval.deadline:
        raise Conflict(f"approval `{approval.id}` is not due until {approval.deadline}")
    base = {
        "approval_id": approval.id,
        "decision_id": approval.decision_id,
        "deadline": approval.deadline,
    }
    on_timeout = approval.route.on_timeout
    target = on_timeout.removeprefix("route:") if on_timeout.startswith("route:") else None
    nxt = routes.get(target) if target is not None else None
    if nxt is not None:
        deadline = _stamp(_time(at) + dt.timedelta(seconds=nxt.sla_seconds))
        after = replace(
            approval,
            route=nxt,
            tier=approval.tier + 1,
            deadline=deadline,
            votes=(),
            claimed_by=None,
        )
        payload = {
            **base,
            "from_route": approval.route.id,
            "route": nxt.to_json(),
            "new_deadline": deadline,
            "tier": after.tier,
        }
        return Step(after, events.APPROVAL_ESCALATED, payload)
    reason = (
        f"nobody decided within the SLA of route `{approval.route.id}`"
        if target is None
        else f"the next route `{target}` is not defined by the live policy"
    )
    after = replace(
        approval,
        state=ApprovalState.EXPIRED,
        resolution={"code": "expired", "by": "charter", "at": at, "reason": reason},
    )
    return Step(
        after, events.APPROVAL_EXPIRED, {**base, "route": approval.route.id, "reason": reason}
    )


def due(approvals: Sequence[Approval], at: str) -> list[Approval]:
    """The pending approvals whose deadline has passed at `at`, earliest first."""
    return sorted(
        (a for a in approvals if a.pending and a.deadline <= at), key=lambda a: a.deadline
    )
