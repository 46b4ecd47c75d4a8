"""The Merkle tree follows RFC 6962: roots, inclusion and consistency proofs."""

from __future__ import annotations

import hashlib

import pytest

from charter.ledger import (
    EMPTY_TREE_ROOT,
    MerkleFrontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# The eight leaf inputs of the RFC 6962 reference test data.
INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
LEAVES = [leaf_hash(data) for data in INPUTS]


def reference_root(leaves: list[str]) -> str:
    """MTH straight from RFC 6962 2.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def many(n: int) -> list[str]:
    return [leaf_hash(str(i).encode()) for i in range(n)]


class TestHashes:
    def test_empty_tree_root(self) -> None:
        """The empty tree's root is SHA-256 of the empty string."""
        assert EMPTY_TREE_ROOT == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        assert merkle_root([]) == EMPTY_TREE_ROOT

    def test_leaf_hash_has_zero_prefix(self) -> None:
        """A leaf hash is SHA-256 over 0x00 and the content."""
        assert LEAVES[0] == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"

    def test_node_hash_has_one_prefix(self) -> None:
        """A node hash is SHA-256 over 0x01, left and right."""
        left, right = LEAVES[0], LEAVES[1]
        expected = hashlib.sha256(b"\x01" + bytes.fromhex(left) + bytes.fromhex(right))
        assert node_hash(left, right) == expected.hexdigest()

    def test_reference_eight_leaf_root(self) -> None:
        """The eight reference leaves give the published RFC 6962 root."""
        assert merkle_root(LEAVES) == (
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        )


class TestRoot:
    @pytest.mark.parametrize("size", range(40))
    def test_matches_recursive_definition(self, size: int) -> None:
        """The root of every size up to 39 equals RFC 6962's recursive definition."""
        leaves = many(size)
        assert merkle_root(leaves) == reference_root(leaves)

    def test_frontier_gives_every_prefix_root(self) -> None:
        """A streaming frontier yields the root of every prefix as it grows."""
        leaves = many(70)
        frontier = MerkleFrontier()
        assert frontier.root() == EMPTY_TREE_ROOT
        for size, leaf in enumerate(leaves, start=1):
            frontier.append(leaf)
            assert frontier.size == size
            assert frontier.root() == reference_root(leaves[:size])


class TestInclusion:
    @pytest.mark.parametrize("size", range(1, 20))
    def test_every_leaf_proves(self, size: int) -> None:
        """Every leaf of every tree up to 19 has a proof that verifies."""
        leaves = many(size)
        root = merkle_root(leaves)
        for index in range(size):
            verify_inclusion(leaves[index], index, size, inclusion_proof(leaves, index), root)

    def test_wrong_leaf_index_or_root_fails(self) -> None:
        """A proof fails for another leaf, another index, a shorter path or another root."""
        leaves = many(11)
        root = merkle_root(leaves)
        proof = inclusion_proof(leaves, 5)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[6], 5, 11, proof, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 4, 11, proof, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 5, 11, proof[:-1], root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 5, 11, [*proof, proof[0]], root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 5, 11, proof, merkle_root(leaves[:10]))
        with pytest.raises(ProofError):
            verify_inclusion(leaves[5], 11, 11, proof, root)

    def test_malformed_hashes_are_refused(self) -> None:
        """Hashes that are not 32 bytes of hex raise `ProofError`."""
        with pytest.raises(ProofError, match="hex"):
            verify_inclusion("zz", 0, 1, [], "00" * 32)


class TestConsistency:
    @pytest.mark.parametrize("new_size", range(1, 18))
    def test_every_prefix_is_consistent(self, new_size: int) -> None:
        """Every older size of every tree up to 17 has a consistency proof that verifies."""
        leaves = many(new_size)
        new_root = merkle_root(leaves)
        for old_size in range(new_size + 1):
            proof = consistency_proof(leaves, old_size)
            verify_consistency(old_size, new_size, merkle_root(leaves[:old_size]), new_root, proof)

    def test_rewritten_history_fails(self) -> None:
        """A tree whose old part changed is not consistent with the old root."""
        leaves = many(13)
        forged = [*leaves[:3], leaf_hash(b"forged"), *leaves[4:]]
        proof = consistency_proof(forged, 7)
        with pytest.raises(ProofError):
            verify_consistency(7, 13, merkle_root(leaves[:7]), merkle_root(forged), proof)

    def test_tampered_proofs_fail(self) -> None:
        """Dropping, adding or changing a proof node makes it fail."""
        leaves = many(13)
        old, new = merkle_root(leaves[:6]), merkle_root(leaves)
        proof = consistency_proof(leaves, 6)
        for bad in (proof[:-1], [*proof, proof[0]], [leaf_hash(b"x"), *proof[1:]], []):
            with pytest.raises(ProofError):
                verify_consistency(6, 13, old, new, bad)

    def test_same_size_needs_same_root(self) -> None:
        """Two trees of one size are consistent only if their roots are equal."""
        leaves = many(5)
        verify_consistency(5, 5, merkle_root(leaves), merkle_root(leaves), [])
        with pytest.raises(ProofError):
            verify_consistency(5, 5, merkle_root(leaves), merkle_root(many(6)[1:]), [])

    def test_sizes_out_of_order_are_refused(self) -> None:
        """An old size larger than the new one is an error, not a pass."""
        with pytest.raises(ProofError):
            verify_consistency(6, 5, EMPTY_TREE_ROOT, EMPTY_TREE_ROOT, [])
        with pytest.raises(ProofError):
            consistency_proof(many(3), 4)
