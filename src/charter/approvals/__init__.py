"""Approvals: the pure state machine behind `require_approval` and `escalate` decisions.

See `charter.approvals._machine` for the steps and the rules each enforces. The gateway
stores approvals, runs their timers and records each step in the ledger.
"""

from charter.approvals._machine import (
    REVIEWING_ROLES,
    Approval,
    ApprovalState,
    Forbidden,
    Reviewer,
    Step,
    Vote,
    args_shape,
    claim,
    complete,
    deny,
    diff_args,
    due,
    expire,
    modify,
    open_approval,
    vote,
)

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
