"""What the SDK raises when an action may not run now.

```
CharterError (charter.errors)
├── ActionDenied         the decision is `deny`; carries the decision id and its reasons
├── ApprovalRequired     the decision is `require_approval` or `escalate`; wait on its id
└── CharterUnavailable   Charter could not be asked (unreachable, timed out, 5xx)
```

A refused grant (used, expired, arguments changed) is `charter.errors.GrantRefused`, the
same error the embedded service raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charter.errors import CharterError

if TYPE_CHECKING:
    from charter.model import Reason, RouteRef, Verdict
    from charter.sdk._types import DecisionResult

__all__ = ["ActionDenied", "ApprovalRequired", "CharterUnavailable"]


def _because(decision: DecisionResult) -> str:
    reasons = "; ".join(r.message for r in decision.reasons)
    return f": {reasons}" if reasons else ""


class ActionDenied(CharterError):
    """Charter refused the action; it did not run and will not run as asked.

    Attributes:
        decision: the full decision, with its risk, factors and policy version.
    """

    code = "action_denied"

    def __init__(self, decision: DecisionResult) -> None:
        self.decision = decision
        super().__init__(
            f"`{decision.action}` was denied (decision {decision.id}){_because(decision)}"
        )

    @property
    def decision_id(self) -> str:
        """The id of the recorded decision, to look it up in the ledger."""
        return self.decision.id

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every step of the decision that fired, in words a reviewer understands."""
        return self.decision.reasons


class ApprovalRequired(CharterError):
    """The action waits for people; it did not run.

    Pass `decision_id` to a client's `wait` to learn when reviewers have decided.

    Attributes:
        decision: the full decision, with its route and reasons.
    """

    code = "approval_required"

    def __init__(self, decision: DecisionResult) -> None:
        self.decision = decision
        route = f" by `{decision.route.id}`" if decision.route else ""
        what = "taken over" if decision.verdict == "escalate" else "approved"
        super().__init__(
            f"`{decision.action}` must be {what}{route} before it runs "
            f"(decision {decision.id}){_because(decision)}"
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
    the client was built with `fail_open=True`.

    Attributes:
        status: the HTTP status when the server answered, else None.
    """

    code = "charter_unavailable"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)
