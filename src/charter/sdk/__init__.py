"""Govern an agent's actions from its own code: clients, `@governed`, and context.

    from charter.sdk import Client, context, governed

    client = Client("http://127.0.0.1:8470", api_key)

    @governed("payments.refund", client=client, agent="support-bot", wait=30)
    def refund(order_id: str, amount: float, currency: str) -> str: ...

    with context(confidence=0.9, rationale="the parcel arrived damaged"):
        refund("ord-1001", 40, "USD")  # runs only when Charter allows it

    try:
        refund("ord-1002", 2500, "USD")  # needs a reviewer: waits up to 30 s for one
    except ApprovalRequired as waiting:
        saved = waiting.decision_id  # later, even after a restart:
    refund.resume(saved, wait=600)  # runs once, with the arguments people approved

`Client` and `AsyncClient` talk to a Charter server; `EmbeddedClient` and
`AsyncEmbeddedClient` give an in-process `charter.Charter` the same interface, so the
same governed code runs against either.
"""

from charter.errors import GrantRefused
from charter.sdk._base import AsyncGovernanceClient, ClientStats, GovernanceClient
from charter.sdk._context import context, current_context
from charter.sdk._embedded import AsyncEmbeddedClient, EmbeddedClient
from charter.sdk._errors import (
    ActionDenied,
    ApprovalRequired,
    CharterUnavailable,
    PendingLimitReached,
)
from charter.sdk._flow import Backoff
from charter.sdk._governed import Governed, governed
from charter.sdk._http import AsyncClient, Client
from charter.sdk._types import (
    REFUSED,
    WAITING,
    ApprovalInfo,
    DecisionResult,
    DecisionStatus,
    Grant,
    Resolution,
)

__all__ = [
    "REFUSED",
    "WAITING",
    "ActionDenied",
    "ApprovalInfo",
    "ApprovalRequired",
    "AsyncClient",
    "AsyncEmbeddedClient",
    "AsyncGovernanceClient",
    "Backoff",
    "CharterUnavailable",
    "Client",
    "ClientStats",
    "DecisionResult",
    "DecisionStatus",
    "EmbeddedClient",
    "GovernanceClient",
    "Governed",
    "Grant",
    "GrantRefused",
    "PendingLimitReached",
    "Resolution",
    "context",
    "current_context",
    "governed",
]
