"""What the SDK raises when an action may not run now.

```
CharterError (charter.errors)
├── ActionDenied           the action will not run as asked: the policy denied it, a
│   │                      reviewer denied it, or nobody approved it in time; carries
│   │                      the decision id, its reasons and the reviewer's resolution
│   └── PendingLimitReached  the agent already has as many approvals pending as it may
│                          (HTTP 429 `too_many_pending`); never retried by the SDK
├── ApprovalRequired       the decision waits for people; wait on or resume its id
└── CharterUnavailable     Charter could not be asked (unreachable, timed out, 5xx)
```

A refused grant (used, expired, arguments changed) is `charter.errors.GrantRefused`, the
same error the embedded service raises; resuming a decision that already ran is one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charter.errors import CharterError

if TYPE_CHECKING:
    from charter.model import Reason, RouteRef, Verdict
    from charter.sdk._types import DecisionResult, Resolution

__all__ = ["ActionDenied", "ApprovalRequired", "CharterUnavailable", "PendingLimitReached"]


def _because(decision: DecisionResult) -> str:
    reasons = "; ".join(r.message for r in decision.reasons)
    return f": {reasons}" if reasons else ""


def _denial(decision: DecisionResult) -> str:
    """Why an action will not run: the reviewer's words first, when people settled it."""
    resolution = decision.resolution
    where = f"(decision {decision.id})"
    if resolution is None or resolution.code in ("approved", "modified"):
        return f"`{decision.action}` was denied {where}{_because(decision)}"
    reason = f": {resolution.reason}" if resolution.reason else ""
    if resolution.code == "expired":
        when = f" at {resolution.at}" if resolution.at else ""
        return f"`{decision.action}` expired unapproved{when} {where}{reason}"
    by = f" by {resolution.by}" if resolution.by else ""
    return f"`{decision.action}` was denied{by} {where}{reason}"


class ActionDenied(CharterError):
    """Charter refused the action; it did not run and will not run as asked.

    Raised for a `deny` verdict, and for an approval that a reviewer denied or that
    expired unapproved; then `resolution` says who and why, and the message leads with
    the reviewer's reason.

    Attributes:
        decision: the full decision, with its risk, factors, policy version and
            approval. None only for `PendingLimitReached` from a server that does not
            name the refused decision.
    """

    code = "action_denied"

    def __init__(self, decision: DecisionResult | None, message: str | None = None) -> None:
        self.decision = decision
        if message is None:
            message = _denial(decision) if decision is not None else "the action was denied"
        super().__init__(message)

    @property
    def decision_id(self) -> str | None:
        """The id of the recorded decision, to look it up in the ledger."""
        return self.decision.id if self.decision is not None else None

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every step of the decision that fired, in words a reviewer understands."""
        return self.decision.reasons if self.decision is not None else ()

    @property
    def resolution(self) -> Resolution | None:
        """Who settled the approval, when and why: a reviewer's denial, or the deadline.

        None for a denial by the policy itself.
        """
        return self.decision.resolution if self.decision is not None else None

    @property
    def reason(self) -> str | None:
        """The reviewer's (or the deadline's) reason, when people settled it."""
        resolution = self.resolution
        return resolution.reason if resolution is not None else None

    @property
    def denied_by(self) -> str | None:
        """Who denied it: a reviewer's name, `charter` for a deadline; None for the policy."""
        resolution = self.resolution
        return resolution.by if resolution is not None else None


class PendingLimitReached(ActionDenied):
    """The agent already has as many approvals pending as it may; this one was refused.

    The decision and the refusal are recorded (the HTTP API answers 429
    `too_many_pending`); nothing was queued for reviewers. The SDK never retries it:
    asking again adds to the load the cap is there to stop. Have reviewers settle the
    agent's pending approvals (or deny them), then ask again.

    Attributes:
        refusal: Charter's reason, as it gave it.
    """

    code = "too_many_pending"

    def __init__(
        self, decision: DecisionResult | None, message: str, *, decision_id: str | None = None
    ) -> None:
        self._decision_id = decision.id if decision is not None else decision_id
        self.refusal = message
        where = f" (decision {self._decision_id})" if self._decision_id else ""
        super().__init__(decision, f"{message}{where}")

    @property
    def decision_id(self) -> str | None:
        """The id of the refused decision, recorded in the ledger."""
        return self._decision_id


class ApprovalRequired(CharterError):
    """The action waits for people; it did not run.

    Keep `decision_id` (it survives a restart): the governed function's `resume`
    waits for the reviewers and runs it once approved; a client's `wait` only reads
    where it stands.

    Attributes:
        decision: the full decision, with its route, reasons and approval (its deadline).
        waited: the seconds the SDK waited for people before giving up, or None when it
            did not wait.
    """

    code = "approval_required"

    def __init__(self, decision: DecisionResult, *, waited: float | None = None) -> None:
        self.decision = decision
        self.waited = waited
        route = f" by `{decision.route.id}`" if decision.route else ""
        what = "taken over" if decision.verdict == "escalate" else "approved"
        still = f"; still waiting after {waited:g} s" if waited else ""
        super().__init__(
            f"`{decision.action}` must be {what}{route} before it runs "
            f"(decision {decision.id}{still}){_because(decision)}"
        )

    @property
    def decision_id(self) -> str:
        """The id to wait on."""
        return self.decision.id

    @property
    def verdict(self) -> Verdict:
        """`require_approval` or `escalate`."""
        return self.decision.verdict

    @property
    def route(self) -> RouteRef | None:
        """Where the case went: reviewer groups, quorum, SLA, what happens at the deadline."""
        return self.decision.route

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every step of the decision that fired."""
        return self.decision.reasons


class CharterUnavailable(CharterError):
    """Charter could not be asked: unreachable, timed out, or failing (5xx).

    Nothing was decided that the caller can rely on, so governed actions do not run unless
    the client was built with `fail_open=True`; and not even then when Charter answered
    `denied`: it was reached, and its store was not (a decision 503 `store_unavailable`
    is a `deny`), so the answer is Charter's own and the action must not run.

    Attributes:
        status: the HTTP status when the server answered, else None.
        denied: Charter answered that the request is denied because it cannot record a
            decision now (its store is away); `fail_open` does not apply.
    """

    code = "charter_unavailable"

    def __init__(self, message: str, *, status: int | None = None, denied: bool = False) -> None:
        self.status = status
        self.denied = denied
        super().__init__(message)
