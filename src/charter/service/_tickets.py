"""Grants: what an allowed decision yields, so the action runs once and as decided.

A grant is bound to the canonical hash of the exact arguments that were decided on, and
its token is an HMAC of the grant id under a secret kept in the store: the token need not
be stored to be checked, and an idempotent repeat of the decision can hand back the same
grant. Single use is enforced by the decisions index, under the gateway's lock.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

__all__ = ["GrantTicket", "grant_token", "token_matches"]


@dataclass(frozen=True, slots=True)
class GrantTicket:
    """A grant as the agent receives it; `token` is the secret it redeems with."""

    id: str
    token: str
    expires_at: str
    args_hash: str

    def to_json(self) -> dict[str, Any]:
        """The grant as the API returns it."""
        return {
            "id": self.id,
            "token": self.token,
            "expires_at": self.expires_at,
            "args_hash": self.args_hash,
        }

    def to_record(self) -> dict[str, Any]:
        """The grant as the ledger records it: no token (it is derived, and secret)."""
        return {"id": self.id, "expires_at": self.expires_at, "args_hash": self.args_hash}

    def index_values(self) -> dict[str, Any]:
        """The decisions-index columns that hold the grant."""
        return {
            "grant_id": self.id,
            "grant_args_hash": self.args_hash,
            "grant_expires_at": self.expires_at,
        }


_BLOCK = 64  # SHA-256's block size, in bytes
_INNER = bytes(b ^ 0x36 for b in range(256))
_OUTER = bytes(b ^ 0x5C for b in range(256))


@functools.lru_cache(maxsize=16)
def _pads(secret: bytes) -> tuple[Any, Any]:
    """SHA-256 states that have absorbed HMAC's inner and outer key pads (RFC 2104).

    Every decision signs a grant: copying these states costs less than half of what
    `hmac.digest` pays to set OpenSSL's HMAC up again for each token.
    """
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_INNER)), hashlib.sha256(key.translate(_OUTER))


def grant_token(secret: bytes, grant_id: str) -> str:
    """The grant's token: HMAC-SHA256 of its id, URL-safe base64 without padding."""
    inner, outer = _pads(secret)
    inner = inner.copy()
    inner.update(grant_id.encode("utf-8"))
    outer = outer.copy()
    outer.update(inner.digest())
    return base64.urlsafe_b64encode(outer.digest()).rstrip(b"=").decode("ascii")


def token_matches(secret: bytes, grant_id: str, token: str) -> bool:
    """Whether `token` is the grant's token, compared in constant time."""
    return hmac.compare_digest(grant_token(secret, grant_id), token)
