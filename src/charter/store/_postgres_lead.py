"""Leading on PostgreSQL: one process per ledger judges the monitors' rules.

Alert rules and the autonomy controller record what they decide; two replicas judging
at once would fire each alert twice. The one that leads holds a session-level advisory
lock on a connection of its own (not one of the pool's): the database grants it to one
connection at a time and takes it back when that connection ends, so when the leader's
process dies or its host vanishes (TCP keepalives notice within seconds) another
replica takes the lead at its next try.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["AdvisoryLead"]


class AdvisoryLead:
    """A held advisory lock named `name`, or nothing (`taken` is False) if another holds it.

    Args:
        conninfo: the libpq connection string or URI of the database.
        name: what is led; processes leading the same name exclude each other.
    """

    def __init__(self, conninfo: str, name: str) -> None:
        import psycopg  # noqa: PLC0415 - the postgres extra; present whenever this runs

        self._lock = threading.Lock()
        self._connection: Any = psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name="charter-lead",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=10_000,
        )
        row = self._connection.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)
        ).fetchone()
        self.taken = bool(row and row[0])
        if not self.taken:
            self._connection.close()

    @property
    def closed(self) -> bool:
        """Whether the lead is lost: closed here, or its connection gone."""
        with self._lock:
            if self._connection.closed:
                return True
            try:
                self._connection.execute("SELECT 1")
            except Exception:  # the server or the network is gone: so is the lock
                self._connection.close()
                return True
            return False

    def close(self) -> None:
        """Give the lead up (ending the connection releases the lock)."""
        with self._lock:
            self._connection.close()
