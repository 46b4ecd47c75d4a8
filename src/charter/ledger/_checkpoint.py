"""Signed checkpoints: an Ed25519 signature over the ledger's size, Merkle root and head.

A checkpoint lets someone who holds only the public key tell whether the ledger they are
shown is the one that was written: the first `tree_size` entries must hash to
`root_hash`, the chain must end at `chain_head`, and a later checkpoint must be consistent
with an earlier one. Deleting entries from the tail, which a bare hash chain cannot
reveal, shows up as a ledger shorter than its latest checkpoint.

What is signed is the line `charter-checkpoint-v1` followed by the canonical JSON of the
checkpoint's fields, so a checkpoint signature can never be confused with any other
message signed by the same key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter.canonical import canonical_bytes
from charter.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "SignedCheckpoint",
    "generate_signing_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign_checkpoint",
    "verify_checkpoint",
]

_CONTEXT = b"charter-checkpoint-v1\n"
_Key = TypeVar("_Key", Ed25519PrivateKey, Ed25519PublicKey)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The state of a ledger at one size, as its operator vouches for it.

    Attributes:
        origin: which ledger this is (its log id), so checkpoints of two logs never mix.
        tree_size: the number of entries covered.
        root_hash: the RFC 6962 Merkle root (hex) of their leaf hashes.
        chain_head: the chain hash (hex) of entry `tree_size`.
        at: when it was made, RFC 3339 UTC, from the caller's clock.
    """

    origin: str
    tree_size: int
    root_hash: str
    chain_head: str
    at: str

    def signed_message(self) -> bytes:
        """The exact bytes the signature covers."""
        return _CONTEXT + canonical_bytes(asdict(self))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the Ed25519 signature (hex) and the id of the key that made it."""

    checkpoint: Checkpoint
    key_id: str
    signature: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form, for storage or publication."""
        return {**asdict(self.checkpoint), "key_id": self.key_id, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignedCheckpoint:
        """Read the form `to_dict` writes.

        Raises:
            CheckpointError: a field is missing or has the wrong type.
        """
        try:
            checkpoint = Checkpoint(
                origin=str(data["origin"]),
                tree_size=int(data["tree_size"]),
                root_hash=str(data["root_hash"]),
                chain_head=str(data["chain_head"]),
                at=str(data["at"]),
            )
            return cls(checkpoint, str(data["key_id"]), str(data["signature"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"the checkpoint is malformed: {error}") from None


def generate_signing_key() -> Ed25519PrivateKey:
    """Make a new Ed25519 signing key for checkpoints."""
    return Ed25519PrivateKey.generate()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Name a public key: the first 16 hex digits of SHA-256 over its raw 32 bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PKCS#8 PEM or its raw 32 bytes.

    Raises:
        CheckpointError: the data is neither, or holds another kind of key.
    """
    return _load_key(
        data,
        "private",
        Ed25519PrivateKey,  # type: ignore[type-abstract]  # read by `isinstance` only
        Ed25519PrivateKey.from_private_bytes,
        lambda pem: serialization.load_pem_private_key(pem, password=None),
    )


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from SubjectPublicKeyInfo PEM or its raw 32 bytes.

    Raises:
        CheckpointError: the data is neither, or holds another kind of key.
    """
    return _load_key(
        data,
        "public",
        Ed25519PublicKey,  # type: ignore[type-abstract]  # read by `isinstance` only
        Ed25519PublicKey.from_public_bytes,
        serialization.load_pem_public_key,
    )


def _load_key(
    data: bytes,
    which: str,
    kind: type[_Key],
    from_raw: Callable[[bytes], _Key],
    from_pem: Callable[[bytes], object],
) -> _Key:
    """A key of `kind` from its raw 32 bytes or from PEM; `which` names it in errors."""
    if len(data) == 32:
        return from_raw(data)
    try:
        key = from_pem(data)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read the {which} key: {error}") from None
    if not isinstance(key, kind):
        raise CheckpointError(f"the {which} key is not an Ed25519 key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """Write a private key as unencrypted PKCS#8 PEM; protect the file it goes to."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """Write a public key as SubjectPublicKeyInfo PEM, for auditors."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_checkpoint(private_key: Ed25519PrivateKey, checkpoint: Checkpoint) -> SignedCheckpoint:
    """Sign a checkpoint.

    The caller builds the checkpoint from the ledger it holds (tree size, Merkle root,
    chain head) and its own clock; signing reads nothing else.
    """
    signature = private_key.sign(checkpoint.signed_message())
    return SignedCheckpoint(checkpoint, key_id(private_key.public_key()), signature.hex())


def verify_checkpoint(public_key: Ed25519PublicKey, signed: SignedCheckpoint) -> None:
    """Check a checkpoint's signature.

    A valid signature says the key's holder vouched for this size and root. The caller
    must still check that the key is one it trusts for this `origin`, and that the
    ledger it holds matches the checkpoint (`verify_chain` does both sizes and roots).

    Raises:
        CheckpointError: the signature is not the key's signature over this checkpoint.
    """
    if signed.key_id != key_id(public_key):
        raise CheckpointError(
            f"the checkpoint was signed by key `{signed.key_id}`, not `{key_id(public_key)}`"
        )
    try:
        public_key.verify(bytes.fromhex(signed.signature), signed.checkpoint.signed_message())
    except (InvalidSignature, ValueError):
        raise CheckpointError("the checkpoint signature does not verify") from None
