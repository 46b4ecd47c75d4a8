"""Build small ledgers and break them in named ways, for the tamper tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from charter.ledger import (
    GENESIS,
    GENESIS_HASH,
    Checkpoint,
    LedgerEntry,
    MerkleFrontier,
    NewEvent,
    SignedCheckpoint,
    chain_hash,
    entry_content,
    leaf_hash,
    link_entries,
    prepare_event,
    sign_checkpoint,
)

SEED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
AT = "2025-01-31T09:30:00Z"


@dataclass
class Row:
    """A mutable stored row, as someone with write access to the database sees it."""

    seq: int
    kind: str
    at: str
    payload: str
    leaf_hash: str
    chain_hash: str


def build(size: int) -> list[Row]:
    events = [
        prepare_event(NewEvent("decision", AT, {"n": i, "verdict": "allow", "risk": i * 7 % 50}))
        for i in range(1, size + 1)
    ]
    return [Row(*vars_of(entry)) for entry in link_entries_from_genesis(events)]


def link_entries_from_genesis(events: list[Any]) -> list[LedgerEntry]:
    return link_entries(GENESIS, events)


def vars_of(entry: LedgerEntry) -> tuple[Any, ...]:
    return (entry.seq, entry.kind, entry.at, entry.payload, entry.leaf_hash, entry.chain_hash)


def checkpoint(rows: list[Row], key: Ed25519PrivateKey = SEED_KEY) -> SignedCheckpoint:
    frontier = MerkleFrontier()
    for row in rows:
        frontier.append(row.leaf_hash)
    head = rows[-1].chain_hash if rows else GENESIS_HASH
    return sign_checkpoint(key, Checkpoint("test-log", len(rows), frontier.root(), head, AT))


def rehash(rows: list[Row], position: int) -> None:
    """Recompute the hashes of the row at `position` (0-based) from its content."""
    row = rows[position]
    previous = rows[position - 1].chain_hash if position else GENESIS_HASH
    row.leaf_hash = leaf_hash(entry_content(row.seq, row.kind, row.at, row.payload.encode()))
    row.chain_hash = chain_hash(previous, row.leaf_hash)


def index_of(rows: list[Row], seq: int) -> int:
    return next(i for i, row in enumerate(rows) if row.seq == seq)


def apply(rows: list[Row], op: dict[str, Any]) -> None:
    """Apply one tamper operation from a vector file."""
    name = op["op"]
    if name == "set":
        setattr(rows[index_of(rows, op["seq"])], op["field"], op["value"])
    elif name == "set_payload":
        rows[index_of(rows, op["seq"])].payload = json.dumps(op["value"], separators=(",", ":"))
    elif name == "rehash":
        for seq in op.get("seqs", [op.get("seq")]):
            rehash(rows, index_of(rows, seq))
    elif name == "rehash_from":
        for position in range(index_of(rows, op["seq"]), len(rows)):
            rehash(rows, position)
    elif name == "delete":
        del rows[index_of(rows, op["seq"])]
    elif name == "truncate":
        del rows[op["keep"] :]
    elif name == "renumber":
        for position, row in enumerate(rows):
            row.seq = position + 1
    elif name == "insert":
        forged = Row(op["seq"], op.get("kind", "decision"), AT, op["payload"], "", "")
        rows.insert(op["position"], forged)
        rehash(rows, op["position"])
    elif name == "swap_rows":
        i, j = index_of(rows, op["seqs"][0]), index_of(rows, op["seqs"][1])
        rows[i], rows[j] = rows[j], rows[i]
    elif name == "swap_contents":
        i, j = index_of(rows, op["seqs"][0]), index_of(rows, op["seqs"][1])
        rows[i].seq, rows[j].seq = rows[j].seq, rows[i].seq
        rows[i], rows[j] = rows[j], rows[i]
    elif name == "move_row":
        row = rows.pop(index_of(rows, op["seq"]))
        rows.insert(op["to"], row)
    else:
        raise ValueError(f"unknown tamper op {name!r}")
