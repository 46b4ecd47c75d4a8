"""The ledger's event vocabulary: every kind of entry Charter writes, in one place.

Each kind is a constant (its name in the ledger), an `EventKind` in `KINDS` that says what
it records and which payload fields it always carries, and, for the kinds the service
writes, a builder that makes the `NewEvent`. The approval state machine
(`charter.approvals`) builds its own payloads, under the names defined here. Readers of
the state-bearing kinds (halts, autonomy, agents, budgets) are `charter.controls`'s fold.

`docs/ledger.md` documents every kind; a test fails when a kind is written that is not
defined here, or defined here and not documented there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charter.ledger._chain import NewEvent

__all__ = [
    "ACCESS_DENIED",
    "AGENT_UPDATED",
    "ALERT_FIRED",
    "ALERT_NOTIFIED",
    "ALERT_NOTIFY_FAILED",
    "ALERT_RESOLVED",
    "APPROVAL_APPROVED",
    "APPROVAL_CLAIMED",
    "APPROVAL_DENIED",
    "APPROVAL_ESCALATED",
    "APPROVAL_EXPIRED",
    "APPROVAL_MODIFIED",
    "APPROVAL_NOTIFIED",
    "APPROVAL_NOTIFY_FAILED",
    "APPROVAL_OPENED",
    "APPROVAL_REFUSED",
    "AUTONOMY_CHANGED",
    "AUTONOMY_DECLINED",
    "AUTONOMY_PROPOSED",
    "BREAKER_CLOSED",
    "BREAKER_OPENED",
    "DECISION",
    "GRANT_REDEEMED",
    "GRANT_REFUSED",
    "HALT",
    "KEY_CREATED",
    "KEY_REVOKED",
    "KINDS",
    "OUTCOME",
    "OUTCOME_OVERDUE",
    "POLICY_DEPLOYED",
    "RESUME",
    "EventKind",
    "access_denied",
    "agent_updated",
    "approval_refused",
    "autonomy_changed",
    "breaker_closed",
    "breaker_opened",
    "decision",
    "grant_redeemed",
    "grant_refused",
    "halt",
    "key_created",
    "key_revoked",
    "outcome",
    "outcome_overdue",
    "policy_deployed",
    "resume",
]


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of ledger entry: its name, what it records, the fields it always has."""

    name: str
    summary: str
    fields: tuple[str, ...]


DECISION = "decision"
POLICY_DEPLOYED = "policy.deployed"
HALT = "halt"
RESUME = "resume"
AUTONOMY_CHANGED = "autonomy.changed"
AUTONOMY_PROPOSED = "autonomy.proposed"
AUTONOMY_DECLINED = "autonomy.declined"
ALERT_FIRED = "alert.fired"
ALERT_RESOLVED = "alert.resolved"
ALERT_NOTIFIED = "alert.notified"
ALERT_NOTIFY_FAILED = "alert.notify_failed"
AGENT_UPDATED = "agent.updated"
GRANT_REDEEMED = "grant.redeemed"
GRANT_REFUSED = "grant.refused"
OUTCOME = "outcome"
OUTCOME_OVERDUE = "outcome.overdue"
BREAKER_OPENED = "breaker.opened"
BREAKER_CLOSED = "breaker.closed"
ACCESS_DENIED = "access.denied"
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
APPROVAL_OPENED = "approval.opened"
APPROVAL_CLAIMED = "approval.claimed"
APPROVAL_APPROVED = "approval.approved"
APPROVAL_DENIED = "approval.denied"
APPROVAL_MODIFIED = "approval.modified"
APPROVAL_ESCALATED = "approval.escalated"
APPROVAL_EXPIRED = "approval.expired"
APPROVAL_REFUSED = "approval.refused"
APPROVAL_NOTIFIED = "approval.notified"
APPROVAL_NOTIFY_FAILED = "approval.notify_failed"

_APPROVAL_STEP = ("approval_id", "decision_id")
_BREAKER = ("breaker", "action", "agent", "generation")
_DELIVERY = ("delivery_id", "route", "url", "format", "event", "approval_id", "attempt")

#: Every kind Charter writes, by name.
KINDS: Mapping[str, EventKind] = {
    k.name: k
    for k in (
        EventKind(
            DECISION,
            "a decision: the request as stored (data rules applied), the state it saw, the "
            "verdict, and the grant or idempotency key it carries",
            ("decision_id", "request", "redacted", "state", "budgets", "provenance", "decision"),
        ),
        EventKind(
            POLICY_DEPLOYED,
            "the live bundle changed (or a first one went live)",
            ("version", "previous", "files"),
        ),
        EventKind(HALT, "requests that a scope covers stop", ("scope", "target", "reason", "by")),
        EventKind(RESUME, "a halt is lifted", ("scope", "target", "by")),
        EventKind(
            AUTONOMY_CHANGED,
            "an agent's autonomy level is overridden, or restored (`level` null)",
            ("agent", "level", "reason", "by"),
        ),
        EventKind(
            AUTONOMY_PROPOSED,
            "the autonomy controller proposes giving a demoted agent its level back; a "
            "person accepts (an `autonomy.changed`) or declines it",
            ("agent", "level", "from", "rule", "decisions", "reason", "by"),
        ),
        EventKind(
            AUTONOMY_DECLINED,
            "a person declined the controller's proposal",
            ("agent", "level", "reason", "by"),
        ),
        EventKind(
            ALERT_FIRED,
            "an alert rule's condition holds on its figures: fired once while it lasts",
            ("alert", "agent", "action", "severity", "condition", "figure", "value", "sample"),
        ),
        EventKind(
            ALERT_RESOLVED,
            "a firing alert's condition cleared (or its group went quiet)",
            ("alert", "agent", "action", "figure", "value", "fired_at"),
        ),
        EventKind(
            ALERT_NOTIFIED,
            "a webhook took an alert's change",
            ("delivery_id", "alert", "agent", "url", "format", "event", "attempt"),
        ),
        EventKind(
            ALERT_NOTIFY_FAILED,
            "an alert's webhook delivery attempt failed, or was dropped",
            ("delivery_id", "alert", "url", "format", "event", "attempt", "error", "final"),
        ),
        EventKind(AGENT_UPDATED, "an agent registered or changed at run time", ("agent", "by")),
        EventKind(GRANT_REDEEMED, "a grant was redeemed, once", ("grant_id", "decision_id")),
        EventKind(
            GRANT_REFUSED,
            "a redemption was refused: unknown, used, expired or other arguments",
            ("grant_id", "decision_id", "code"),
        ),
        EventKind(
            OUTCOME,
            "what happened when the action ran; once per decision",
            ("decision_id", "success", "error", "duration_ms", "result_digest"),
        ),
        EventKind(
            OUTCOME_OVERDUE,
            "a redeemed action's outcome did not come within its timeout: a failure; "
            "once per decision, in place of its outcome",
            ("decision_id", "agent", "action", "due", "breakers"),
        ),
        EventKind(
            BREAKER_OPENED,
            "a circuit breaker tripped on its outcomes (or a trial failed): the action "
            "needs approval or is denied until `until`, then half-open for trials",
            (*_BREAKER, "until", "then", "failures", "sample", "window", "cause", "reason"),
        ),
        EventKind(
            BREAKER_CLOSED,
            "a half-open breaker's trials all succeeded: the action is decided as before",
            (*_BREAKER, "trials", "cause"),
        ),
        EventKind(
            ACCESS_DENIED,
            "a key tried what its role does not allow",
            ("key_id", "role", "agent", "reason"),
        ),
        EventKind(KEY_CREATED, "an API key was created", ("key_id", "role", "agent", "label")),
        EventKind(KEY_REVOKED, "an API key was revoked", ("key_id", "by")),
        EventKind(
            APPROVAL_OPENED,
            "a decision that needs people opened its approval (same commit as the decision)",
            ("approval_id", "decision_id", "kind", "route", "deadline", "args_hash"),
        ),
        EventKind(APPROVAL_CLAIMED, "a reviewer took an approval on", _APPROVAL_STEP),
        EventKind(
            APPROVAL_APPROVED,
            "a reviewer approved; with `complete`, the quorum is met and the grant issued",
            (*_APPROVAL_STEP, "votes", "required", "complete"),
        ),
        EventKind(
            APPROVAL_DENIED, "a reviewer refused, with a reason", (*_APPROVAL_STEP, "reason")
        ),
        EventKind(
            APPROVAL_MODIFIED,
            "a reviewer replaced the arguments; the re-decision is its own decision entry",
            _APPROVAL_STEP,
        ),
        EventKind(APPROVAL_ESCALATED, "the SLA passed and the next tier took over", _APPROVAL_STEP),
        EventKind(
            APPROVAL_EXPIRED,
            "the SLA passed with no tier left: refused",
            (*_APPROVAL_STEP, "route", "reason"),
        ),
        EventKind(
            APPROVAL_REFUSED,
            "a decision that needs people could not open an approval (no route, or the "
            "agent's pending cap); same commit as the decision",
            ("decision_id", "code", "reason"),
        ),
        EventKind(APPROVAL_NOTIFIED, "a webhook took an approval notification", _DELIVERY),
        EventKind(
            APPROVAL_NOTIFY_FAILED,
            "a webhook delivery attempt failed, or was dropped",
            (*_DELIVERY, "error", "detail", "final"),
        ),
    )
}


def decision(
    at: str,
    decision_id: str,
    *,
    request: Mapping[str, Any],
    redacted: Sequence[Mapping[str, Any]],
    state: Mapping[str, Any],
    budgets: Sequence[str],
    provenance: Mapping[str, Any],
    verdict: Mapping[str, Any],
    modifies: str | None = None,
    idempotency: tuple[str, str] | None = None,
    grant: Mapping[str, Any] | None = None,
) -> NewEvent:
    """A decision entry: `request` as stored (data rules applied), `state` the engine saw.

    `budgets` names the budgets the decision counts against; `verdict` is the decision
    (`Decision.to_json`); `modifies` the approval whose reviewer-modified request this is;
    `idempotency` the key and the request's payload hash; `grant` the grant's ledger form.
    """
    payload: dict[str, Any] = {
        "decision_id": decision_id,
        "request": request,
        "redacted": redacted,
        "state": state,
        "budgets": budgets,
        "provenance": provenance,
        "decision": verdict,
    }
    if modifies is not None:
        payload["modifies"] = modifies
    if idempotency is not None:
        payload["idempotency"] = {"key": idempotency[0], "payload_hash": idempotency[1]}
    if grant is not None:
        payload["grant"] = grant
    return NewEvent(DECISION, at, payload)


def policy_deployed(at: str, version: str, previous: str | None, files: Sequence[str]) -> NewEvent:
    """A switch of the live bundle from `previous` (None at first) to `version`."""
    return NewEvent(
        POLICY_DEPLOYED, at, {"version": version, "previous": previous, "files": sorted(files)}
    )


def halt(at: str, scope: str, target: str | None, reason: str, by: str) -> NewEvent:
    """A halt of `scope` (`all`, or an `agent` or `action` named by `target`)."""
    return NewEvent(HALT, at, {"scope": scope, "target": target, "reason": reason, "by": by})


def resume(at: str, scope: str, target: str | None, by: str) -> NewEvent:
    """The lifting of the halt of `scope`/`target`."""
    return NewEvent(RESUME, at, {"scope": scope, "target": target, "by": by})


def autonomy_changed(
    at: str, agent: str, level: int | None, reason: str, by: str, **details: Any
) -> NewEvent:
    """An override of the agent's autonomy level; None restores the bundle's.

    The controller's demotions add `rule`, `from`, `figures` and `window` (`details`).
    """
    payload = {"agent": agent, "level": level, "reason": reason, "by": by, **details}
    return NewEvent(AUTONOMY_CHANGED, at, payload)


def agent_updated(at: str, profile: Mapping[str, Any], by: str) -> NewEvent:
    """An agent registered or updated at run time (`profile` as `AgentProfile.to_json`)."""
    return NewEvent(AGENT_UPDATED, at, {"agent": dict(profile), "by": by})


def grant_redeemed(
    at: str,
    grant_id: str,
    decision_id: str,
    *,
    agent: str | None = None,
    action: str | None = None,
    outcome_due: str | None = None,
) -> NewEvent:
    """The one redemption of a grant; `outcome_due` when the action declares a timeout."""
    payload: dict[str, Any] = {"grant_id": grant_id, "decision_id": decision_id}
    if agent is not None:
        payload.update(agent=agent, action=action)
    if outcome_due is not None:
        payload["outcome_due"] = outcome_due
    return NewEvent(GRANT_REDEEMED, at, payload)


def grant_refused(at: str, grant_id: str, decision_id: str | None, code: str) -> NewEvent:
    """A refused redemption; `decision_id` is None when the grant is unknown."""
    return NewEvent(
        GRANT_REFUSED, at, {"grant_id": grant_id, "decision_id": decision_id, "code": code}
    )


def outcome(
    at: str,
    decision_id: str,
    *,
    success: bool,
    error: str | None,
    duration_ms: float | None,
    result_digest: str | None,
    agent: str | None = None,
    action: str | None = None,
    breakers: Sequence[Mapping[str, Any]] = (),
) -> NewEvent:
    """What happened when a decided action ran.

    `breakers` are the circuits (`{id, agent}`, agent None when shared) the outcome
    counts towards, as the live bundle said when it was recorded.
    """
    payload: dict[str, Any] = {
        "decision_id": decision_id,
        "success": bool(success),
        "error": error,
        "duration_ms": duration_ms,
        "result_digest": result_digest,
    }
    if agent is not None:
        payload.update(agent=agent, action=action)
    if breakers:
        payload["breakers"] = [dict(b) for b in breakers]
    return NewEvent(OUTCOME, at, payload)


def outcome_overdue(
    at: str,
    decision_id: str,
    agent: str,
    action: str,
    due: str,
    breakers: Sequence[Mapping[str, Any]] = (),
) -> NewEvent:
    """An outcome that did not come by `due`: counted as a failure."""
    payload: dict[str, Any] = {
        "decision_id": decision_id,
        "agent": agent,
        "action": action,
        "due": due,
        "breakers": [dict(b) for b in breakers],
    }
    return NewEvent(OUTCOME_OVERDUE, at, payload)


def breaker_opened(at: str, payload: Mapping[str, Any]) -> NewEvent:
    """A breaker's circuit opened (see `charter.controls.BreakerBook` for the payload)."""
    return NewEvent(BREAKER_OPENED, at, dict(payload))


def breaker_closed(at: str, payload: Mapping[str, Any]) -> NewEvent:
    """A breaker's circuit closed after its trials succeeded."""
    return NewEvent(BREAKER_CLOSED, at, dict(payload))


def access_denied(
    at: str, key_id: str, role: str, agent: str | None, reason: str, **details: Any
) -> NewEvent:
    """A key refused for what its role does not allow; `details` say what it tried."""
    payload = {"key_id": key_id, "role": role, "agent": agent, "reason": reason, **details}
    return NewEvent(ACCESS_DENIED, at, payload)


def key_created(
    at: str, key_id: str, role: str, agent: str | None, label: str, groups: Sequence[str]
) -> NewEvent:
    """A new API key (never its secret or hash)."""
    payload: dict[str, Any] = {"key_id": key_id, "role": role, "agent": agent, "label": label}
    if groups:
        payload["groups"] = list(groups)
    return NewEvent(KEY_CREATED, at, payload)


def key_revoked(at: str, key_id: str, by: str) -> NewEvent:
    """The revocation of an API key."""
    return NewEvent(KEY_REVOKED, at, {"key_id": key_id, "by": by})


def approval_refused(at: str, decision_id: str, code: str, reason: str) -> NewEvent:
    """A decision's approval that could not be opened: `no_route` or `too_many_pending`."""
    return NewEvent(
        APPROVAL_REFUSED, at, {"decision_id": decision_id, "code": code, "reason": reason}
    )
