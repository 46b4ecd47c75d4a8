"""The storage port: what Charter needs from a database, and nothing more.

Adapters (SQLite now) implement `LedgerStore`; everything above them (the gateway, the
CLI, verification) talks to these protocols only. `LedgerStore` is the composite of small
ports, one per concern, so a caller can ask for only what it uses: `LedgerReader` (read
the ledger, its bundles and checkpoints), `LedgerLog` (append to it), `DecisionIndex`,
`ApprovalRows`, `KeyRows` and `Secrets`.

Transactions are explicit where several writes must commit together: a ledger entry and
the index changes it carries (`IndexChange`: its decisions row, its approval) commit in
one transaction, staged with `LedgerLog.transaction()` or given at once to `append`. Every
other method is its own transaction, and readers never see half of one. The ledger's
bytes and hashes are computed by `charter.ledger`, so every adapter stores exactly the
same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, Unpack

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter.errors import LedgerError
from charter.ledger import (
    GENESIS,
    ChainHead,
    Checkpoint,
    LedgerEntry,
    MerkleFrontier,
    NewEvent,
    PreparedEvent,
    SignedCheckpoint,
    VerifyReport,
    sign_checkpoint,
    verify_chain,
)

__all__ = [
    "AppendNotices",
    "ApprovalFilters",
    "ApprovalRows",
    "BundleConflictError",
    "Closeable",
    "DecisionFilters",
    "DecisionIndex",
    "IndexChange",
    "KeyRows",
    "LedgerLog",
    "LedgerReader",
    "LedgerStore",
    "LedgerTransaction",
    "SchemaVersionError",
    "Secrets",
    "SetOnceConflict",
    "StagedTransaction",
    "StoreError",
    "StoreOpenError",
    "checkpoint_store",
    "verify_store",
]


class StoreError(LedgerError):
    """The store cannot do what was asked: base of the store's own errors."""

    code = "store_error"


class SetOnceConflict(StoreError):
    """A decision's redemption or outcome was already recorded, by whichever process.

    Raised for the events written with it alone; nothing of theirs was stored.
    """

    code = "set_once_conflict"


class SchemaVersionError(StoreError):
    """The database was created or migrated by a newer Charter than this one."""

    code = "schema_too_new"


class StoreOpenError(StoreError):
    """A file cannot be opened as a Charter ledger; nothing in it was changed.

    `path` is the file as given, `problem` says what is wrong with it: it is not a
    SQLite database or holds another application's tables (refused for writing and
    reading alike); for reading, also that it does not exist, is not a Charter ledger,
    or has a schema this version of Charter does not read (newer, or older and not yet
    upgraded). Raised by a later read too when SQLite finds a page of the file damaged
    (`cannot be read: ...`), so a damaged ledger is named the same way wherever it shows.
    """

    code = "store_unopenable"

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"`{path}` {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[type[StoreOpenError], tuple[str, str]]:
        # A replay worker's refusal must reach the parent process whole.
        return type(self), (self.path, self.problem)


class BundleConflictError(StoreError):
    """A bundle version is already stored with different content."""

    code = "bundle_conflict"


@dataclass(frozen=True, slots=True)
class IndexChange:
    """Changes to the index tables, committed in the same transaction as their entry.

    An insert adds the decision's row (the store fills in its `seq` and `at`); an update
    sets `values` on the decision's row (nothing when empty), and `seq_column`, if given,
    to the entry's seq. `approval`, when given, is an approvals row written as it stands
    after the entry (inserted or replaced; the store fills in its `updated_seq`, and
    `opened_seq` when new). With `approval_prior` (the `body` the step started from) the
    row is replaced only if its body is still that one; otherwise another process took a
    step on it first and the append is refused (`SetOnceConflict`): one step wins.
    With `key_since` (an RFC 3339 time), an inserted row's idempotency key must not be
    on another decision of its agent at or after that time, or the append is refused the
    same way: of two processes deciding under one key at once, one decision is kept.
    """

    decision_id: str
    values: Mapping[str, Any]
    insert: bool = False
    seq_column: str | None = None
    approval: Mapping[str, Any] | None = None
    approval_prior: str | None = None
    key_since: str | None = None


class LedgerReader(Protocol):
    """Reading the ledger, its bundles and its checkpoints: what verification and replay need.

    A store opened read-only (`open_store(path, read_only=True)`) is one.
    """

    @property
    def log_id(self) -> str:
        """The ledger's identity, fixed when the store was created; checkpoints carry it."""

    def head(self) -> ChainHead:
        """The last entry's seq and chain hash (`GENESIS` when empty)."""

    def entries(
        self, after: int = 0, limit: int | None = None, kinds: Collection[str] | None = None
    ) -> Iterator[LedgerEntry]:
        """Stream entries with seq above `after`, in seq order, in bounded memory.

        Args:
            after: the seq to start after (0 for the beginning).
            limit: the most entries to yield; all when None.
            kinds: only entries of these kinds; all when None.
        """

    def entry(self, seq: int) -> LedgerEntry | None:
        """The entry at `seq`, or None."""

    def count(self) -> int:
        """The number of entries: the head's seq."""

    def get_bundle(self, version: str) -> bytes | None:
        """Return a stored bundle's content, or None."""

    def bundle_versions(self) -> list[str]:
        """Every stored bundle version, sorted."""

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The checkpoint with the largest tree size, or None."""


class LedgerTransaction(Protocol):
    """Writes staged to commit together: the explicit transaction of a `LedgerLog`.

    Each staged event is appended after the ledger's head as it is at commit time, with
    its change to the index tables (the decisions row, the approval), all in one database
    transaction: every entry and every index change, or none of them.
    """

    def append(self, event: NewEvent | PreparedEvent, index: IndexChange | None = None) -> None:
        """Stage an event, and the index change that commits (or fails) with it."""

    @property
    def entries(self) -> list[LedgerEntry]:
        """The committed entries, in staging order; empty until the transaction commits."""


class LedgerLog(LedgerReader, Protocol):
    """The ledger's writes: appends (with their index changes), bundles and checkpoints.

    The ledger's transaction is explicit: `transaction()` stages writes that commit
    together, and `append` is that transaction given all at once. Bundles and
    checkpoints are each their own transaction.
    """

    def transaction(self) -> AbstractContextManager[LedgerTransaction]:
        """A transaction to stage appends in; it commits when the block ends normally.

        An exception in the block aborts it, and nothing staged is written. Committing
        raises what `append` raises, and then nothing staged was written either.
        """

    def append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry]:
        """Append events atomically after the current head and return their entries.

        `indexes`, when given, pairs each event with a change to the decisions index that
        commits (or fails) with it.

        Every event is validated and encoded before anything is written, and the batch
        commits durably as one transaction: all of it, or none of it.

        Raises:
            EventError: an event is malformed; nothing was written.
        """

    def try_append(
        self,
        events: Sequence[NewEvent | PreparedEvent],
        indexes: Sequence[IndexChange | None] | None = None,
    ) -> list[LedgerEntry] | None:
        """`append`, unless it would first wait for another writer: then None.

        Nothing is written when it answers None. A store that cannot tell without
        waiting always answers None.

        Raises:
            EventError: an event is malformed; nothing was written.
        """

    def put_bundle(self, version: str, content: bytes) -> None:
        """Store a bundle's content under its version, once; repeating it is a no-op.

        Raises:
            BundleConflictError: the version is stored with other content.
        """

    def add_checkpoint(self, signed: SignedCheckpoint) -> None:
        """Record a signed checkpoint."""


class DecisionFilters(TypedDict, total=False):
    """The filters of `DecisionIndex.decision_rows`; one that is None or left out is none.

    `since` and `until` bound the decision's time (both inclusive); `before_seq` keeps
    the rows before that seq, to page back from the last one seen.
    """

    agent: str | None
    action: str | None
    verdict: str | None
    since: str | None
    until: str | None
    before_seq: int | None


class ApprovalFilters(TypedDict, total=False):
    """The filters of `ApprovalRows`' queries; one that is None is none.

    `state` is `pending` when left out (None: every state); `group` keeps the approvals
    routed to that reviewer group, `shape` those of that argument shape, and `due_by`
    those whose deadline is at or before that time.
    """

    state: str | None
    group: str | None
    agent: str | None
    action: str | None
    shape: str | None
    due_by: str | None


class DecisionIndex(Protocol):
    """The decisions index: one row per decision, written with its ledger entries."""

    def decision_row(
        self,
        *,
        decision_id: str | None = None,
        grant_id: str | None = None,
        agent: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any] | None:
        """The decisions-index row found by id, by grant, or by (agent, idempotency key)."""

    def decision_rows(
        self, *, limit: int = 50, **filters: Unpack[DecisionFilters]
    ) -> list[dict[str, Any]]:
        """Decisions-index rows matching every filter given, newest first."""


class ApprovalRows(Protocol):
    """Approvals as they stand now, written with the ledger entry of each step."""

    def approval_row(
        self, *, approval_id: str | None = None, decision_id: str | None = None
    ) -> dict[str, Any] | None:
        """The approvals row found by its id or its decision's id."""

    def approval_rows(
        self, *, limit: int | None = 100, offset: int = 0, **filters: Unpack[ApprovalFilters]
    ) -> list[dict[str, Any]]:
        """Approvals rows matching every filter given, by deadline then highest risk."""

    def count_approvals(self, **filters: Unpack[ApprovalFilters]) -> int:
        """How many approvals match the filters."""


class KeyRows(Protocol):
    """API keys: only a hash of each secret; each write is its own transaction."""

    def add_key(self, row: Mapping[str, Any]) -> None:
        """Store an API key row.

        Its columns: `key_id`, `key_hash`, `role`, `agent`, `label`, `created_at`, and
        `groups` (a JSON list) for reviewers.
        """

    def key_row(self, key_hash: str) -> dict[str, Any] | None:
        """The API key row whose secret hashes to `key_hash`, or None."""

    def key_rows(self) -> list[dict[str, Any]]:
        """Every API key row (hashes included), oldest first."""

    def revoke_key(self, key_id: str, at: str) -> bool:
        """Mark a key revoked; False when no such unrevoked key exists."""


class Secrets(Protocol):
    """Secrets the service keeps beside its ledger (to sign grants, say)."""

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store, created on first use."""


class Closeable(Protocol):
    """Something running that stops when closed."""

    def close(self) -> None:
        """Stop it and release what it holds."""


class AppendNotices(Protocol):
    """Being told when another process appends, sooner than a poll would find out."""

    def listen_appends(self, wake: Callable[[], None]) -> Closeable | None:
        """Call `wake` (from a thread of the store's) soon after each append commits.

        None when the store cannot tell (a SQLite file): followers poll only. A `wake`
        is a hint to read the ledger, never a promise that every append is announced.
        """


class Lead(Protocol):
    """Being the one process of a ledger that does something (see `Leadership`)."""

    @property
    def closed(self) -> bool:
        """Whether the lead is lost or given up: another process may take it now."""

    def close(self) -> None:
        """Give the lead up."""


class Leadership(Protocol):
    """Choosing one process among those sharing a store to do what must be done once."""

    def lead(self, name: str) -> Lead | None:
        """Take the lead of `name` if no other process holds it; None if one does.

        PostgreSQL grants it to one connection at a time. A SQLite file has one server,
        so there it is always granted.
        """


class LedgerStore(
    LedgerLog, DecisionIndex, ApprovalRows, KeyRows, Secrets, AppendNotices, Leadership, Protocol
):
    """Durable storage for everything the service keeps: every port above, and `close`.

    A caller that needs less should ask for less (`LedgerReader` to verify or replay,
    `LedgerLog` to append, `DecisionIndex` to look decisions up, and so on).
    """

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


class StagedTransaction:
    """A `LedgerTransaction` that commits through an adapter's `append` when it ends.

    An adapter whose `append` is already one database transaction gets its explicit
    transaction from this: `with StagedTransaction.around(store.append) as txn: ...`.
    """

    def __init__(self) -> None:
        self._events: list[NewEvent | PreparedEvent] = []
        self._indexes: list[IndexChange | None] = []
        self._entries: list[LedgerEntry] = []

    def append(self, event: NewEvent | PreparedEvent, index: IndexChange | None = None) -> None:
        """Stage an event, and the index change that commits (or fails) with it."""
        if self._entries:
            raise StoreError("the transaction has committed: it takes no more appends")
        self._events.append(event)
        self._indexes.append(index)

    @property
    def entries(self) -> list[LedgerEntry]:
        """The committed entries, in staging order; empty until the transaction commits."""
        return list(self._entries)

    @classmethod
    @contextmanager
    def around(
        cls,
        append: Callable[
            [Sequence[NewEvent | PreparedEvent], Sequence[IndexChange | None] | None],
            list[LedgerEntry],
        ],
    ) -> Iterator[StagedTransaction]:
        """Stage appends in the block, then commit them all with one call to `append`."""
        staged = cls()
        yield staged
        if staged._events:
            changes = staged._indexes if any(i is not None for i in staged._indexes) else None
            staged._entries = append(staged._events, changes)


def verify_store(
    store: LedgerReader,
    public_key: Ed25519PublicKey | None = None,
    *,
    check_canonical: bool = True,
) -> VerifyReport:
    """Verify a store's whole ledger, streaming it, against its latest checkpoint.

    The checkpoint is compared only when there is one; pass `public_key` to check its
    signature too, otherwise a forger who rewrote the checkpoint table goes unnoticed.
    """
    return verify_chain(
        store.entries(),
        checkpoint=store.latest_checkpoint(),
        public_key=public_key,
        check_canonical=check_canonical,
    )


def checkpoint_store(
    store: LedgerLog, private_key: Ed25519PrivateKey, *, at: str
) -> SignedCheckpoint:
    """Sign a checkpoint of the store's ledger as it is now, and record it.

    It streams every leaf hash through a Merkle frontier, so it costs one pass over the
    ledger; run it periodically, not per entry.

    Args:
        store: the store to checkpoint.
        private_key: the operator's Ed25519 signing key.
        at: the time to stamp it with, RFC 3339 UTC, from the caller's clock.
    """
    frontier = MerkleFrontier()
    head = store.head()
    chain_head = GENESIS.chain_hash
    for entry in store.entries(limit=head.seq):
        frontier.append(entry.leaf_hash)
        chain_head = entry.chain_hash
    checkpoint = Checkpoint(store.log_id, frontier.size, frontier.root(), chain_head, at)
    signed = sign_checkpoint(private_key, checkpoint)
    store.add_checkpoint(signed)
    return signed
