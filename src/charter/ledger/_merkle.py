"""The ledger's Merkle tree (RFC 6962 / RFC 9162): roots, inclusion and consistency proofs.

Everything here is a pure function of leaf hashes, so a client can check a proof with no
server. A proof only says "this leaf (or this older tree) is part of the tree whose root
is R". The caller must still:

* compute the leaf hash itself, from the entry content it was shown (`leaf_hash`);
* obtain R from a checkpoint whose signature it verified with a key it trusts
  (`verify_checkpoint`), never from the party that sent the proof;
* for consistency, remember the older root it had verified before.

Hashes are lowercase hex strings at the boundary, bytes inside.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from charter.errors import ProofError
from charter.ledger._hashing import EMPTY_TREE_ROOT, _node

__all__ = [
    "MerkleFrontier",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "merkle_root",
    "verify_consistency",
    "verify_inclusion",
]


def _split(size: int) -> int:
    """Return the largest power of two smaller than `size` (which is at least 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _root(leaves: Sequence[bytes]) -> bytes:
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append_bytes(leaf)
    return frontier.root_bytes()


class MerkleFrontier:
    """The right edge of a growing tree: O(log n) memory, the root at any size.

    It keeps the roots of the perfect subtrees that make up the tree so far, which is all
    a streaming verifier needs to compare the ledger against a checkpoint.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """The number of leaves appended."""
        return self._size

    def append(self, leaf_hash: str) -> None:
        """Add the next leaf hash (hex)."""
        self.append_bytes(bytes.fromhex(leaf_hash))

    def append_bytes(self, leaf: bytes) -> None:
        """Add the next leaf hash (raw 32 bytes)."""
        stack = self._stack
        stack.append(leaf)
        self._size += 1
        merges = self._size
        while not merges & 1:  # each trailing zero bit closes a perfect subtree
            right = stack.pop()
            stack[-1] = _node(stack[-1], right)
            merges >>= 1

    def root(self) -> str:
        """The root hash (hex) of the leaves appended so far."""
        return self.root_bytes().hex()

    def root_bytes(self) -> bytes:
        """The root hash of the leaves appended so far, as bytes."""
        if not self._stack:
            return bytes.fromhex(EMPTY_TREE_ROOT)
        root = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            root = _node(left, root)
        return root


def _decode(hashes: Sequence[str], what: str) -> list[bytes]:
    try:
        decoded = [bytes.fromhex(value) for value in hashes]
    except (TypeError, ValueError):
        raise ProofError(f"the {what} must be hex SHA-256 hashes") from None
    if any(len(value) != 32 for value in decoded):
        raise ProofError(f"the {what} must be hex SHA-256 hashes")
    return decoded


def merkle_root(leaf_hashes: Sequence[str]) -> str:
    """Return the RFC 6962 root (hex) of a list of leaf hashes (hex)."""
    return _root(_decode(leaf_hashes, "leaf hashes")).hex()


def _path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_path(index, leaves[:k]), _root(leaves[k:])]
    return [*_path(index - k, leaves[k:]), _root(leaves[:k])]


def inclusion_proof(leaf_hashes: Sequence[str], index: int) -> list[str]:
    """Prove that the leaf at `index` (from 0) is in the tree of all `leaf_hashes`.

    Returns:
        The audit path from the leaf up to the root, as hex hashes (RFC 6962 2.1.1).

    Raises:
        ProofError: `index` is outside the tree.
    """
    if not 0 <= index < len(leaf_hashes):
        raise ProofError(f"the leaf index `{index}` is outside a tree of {len(leaf_hashes)}")
    return [value.hex() for value in _path(index, _decode(leaf_hashes, "leaf hashes"))]


def verify_inclusion(
    leaf_hash: str, index: int, tree_size: int, proof: Sequence[str], root_hash: str
) -> None:
    """Check that `leaf_hash` sits at `index` in the tree of `tree_size` with `root_hash`.

    This follows RFC 9162 2.1.3.2. The caller must compute `leaf_hash` from the content
    itself and take `root_hash` from a checkpoint it has verified.

    Raises:
        ProofError: the proof does not lead to `root_hash`, or the inputs are malformed.
    """
    if not 0 <= index < tree_size:
        raise ProofError(f"the leaf index `{index}` is outside a tree of {tree_size}")
    (leaf, root), path = _decode([leaf_hash, root_hash], "hashes"), _decode(proof, "proof")
    r = leaf
    for p, left in _climb(index, tree_size - 1, path, "inclusion"):
        r = _node(p, r) if left else _node(r, p)
    if r != root:
        raise ProofError("the inclusion proof does not lead to the expected root")


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), _root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _root(leaves[:k])]


def consistency_proof(leaf_hashes: Sequence[str], old_size: int) -> list[str]:
    """Prove that the tree of the first `old_size` leaves is a prefix of the whole tree.

    Returns:
        The RFC 6962 2.1.2 proof as hex hashes; empty when `old_size` is 0 or the full size.

    Raises:
        ProofError: `old_size` is negative or larger than the tree.
    """
    if not 0 <= old_size <= len(leaf_hashes):
        raise ProofError(f"the old size `{old_size}` is outside a tree of {len(leaf_hashes)}")
    if old_size == 0:
        return []
    return [value.hex() for value in _subproof(old_size, _decode(leaf_hashes, "leaf hashes"), True)]


def verify_consistency(
    old_size: int, new_size: int, old_root: str, new_root: str, proof: Sequence[str]
) -> None:
    """Check that the tree (`old_size`, `old_root`) is a prefix of (`new_size`, `new_root`).

    This follows RFC 9162 2.1.4.2: it is how an auditor confirms that the log only grew
    between two checkpoints. The caller must have verified both roots' checkpoints.

    Raises:
        ProofError: the log was rewritten between the two sizes, or the inputs are malformed.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"the old size `{old_size}` must be between 0 and `{new_size}`")
    (old, new), path = _decode([old_root, new_root], "roots"), _decode(proof, "proof")
    if old_size == new_size:
        if path or old != new:
            raise ProofError("two trees of the same size must have the same root")
        return
    if old_size == 0:
        if path:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not path:
        raise ProofError("the consistency proof is empty")
    if old_size & (old_size - 1) == 0:  # a perfect old tree is its own first proof node
        path = [old, *path]
    fr, sr = _consistency_roots(old_size, new_size, path)
    if fr != old or sr != new:
        raise ProofError("the consistency proof does not join the two roots")


def _consistency_roots(old_size: int, new_size: int, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Fold a consistency proof into the old and new roots it implies (RFC 9162 2.1.4.2)."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c, left in _climb(fn, sn, path[1:], "consistency"):
        if left:
            fr = _node(c, fr)
            sr = _node(c, sr)
        else:
            sr = _node(sr, c)
    return fr, sr


def _climb(fn: int, sn: int, path: Sequence[bytes], proof: str) -> Iterator[tuple[bytes, bool]]:
    """Walk a proof up from node `fn` of a tree whose last node is `sn` (RFC 9162 2.1.3.2).

    Yields each proof hash with whether it joins from the left. Both proofs climb alike;
    `proof` names the one being checked when its path does not fit the tree's depth.
    """
    for p in path:
        if sn == 0:
            raise ProofError(f"the {proof} proof is longer than the tree is deep")
        left = bool(fn & 1) or fn == sn
        yield p, left
        if left:
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the {proof} proof is shorter than the tree is deep")
