"""Domain-separated SHA-256 hashing for the ledger, after RFC 6962.

Each use of the hash gets its own one-byte prefix, so a value hashed for one purpose can
never be passed off as another: a leaf cannot pose as an interior node of the Merkle tree,
and neither can pose as a link of the hash chain.

    leaf  = SHA-256(0x00 || entry content)
    node  = SHA-256(0x01 || left || right)
    chain = SHA-256(0x02 || previous chain hash || leaf)

An entry's content is the canonical JSON of `{"at", "kind", "payload", "seq"}`. Hashes
travel as lowercase hex strings; the byte forms stay inside the package.
"""

from __future__ import annotations

import hashlib
import json

__all__ = [
    "EMPTY_TREE_ROOT",
    "GENESIS_HASH",
    "chain_hash",
    "entry_content",
    "leaf_hash",
    "node_hash",
]

_LEAF = b"\x00"
_NODE = b"\x01"
_CHAIN = b"\x02"
_ZERO = bytes(32)

GENESIS_HASH = _ZERO.hex()
"""The chain hash before the first entry: 32 zero bytes."""

EMPTY_TREE_ROOT = hashlib.sha256(b"").hexdigest()
"""The Merkle root of the empty tree: SHA-256 of the empty string (RFC 6962 2.1)."""

_sha256 = hashlib.sha256
_json_string = json.encoder.encode_basestring  # JCS string escaping for `str` values


def entry_content(seq: int, kind: str, at: str, payload: bytes) -> bytes:
    """Build the canonical content of an entry from its canonical payload.

    The result equals `canonical_bytes({"at": at, "kind": kind, "payload": ..., "seq": seq})`
    but is assembled around the already-canonical payload bytes, so neither writing nor
    verifying pays to encode the payload twice.

    Args:
        seq: the entry's position, from 1.
        kind: what the entry records, such as `decision`.
        at: when, as an RFC 3339 UTC timestamp.
        payload: the canonical JSON of the payload object.

    Raises:
        UnicodeEncodeError: `kind` or `at` holds a lone surrogate.
    """
    return b"".join(
        (
            b'{"at":',
            _json_string(at).encode(),
            b',"kind":',
            _json_string(kind).encode(),
            b',"payload":',
            payload,
            b',"seq":',
            str(seq).encode(),
            b"}",
        )
    )


def _leaf(content: bytes) -> bytes:
    return _sha256(_LEAF + content).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE + left + right).digest()


def _chain(previous: bytes, leaf: bytes) -> bytes:
    return _sha256(_CHAIN + previous + leaf).digest()


def leaf_hash(content: bytes) -> str:
    """Return the Merkle leaf hash of an entry's content, as hex."""
    return _leaf(content).hex()


def node_hash(left: str, right: str) -> str:
    """Return the Merkle interior node hash of two child hashes given as hex."""
    return _node(bytes.fromhex(left), bytes.fromhex(right)).hex()


def chain_hash(previous: str, leaf: str) -> str:
    """Return the chain hash linking an entry's leaf hash to the previous chain hash."""
    return _chain(bytes.fromhex(previous), bytes.fromhex(leaf)).hex()
