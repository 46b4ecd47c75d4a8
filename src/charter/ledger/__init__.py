"""The tamper-evident ledger's pure core: entries, hash chain, Merkle tree, checkpoints.

Nothing here does I/O or reads the clock; stores (`charter.store`) persist what this
package computes, and auditors verify with it and a public key alone.
"""

from charter.ledger._chain import (
    GENESIS,
    ChainHead,
    EventError,
    LedgerEntry,
    NewEvent,
    PreparedEvent,
    check_event,
    link_entries,
    prepare_event,
)
from charter.ledger._checkpoint import (
    Checkpoint,
    CheckpointError,
    SignedCheckpoint,
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign_checkpoint,
    verify_checkpoint,
)
from charter.ledger._hashing import (
    EMPTY_TREE_ROOT,
    GENESIS_HASH,
    chain_hash,
    entry_content,
    leaf_hash,
    node_hash,
)
from charter.ledger._merkle import (
    MerkleFrontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from charter.ledger._replay import DECISION_KIND, RecordedEntry, ReplayReport, StateCheck, replay
from charter.ledger._verify import (
    EntryRow,
    IntegrityProblem,
    ProblemCode,
    VerifyReport,
    verify_chain,
)

__all__ = [
    "DECISION_KIND",
    "EMPTY_TREE_ROOT",
    "GENESIS",
    "GENESIS_HASH",
    "ChainHead",
    "Checkpoint",
    "CheckpointError",
    "EntryRow",
    "EventError",
    "IntegrityProblem",
    "LedgerEntry",
    "MerkleFrontier",
    "NewEvent",
    "PreparedEvent",
    "ProblemCode",
    "ProofError",
    "RecordedEntry",
    "ReplayReport",
    "SignedCheckpoint",
    "StateCheck",
    "VerifyReport",
    "chain_hash",
    "check_event",
    "consistency_proof",
    "entry_content",
    "generate_signing_key",
    "inclusion_proof",
    "key_id",
    "leaf_hash",
    "link_entries",
    "load_private_key",
    "load_public_key",
    "merkle_root",
    "node_hash",
    "prepare_event",
    "private_key_pem",
    "public_key_pem",
    "replay",
    "sign_checkpoint",
    "verify_chain",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]
