"""Charter: the control plane between AI agents and the actions they take.

Import everything from here; modules with a leading underscore and the subpackages'
insides may change between releases.

    from charter import Charter

    with Charter("policy/", "charter.db") as charter:
        record = charter.decide({"agent": "support-bot", "action": "payments.refund",
                                 "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"}})
        record.verdict  # Verdict.ALLOW
"""

from charter.__about__ import __version__
from charter.errors import (
    CharterError,
    CheckpointError,
    Conflict,
    EventError,
    Forbidden,
    GrantRefused,
    IdempotencyConflict,
    LedgerError,
    LedgerIntegrityError,
    NotFound,
    PolicyInvalid,
    Problem,
    ProofError,
    ReplayError,
    RequestInvalid,
    TooManyPending,
)
from charter.ledger._replay import ReplayReport
from charter.model import (
    ActionRequest,
    AgentProfile,
    AgentState,
    BudgetUsage,
    Decision,
    Factor,
    Halt,
    Reason,
    RouteRef,
    Verdict,
)
from charter.policy import Bundle, bundle_from_content, decide, load_bundle
from charter.sdk import (
    ActionDenied,
    ApprovalRequired,
    AsyncClient,
    CharterUnavailable,
    Client,
    EmbeddedClient,
    context,
    governed,
)
from charter.service import Charter, DecisionRecord

__all__ = [
    "ActionDenied",
    "ActionRequest",
    "AgentProfile",
    "AgentState",
    "ApprovalRequired",
    "AsyncClient",
    "BudgetUsage",
    "Bundle",
    "Charter",
    "CharterError",
    "CharterUnavailable",
    "CheckpointError",
    "Client",
    "Conflict",
    "Decision",
    "DecisionRecord",
    "EmbeddedClient",
    "EventError",
    "Factor",
    "Forbidden",
    "GrantRefused",
    "Halt",
    "IdempotencyConflict",
    "LedgerError",
    "LedgerIntegrityError",
    "NotFound",
    "PolicyInvalid",
    "Problem",
    "ProofError",
    "Reason",
    "ReplayError",
    "ReplayReport",
    "RequestInvalid",
    "RouteRef",
    "TooManyPending",
    "Verdict",
    "__version__",
    "bundle_from_content",
    "context",
    "decide",
    "governed",
    "load_bundle",
]
