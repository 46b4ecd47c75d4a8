"""API keys and the principals they stand for.

A key is a random secret shown once; the store keeps only its SHA-256, so a copy of the
database does not hand out working keys. Each key has one role; an `agent` key also names
the one agent it may act as.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.errors import RequestInvalid

__all__ = ["KEY_PREFIX", "ROLES", "Principal", "hash_secret", "new_key"]

#: The roles a key may have, and what each is for.
ROLES: Mapping[str, str] = {
    "agent": "asks for decisions, redeems grants and reports outcomes as one agent",
    "reviewer": "reads decisions and (later) approves or denies them",
    "policy-admin": "deploys and rolls back policy",
    "admin": "everything, including keys",
    "auditor": "reads and verifies the ledger",
}

#: Every secret starts with this, so a leaked one is easy to recognise and scan for.
KEY_PREFIX = "chk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the key, its role, and for agent keys the agent."""

    key_id: str
    role: str
    agent: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Principal:
        """The principal of a stored key row."""
        return cls(str(row["key_id"]), str(row["role"]), row.get("agent"))


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a key's secret: what the store keeps and looks keys up by."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key(role: str, agent: str | None) -> tuple[str, str]:
    """A fresh (key id, secret) pair for `role`.

    Raises:
        RequestInvalid: the role is unknown, or an agent key names no agent (or another
            role names one).
    """
    if role not in ROLES:
        raise RequestInvalid("role", f"unknown role `{role}`; roles are {', '.join(ROLES)}")
    if (role == "agent") != (agent is not None):
        raise RequestInvalid(
            "agent", "an `agent` key names the agent it acts as; other roles name none"
        )
    return f"key_{secrets.token_hex(8)}", KEY_PREFIX + secrets.token_urlsafe(32)
