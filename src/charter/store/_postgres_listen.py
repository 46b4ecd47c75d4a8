"""Listening for appends on PostgreSQL: a wake-up as soon as another replica commits.

Every appending transaction sends `NOTIFY charter_ledger` (`PostgresStore`), delivered
at its commit. An `AppendListener` holds one connection of its own (not one of the
pool's) that listens on the channel and calls `wake` for each notification, so a
follower reads a halt appended by another replica within milliseconds rather than at
its next poll. The listener is only an accelerator: when its connection drops it says
so once, calls `wake` (whatever was missed is read by the follower from the ledger, not
from the notifications) and reconnects with a growing pause, while the follower keeps
polling meanwhile; nothing depends on a notification arriving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["AppendListener"]

_log = logging.getLogger("charter.store")

#: Seconds between reconnection attempts, growing to the last one while the server is away.
_RETRY_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0)
#: Seconds a wait for notifications lasts before the stop flag is looked at again.
_WAIT = 0.5


class AppendListener:
    """`LISTEN` on a channel in a daemon thread, calling `wake` per notification.

    Args:
        conninfo: the libpq connection string or URI of the database.
        channel: the channel to listen on.
        wake: called (in the listener's thread) for each notification, and once after
            every (re)connection, since notifications sent while away are lost.
    """

    def __init__(self, conninfo: str, channel: str, wake: Callable[[], None]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._wake = wake
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="charter-append-listener", daemon=True
        )
        self._thread.start()

    @property
    def connected(self) -> bool:
        """Whether the listening connection is up now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the connection to be listening."""
        return self._connected.wait(timeout)

    def _run(self) -> None:
        import psycopg  # noqa: PLC0415 - the postgres extra; present whenever this runs

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="charter-listener",
                    # A host that vanishes without closing the connection is noticed
                    # within seconds (the notifications wait would not notice it).
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                    tcp_user_timeout=10_000,
                ) as connection:
                    connection.execute(f'LISTEN "{self._channel}"')
                    self._connected.set()
                    if failures:
                        _log.warning("the append listener is connected again")
                    failures = 0
                    self._wake()
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=_WAIT):
                            self._wake()
            except Exception as error:
                self._connected.clear()
                if self._stop.is_set():
                    return
                if not failures:
                    _log.warning(
                        "the append listener lost its connection (%s); polling until it is back",
                        str(error).strip().splitlines()[0] if str(error).strip() else error,
                    )
                failures += 1
                self._wake()
                self._stop.wait(_RETRY_PAUSES[min(failures, len(_RETRY_PAUSES)) - 1])
        self._connected.clear()

    def close(self) -> None:
        """Stop listening and wait for the thread (at most about half a second)."""
        self._stop.set()
        self._thread.join()
