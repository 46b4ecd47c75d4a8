"""The rows the service keeps beside the ledger: approvals, API keys, secrets.

Both adapters (`SQLiteStore`, `PostgresStore`) take these queries from the classes here,
in SQLAlchemy Core that reads the same on either database; none of them is on the
ledger's append path (an approval's row is written with its entry, by the appender), and
each method is its own short transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Unpack

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.engine import Connection

from charter.store._port import ApprovalFilters, StoreError
from charter.store._tables import api_keys, approvals, meta

__all__ = ["CoreApprovalRows", "CoreKeyRows"]


class _OnEngine:
    """What the row queries need of the store: its engine, and a writing connection."""

    _engine: Engine
    #: A connection whose transactions take the write lock first (the store defines it).
    _writing: Callable[[], Connection]


class CoreApprovalRows(_OnEngine):
    """The `ApprovalRows` port: approvals as they stand now."""

    def approval_row(
        self, *, approval_id: str | None = None, decision_id: str | None = None
    ) -> dict[str, Any] | None:
        """The approvals row found by its id or its decision's id."""
        if approval_id is not None:
            query = select(approvals).where(approvals.c.id == approval_id)
        elif decision_id is not None:
            query = select(approvals).where(approvals.c.decision_id == decision_id)
        else:
            raise StoreError("look an approval up by its id or its decision's id")
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else dict(row)

    @staticmethod
    def _approval_filters(filters: ApprovalFilters) -> list[Any]:
        c = approvals.c
        out: list[Any] = []
        if (state := filters.get("state", "pending")) is not None:
            out.append(c.state == state)
        if (group := filters.get("group")) is not None:
            # `groups` is a JSON list of names; a quoted match cannot hit a longer name.
            out.append(c.groups.contains(json.dumps(group), autoescape=True))
        if (agent := filters.get("agent")) is not None:
            out.append(c.agent == agent)
        if (action := filters.get("action")) is not None:
            out.append(c.action == action)
        if (shape := filters.get("shape")) is not None:
            out.append(c.shape == shape)
        if (due_by := filters.get("due_by")) is not None:
            out.append(c.deadline <= due_by)
        return out

    def approval_rows(
        self, *, limit: int | None = 100, offset: int = 0, **filters: Unpack[ApprovalFilters]
    ) -> list[dict[str, Any]]:
        """`ApprovalRows.approval_rows`; rows alike in deadline and risk go by id."""
        query = (
            select(approvals)
            .where(and_(True, *self._approval_filters(filters)))
            .order_by(approvals.c.deadline, approvals.c.risk.desc(), approvals.c.id)
            .offset(offset)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as connection:
            return [dict(r) for r in connection.execute(query).mappings()]

    def count_approvals(self, **filters: Unpack[ApprovalFilters]) -> int:
        """How many approvals match the filters."""
        conditions = self._approval_filters(filters)
        query = select(func.count()).select_from(approvals).where(and_(True, *conditions))
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)


class CoreKeyRows(_OnEngine):
    """The `KeyRows` and `Secrets` ports: API key rows, and the store's own secrets."""

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store, created on first use."""
        key = f"secret:{name}"
        with self._writing() as connection, connection.begin():
            stored = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
            if stored is None:
                stored = os.urandom(32).hex()
                connection.execute(insert(meta).values(key=key, value=stored))
        return bytes.fromhex(str(stored))

    def add_key(self, row: Mapping[str, Any]) -> None:
        """Store an API key row."""
        with self._writing() as connection, connection.begin():
            connection.execute(insert(api_keys).values(**row))

    def key_row(self, key_hash: str) -> dict[str, Any] | None:
        """The API key row whose secret hashes to `key_hash`, or None."""
        with self._engine.connect() as connection:
            row = (
                connection.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def key_rows(self) -> list[dict[str, Any]]:
        """Every API key row, oldest first."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
            ).mappings()
            return [dict(r) for r in rows]

    def revoke_key(self, key_id: str, at: str) -> bool:
        """Mark a key revoked; False when no such unrevoked key exists."""
        with self._writing() as connection, connection.begin():
            result = connection.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return bool(result.rowcount)
