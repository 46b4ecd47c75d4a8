"""Following the ledger: what other processes append reaches this one's state.

Replicas of one PostgreSQL ledger (or a command line beside a server on one SQLite file)
each fold their own changes at once; a `Follower` reads what the others appended and
folds it too. A halt, resume, autonomy change or agent update made anywhere is therefore
in force here within one polling interval, and a revoked key stops authenticating here
as soon as its revocation is read. The fold ignores a change older than the one in
force (`ServiceState.apply` with the entry's seq), so reading this process's own
entries again, or another's late, leaves the state the ledger's order gives.
"""

from __future__ import annotations

from charter.ledger import events
from charter.service._session import Session
from charter.service._ticker import Ticker

__all__ = ["FOLLOWED_KINDS", "Follower"]

#: The kinds another process may append that change what this one decides or admits.
FOLLOWED_KINDS = frozenset(
    {
        events.HALT,
        events.RESUME,
        events.AUTONOMY_CHANGED,
        events.AGENT_UPDATED,
        events.KEY_REVOKED,
    }
)


class Follower:
    """Reads the ledger after a position and folds the followed kinds into the session.

    Args:
        session: the session whose state and key ring the entries change.
        after: the ledger position the session's state was folded through.
    """

    def __init__(self, session: Session, after: int) -> None:
        self._s = session
        self._after = after
        self._ticker = Ticker("charter-ledger-follower", self.catch_up)

    @property
    def position(self) -> int:
        """The last ledger position read."""
        return self._after

    def catch_up(self) -> int:
        """Fold every followed entry appended since the last call; returns how many."""
        s = self._s
        read = 0
        revoked = False
        # Everything up to the head read now is committed (appends are sequenced), so the
        # position moves to it even when no followed entry was found: the next read scans
        # only what is new, however long the ledger has grown.
        head = s.store.head().seq
        for entry in s.store.entries(after=self._after, kinds=FOLLOWED_KINDS):
            if entry.seq > head:
                break
            read += 1
            if entry.kind == events.KEY_REVOKED:
                revoked = True
                continue
            with s.lock:
                s.state = s.state.apply_entry(entry)
        self._after = max(self._after, head)
        if revoked:
            s.keys.forget_cached()
        return read

    def start(self, interval: float = 0.25) -> None:
        """Catch up every `interval` seconds in a background thread until `stop`."""
        self._ticker.start(interval)

    def stop(self) -> None:
        """Stop the background thread, if running."""
        self._ticker.stop()
