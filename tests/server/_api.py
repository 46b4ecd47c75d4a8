"""Helpers shared by the HTTP API tests: keys per role, auth headers, a refund request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keys:
    """One secret per role, and an agent key for `support-bot`."""

    admin: str
    agent: str
    trainee: str
    reviewer: str
    auditor: str
    policy_admin: str
    agent_id: str


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def refund(amount: float = 40, order: int = 1001, **extra: Any) -> dict[str, Any]:
    """A refund request by `support-bot`; 40 is allowed at risk 0."""
    return {
        "agent": "support-bot",
        "action": "payments.refund",
        "args": {"order_id": f"ord-{order}", "amount": amount, "currency": "USD"},
        "context": {"confidence": 0.9, "rationale": "customer received a damaged item"},
        **extra,
    }
