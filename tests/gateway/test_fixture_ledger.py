"""A ledger written by an earlier Charter still verifies, replays and opens exactly.

SQLite only: the fixture is the SQLite file Charter 0.1 wrote (PostgreSQL came later).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charter import Charter, load_bundle
from charter.controls import ServiceState
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events, load_public_key
from charter.service import load_recorded_bundle
from charter.store import open_store, verify_store

FIXTURES = Path(__file__).parent.parent / "fixtures"
HEAD = "5c3bedd8e924e1b5ae3703ea732cd562ac1d41c7a5cf92d8b9c456df7fc7de41"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """A fresh copy of the fixture ledger."""
    target = tmp_path / "ledger-0.1.db"
    with gzip.open(FIXTURES / "ledger-0.1.db.gz") as packed, target.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return target


def _charter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "charter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_verifies_against_its_signed_checkpoint(ledger: Path) -> None:
    """Every entry's hashes and the signed checkpoint at its head check out."""
    key = load_public_key((FIXTURES / "ledger-0.1.key.pub").read_bytes())
    store = open_store(ledger)
    try:
        report = verify_store(store, key, check_canonical=True)
        assert report.ok, report
        assert store.head().seq == 426
        assert store.head().chain_hash == HEAD
    finally:
        store.close()


def test_the_command_line_verifies_and_replays_it_exactly(ledger: Path) -> None:
    """`charter ledger verify` and `charter replay` exit 0; every decision is reproduced."""
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    verified = _charter(
        "ledger",
        "verify",
        "--db",
        str(ledger),
        "--public-key",
        str(FIXTURES / "ledger-0.1.key.pub"),
    )
    assert verified.returncode == 0, verified.stderr
    assert "426" in verified.stdout
    replayed = _charter("replay", "--db", str(ledger), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert '"unchanged": 304' in replayed.stdout
    assert '"changed": 0' in replayed.stdout
    # Its halts, registry, autonomy and budgets fold to what each decision recorded.
    assert json.loads(replayed.stdout)["state"] == {"checked": 304, "differing": 0, "examples": []}
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before  # reading wrote nothing


def test_every_kind_in_it_is_in_the_vocabulary_with_its_fields(ledger: Path) -> None:
    """The old ledger speaks the vocabulary `charter.ledger.events` defines."""
    store = open_store(ledger)
    try:
        seen = set()
        for entry in store.entries():
            kind = events.KINDS[entry.kind]
            assert set(kind.fields) <= set(entry.payload_object()), (entry.seq, entry.kind)
            seen.add(entry.kind)
    finally:
        store.close()
    assert len(seen) == 18


def test_opening_it_folds_the_state_it_left(ledger: Path) -> None:
    """A service opened on the old ledger holds its registry and halts, and extends it."""
    store = open_store(ledger)
    try:
        folded = ServiceState.fold(store.entries())
        assert folded.deployed is not None
        # the example policy as it was when the fixture was written
        bundle = load_recorded_bundle(store, folded.deployed)
    finally:
        store.close()
    assert "fixture-bot" in folded.registry
    assert folded.autonomy == {}  # set to 2, then restored
    assert folded.halts == {}  # halted, then resumed
    assert bundle is not None
    with Charter(bundle, ledger) as charter:
        assert charter.get_agent("fixture-bot") is not None
        assert charter.store.head().seq == 426  # same version: no new deployment
        record = charter.decide(
            {
                "agent": "support-bot-trainee",
                "action": "orders.cancel",
                "args": {"order_id": "ord-12345", "shipped": False},
                "context": {"confidence": 0.7, "rationale": "customer asked"},
            }
        )
        assert record.seq == 427
        assert charter.verify(strict=True).ok
        assert charter.replay().ok
    today = load_bundle(EXAMPLE_POLICY)  # the example has grown since: deployed on opening
    with Charter(today, ledger) as charter:
        (deployed,) = charter.store.entries(after=427, kinds={"policy.deployed"})
        assert deployed.payload_object()["previous"] == bundle.version
        assert charter.replay().ok
