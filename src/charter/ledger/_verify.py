"""Verify a ledger from its stored rows: the chain, each entry, and the latest checkpoint.

`verify_chain` recomputes every hash from the stored bytes and stops at the first entry
that does not hold up, naming it and what went wrong with a stable problem code. It reads
rows one at a time, so a store can stream millions of entries through it in bounded
memory. It needs nothing but this package and, for checkpoints, a public key.

What it cannot tell by itself: a party able to rewrite every hash can forge a whole new,
internally consistent ledger. A signed checkpoint, checked with a key the caller trusts,
is what rules that out for the entries it covers; entries after the latest checkpoint are
only as trustworthy as the store that holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from charter.canonical import is_canonical
from charter.ledger._chain import GENESIS, ChainHead
from charter.ledger._checkpoint import CheckpointError, SignedCheckpoint, verify_checkpoint
from charter.ledger._hashing import _chain, _leaf, entry_content
from charter.ledger._merkle import MerkleFrontier

__all__ = ["EntryRow", "IntegrityProblem", "ProblemCode", "VerifyReport", "verify_chain"]

# How far the diagnosis of a broken entry looks around it, in entries, to tell a deletion
# or insertion (later entries renumbered) or a reordering from a plain edit.
_DIAGNOSIS_WINDOW = 1000


class ProblemCode(StrEnum):
    """What is wrong with a ledger: stable codes for tools and alerts."""

    EDITED = "edited"
    """An entry's content or stored leaf hash was changed."""
    DELETED = "deleted"
    """An entry is missing: a gap in the sequence, or later entries renumbered."""
    INSERTED = "inserted"
    """An entry was added: a repeated sequence number, or later entries renumbered."""
    REORDERED = "reordered"
    """Entries appear in a different order from the one they were written in."""
    NOT_CANONICAL = "not_canonical"
    """A payload hashes correctly but is not the canonical JSON of a JSON object."""
    CHAIN_BROKEN = "chain_broken"
    """An entry does not link to the one before it: one of them was rewritten."""
    MALFORMED = "malformed"
    """A row lacks a field or holds a value of the wrong type."""
    TRUNCATED = "truncated"
    """The ledger is shorter than its signed checkpoint: entries were cut from the tail."""
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    """The entries a checkpoint covers do not hash to its root: the log was rewritten."""
    BAD_SIGNATURE = "bad_signature"
    """The checkpoint's signature does not verify with the given key."""


class EntryRow(Protocol):
    """A stored entry as the verifier reads it; `LedgerEntry` and database rows both fit."""

    @property
    def seq(self) -> int:
        """Position, from 1."""

    @property
    def kind(self) -> str:
        """What the entry records."""

    @property
    def at(self) -> str:
        """When, RFC 3339 UTC."""

    @property
    def payload(self) -> str | bytes:
        """The stored canonical JSON text of the payload."""

    @property
    def leaf_hash(self) -> str:
        """The stored leaf hash, hex."""

    @property
    def chain_hash(self) -> str:
        """The stored chain hash, hex."""


@dataclass(frozen=True, slots=True)
class IntegrityProblem:
    """The first thing found wrong: its code, the entry (if one is to blame), and why."""

    code: ProblemCode
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"entry {self.seq}" if self.seq is not None else "ledger"
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of a verification.

    Attributes:
        ok: True when no problem was found.
        count: how many entries verified before the first problem (all, when ok).
        head: the last verified entry's seq and chain hash.
        problem: the first problem, or None.
        checkpoint_size: the tree size of the checkpoint checked against, if any.
        signature_checked: whether that checkpoint's signature was verified with a key.
    """

    ok: bool
    count: int
    head: ChainHead
    problem: IntegrityProblem | None = None
    checkpoint_size: int | None = None
    signature_checked: bool = False


def _content_leaf(row: EntryRow, seq: int) -> str:
    payload = row.payload if isinstance(row.payload, bytes) else row.payload.encode()
    return _leaf(entry_content(seq, row.kind, row.at, payload)).hex()


def _original_seq(row: EntryRow, seq: int) -> int | None:
    """Find which position an entry's stored leaf hash was computed for, near `seq`."""
    for distance in range(1, _DIAGNOSIS_WINDOW + 1):
        for candidate in (seq + distance, seq - distance):
            if candidate >= 1 and _content_leaf(row, candidate) == row.leaf_hash:
                return candidate
    return None


def _order_problem(row: EntryRow, ahead: list[EntryRow], expected: int) -> IntegrityProblem:
    """Explain a row whose seq is not the next one."""
    seq = row.seq
    if seq < expected:
        if seq == expected - 1:
            return IntegrityProblem(ProblemCode.INSERTED, seq, f"a second entry claims seq {seq}")
        return IntegrityProblem(
            ProblemCode.REORDERED, seq, f"entry {seq} appears after {expected - 1}"
        )
    if any(later.seq == expected for later in ahead):
        return IntegrityProblem(
            ProblemCode.REORDERED, expected, f"entry {expected} appears after {seq}"
        )
    missing = f"entry {expected} is" if seq == expected + 1 else f"entries {expected}-{seq - 1} are"
    return IntegrityProblem(ProblemCode.DELETED, expected, f"{missing} missing")


def _content_problem(row: EntryRow, ahead: list[EntryRow], seq: int) -> IntegrityProblem:
    """Explain a row whose content does not hash to its stored leaf hash."""
    original = _original_seq(row, seq)
    if original is None:
        return IntegrityProblem(
            ProblemCode.EDITED, seq, "the content or the stored hash of the entry was changed"
        )
    if original > seq:
        if any(_content_leaf(later, seq) == later.leaf_hash for later in ahead):
            return IntegrityProblem(
                ProblemCode.REORDERED, seq, f"entry {seq} holds what was written as {original}"
            )
        if original == seq + 1:
            return IntegrityProblem(
                ProblemCode.DELETED, seq, f"entry {seq} was removed and later entries renumbered"
            )
    elif original == seq - 1:
        return IntegrityProblem(
            ProblemCode.INSERTED,
            original,
            f"entry {original} was inserted and later entries renumbered",
        )
    return IntegrityProblem(
        ProblemCode.REORDERED, seq, f"entry {seq} holds what was written as {original}"
    )


def verify_chain(
    rows: Iterable[EntryRow],
    *,
    checkpoint: SignedCheckpoint | None = None,
    public_key: Ed25519PublicKey | None = None,
    check_canonical: bool = True,
) -> VerifyReport:
    """Verify stored entries, in seq order from the first, and stop at the first problem.

    For each entry it recomputes the leaf hash from the stored bytes, checks that the
    payload is canonical JSON (skippable: it is most of the cost, and a writer that
    recomputes hashes can forge canonical payloads too), and checks the chain link. With
    a `checkpoint` it also checks that the ledger is at least `tree_size` long and that
    its first `tree_size` entries give the checkpoint's Merkle root and chain head.

    Args:
        rows: stored entries in the order to check, starting at seq 1.
        checkpoint: the latest signed checkpoint, to catch truncation and rewrites.
        public_key: the key that must have signed `checkpoint`. Without it only the
            sizes and roots are compared, which proves nothing against a forger.
        check_canonical: whether to check that each payload is canonical JSON.

    Returns:
        The report: ok, or the first problem with its entry and code.
    """
    walk = _Walk(checkpoint, check_canonical)
    if checkpoint is not None and public_key is not None:
        try:
            verify_checkpoint(public_key, checkpoint)
        except CheckpointError as error:
            return walk.report(IntegrityProblem(ProblemCode.BAD_SIGNATURE, None, str(error)))
        walk.signature_checked = True
    return walk.report(walk.run(iter(rows)))


class _Walk:
    """The state of one verification pass: where it is and what it has proved so far."""

    def __init__(self, checkpoint: SignedCheckpoint | None, check_canonical: bool) -> None:
        self.checkpoint = checkpoint.checkpoint if checkpoint is not None else None
        self.target = self.checkpoint.tree_size if self.checkpoint is not None else 0
        self.frontier = MerkleFrontier()
        self.check_canonical = check_canonical
        self.signature_checked = False
        self.count = 0  # entries verified so far
        self.head = self.before_head = bytes.fromhex(GENESIS.chain_hash)

    def report(self, problem: IntegrityProblem | None) -> VerifyReport:
        size = self.target if self.checkpoint is not None else None
        head = ChainHead(self.count, self.head.hex())
        return VerifyReport(
            problem is None, self.count, head, problem, size, self.signature_checked
        )

    def run(self, rows: Iterator[EntryRow]) -> IntegrityProblem | None:
        row = next(rows, None)
        while row is not None:
            following = next(rows, None)
            try:
                problem = self.step(row, following, rows)
            except (AttributeError, TypeError, UnicodeEncodeError) as error:
                problem = IntegrityProblem(
                    ProblemCode.MALFORMED, self.count + 1, f"the row is malformed: {error}"
                )
            if problem is not None:
                return problem
            row = following
        if self.count < self.target:
            return IntegrityProblem(
                ProblemCode.TRUNCATED,
                self.count + 1,
                f"the ledger ends at entry {self.count} but the signed checkpoint covers"
                f" {self.target}",
            )
        return None

    def step(
        self, row: EntryRow, following: EntryRow | None, rows: Iterator[EntryRow]
    ) -> IntegrityProblem | None:
        """Verify one row; on a problem, look ahead in `rows` to explain it."""
        expected = self.count + 1
        if row.seq != expected:
            return _order_problem(row, _ahead(following, rows), expected)
        payload = row.payload if isinstance(row.payload, bytes) else row.payload.encode()
        leaf = _leaf(entry_content(expected, row.kind, row.at, payload))
        if leaf.hex() != row.leaf_hash:
            problem = _content_problem(row, _ahead(following, rows), expected)
            if problem.seq == expected - 1:  # the entry before was the forgery
                self.count -= 1
                self.head = self.before_head
            return problem
        if self.check_canonical and (payload[:1] != b"{" or not is_canonical(payload)):
            return IntegrityProblem(
                ProblemCode.NOT_CANONICAL,
                expected,
                "the payload is not the canonical JSON of an object",
            )
        link = _chain(self.head, leaf)
        if link.hex() != row.chain_hash:
            return IntegrityProblem(
                ProblemCode.CHAIN_BROKEN,
                expected,
                f"the entry does not link to entry {expected - 1}: one of them was"
                " rewritten, or the stored chain hash was changed",
            )
        self.count = expected
        self.before_head, self.head = self.head, link
        if expected <= self.target:
            return self.against_checkpoint(leaf, link)
        return None

    def against_checkpoint(self, leaf: bytes, link: bytes) -> IntegrityProblem | None:
        """Feed the Merkle frontier and compare it with the checkpoint at its size."""
        self.frontier.append_bytes(leaf)
        signed = self.checkpoint
        if self.count != self.target or signed is None:
            return None
        if self.frontier.root() == signed.root_hash and link.hex() == signed.chain_head:
            return None
        return IntegrityProblem(
            ProblemCode.CHECKPOINT_MISMATCH,
            self.target,
            f"the first {self.target} entries do not match the signed checkpoint:"
            " the ledger was rewritten",
        )


def _ahead(following: EntryRow | None, rows: Iterator[EntryRow]) -> list[EntryRow]:
    ahead = [] if following is None else [following]
    ahead.extend(islice(rows, _DIAGNOSIS_WINDOW))
    return ahead
