"""API keys and the principals they stand for.

A key is a random secret shown once; the store keeps only its SHA-256, so a copy of the
database does not hand out working keys. Each key has one role; an `agent` key also names
the one agent it may act as.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from charter.errors import NotFound, RequestInvalid
from charter.ledger import events
from charter.store import KeyRows, LedgerLog

__all__ = [
    "KEY_PREFIX",
    "PRINCIPAL_TTL",
    "ROLES",
    "KeyRing",
    "KeyStore",
    "Principal",
    "check_groups",
    "hash_secret",
    "new_key",
]

#: How long a looked-up key is trusted before the store is asked again: a key revoked by
#: another process (the CLI, another replica) stops working within this many seconds.
PRINCIPAL_TTL = 1.0

#: The roles a key may have, and what each is for.
ROLES: Mapping[str, str] = {
    "agent": "asks for decisions, redeems grants and reports outcomes as one agent",
    "reviewer": "reads decisions and approves, denies or modifies those of its groups",
    "policy-admin": "deploys and rolls back policy",
    "admin": "everything, including keys",
    "auditor": "reads and verifies the ledger",
}

#: Every secret starts with this, so a leaked one is easy to recognise and scan for.
KEY_PREFIX = "chk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the key, its role, its agent or its reviewer groups.

    `name` is the key's label (for people, who they are, such as an email address);
    `groups` are the reviewer groups whose approvals the key may act on.
    """

    key_id: str
    role: str
    agent: str | None = None
    name: str = ""
    groups: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        """Who this is for separation of duties: the key's name, else its id."""
        return self.name or self.key_id

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Principal:
        """The principal of a stored key row."""
        groups = json.loads(row["groups"]) if row.get("groups") else []
        return cls(
            str(row["key_id"]),
            str(row["role"]),
            row.get("agent"),
            str(row.get("label") or ""),
            tuple(groups),
        )


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


_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_groups(role: str, groups: Sequence[str]) -> tuple[str, ...]:
    """The reviewer groups of a new key, checked: names, and only for keys that review.

    Raises:
        RequestInvalid: a malformed name, or groups on an agent, auditor or policy key.
    """
    cleaned = tuple(dict.fromkeys(g.strip() for g in groups if g.strip()))
    for group in cleaned:
        if not _GROUP.match(group):
            raise RequestInvalid(
                "groups", f"group `{group}` must be letters, digits, `_`, `.` or `-`"
            )
    if cleaned and role not in ("reviewer", "admin"):
        raise RequestInvalid("groups", f"only reviewer and admin keys have groups, not `{role}`")
    return cleaned


class KeyStore(KeyRows, LedgerLog, Protocol):
    """What a `KeyRing` needs of a store: the key rows, and the ledger for key events."""


class KeyRing:
    """API keys kept in a store: create, authenticate, list, revoke; changes are recorded.

    It needs no policy bundle, so the command line manages keys of a ledger no server is
    running on, and the gateway delegates to it.

    Args:
        store: where keys (their hashes) live and where key events are recorded.
        clock: the time stamped on key rows and events.
        monotonic: the clock of the lookup cache (seconds; injectable for tests).
    """

    def __init__(
        self,
        store: KeyStore,
        clock: Callable[[], dt.datetime],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def _stamp(self) -> str:
        return self._clock().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def create(
        self,
        role: str,
        *,
        agent: str | None = None,
        label: str = "",
        groups: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Create a key; returns (key id, secret). Only a hash of the secret is kept.

        Args:
            role: one of `ROLES`.
            agent: for an agent key, the agent it acts as.
            label: who or what holds it; for reviewers, the person (their identity in
                approvals: one person counts once toward a quorum).
            groups: the reviewer groups the key may act for (reviewer and admin keys).

        Raises:
            RequestInvalid: unknown role, an agent key without an agent, or groups on a
                key that cannot review, or a malformed group name.
        """
        key_id, secret = new_key(role, agent)
        groups = check_groups(role, groups)
        at = self._stamp()
        self._store.add_key(
            {
                "key_id": key_id,
                "key_hash": hash_secret(secret),
                "role": role,
                "agent": agent,
                "label": label,
                "created_at": at,
                "groups": json.dumps(list(groups)) if groups else None,
            }
        )
        self._store.append([events.key_created(at, key_id, role, agent, label, groups)])
        return key_id, secret

    def _cached(
        self, marker: str, load: Callable[[], Mapping[str, Any] | None]
    ) -> Principal | None:
        """The principal of the row `load` finds, trusted for `PRINCIPAL_TTL` seconds."""
        now = self._monotonic()
        cached = self._cache.get(marker)
        if cached is not None and now - cached[0] < PRINCIPAL_TTL:
            return cached[1]
        row = load()
        principal = (
            None if row is None or row["revoked_at"] is not None else Principal.from_row(row)
        )
        if len(self._cache) > 10_000:  # unknown secrets must not grow memory without bound
            self._cache.clear()
        self._cache[marker] = (now, principal)
        return principal

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret belongs to, or None for an unknown or revoked key."""
        digest = hash_secret(secret)
        return self._cached(digest, lambda: self._store.key_row(digest))

    def principal(self, key_id: str) -> Principal | None:
        """The principal of an unrevoked key, by key id (sessions name keys by id)."""
        return self._cached(
            f"id:{key_id}",
            lambda: next((r for r in self._store.key_rows() if r["key_id"] == key_id), None),
        )

    def forget_cached(self) -> None:
        """Drop every cached lookup: a key revoked elsewhere stops working at once."""
        self._cache.clear()

    def list(self) -> list[dict[str, Any]]:
        """Every key, oldest first, without its hash."""
        return [{k: v for k, v in r.items() if k != "key_hash"} for r in self._store.key_rows()]

    def any_active(self) -> bool:
        """Whether any unrevoked key exists (a server with none refuses every request)."""
        return any(row["revoked_at"] is None for row in self._store.key_rows())

    def revoke(self, key_id: str, *, by: str = "") -> None:
        """Revoke a key now; recorded in the ledger.

        Raises:
            NotFound: no such unrevoked key.
        """
        at = self._stamp()
        if not self._store.revoke_key(key_id, at):
            raise NotFound(f"no active key `{key_id}`")
        self._cache.clear()
        self._store.append([events.key_revoked(at, key_id, by)])
