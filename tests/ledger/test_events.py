"""The event vocabulary: one module defines every kind, the docs list them, Charter keeps to it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from charter.ledger import events
from charter.store import open_store

ROOT = Path(__file__).parent.parent.parent
SRC = ROOT / "src" / "charter"
FIXTURES = ROOT / "tests" / "fixtures"


def test_every_kind_is_documented_in_the_ledger_page() -> None:
    """`docs/ledger.md`'s table of kinds lists exactly the kinds the module defines."""
    text = (ROOT / "docs" / "ledger.md").read_text(encoding="utf-8")
    table = text.split("### The kinds", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.MULTILINE))
    assert documented == set(events.KINDS)


def test_each_constant_names_its_kind() -> None:
    """Every upper-case constant of the module is a defined kind, and every kind has one."""
    constants = {
        value for name, value in vars(events).items() if name.isupper() and isinstance(value, str)
    }
    assert constants == set(events.KINDS)
    for name, kind in events.KINDS.items():
        assert kind.name == name
        assert kind.summary


def _kind_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used as a ledger kind: compared with `.kind` or passed to an event."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides):
                found += [
                    (node.lineno, s.value)
                    for s in sides
                    if isinstance(s, ast.Constant) and isinstance(s.value, str)
                ]
        elif isinstance(node, ast.Call):
            callee = node.func
            name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", "")
            if name in ("NewEvent", "Step", "record_event"):
                found += [
                    (node.lineno, a.value)
                    for a in node.args
                    if isinstance(a, ast.Constant)
                    and isinstance(a.value, str)
                    and a.value in events.KINDS
                ]
    return found


def test_no_module_spells_a_kind_outside_the_vocabulary() -> None:
    """Kinds are named by their constants: a literal elsewhere could drift from the module."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path == SRC / "ledger" / "events.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [
            f"{path.relative_to(ROOT)}:{line}: {value}"
            for line, value in _kind_literals(tree)
            if value in events.KINDS
        ]
    assert offenders == []


def test_a_full_scenario_writes_only_defined_kinds_with_their_fields(
    tmp_path: Path, store_target: str
) -> None:
    """The demo and every other writing call stay inside the vocabulary, fields and all.

    Besides the demo: keys, the registry, autonomy, grants, outcomes and the timers.
    """
    db = store_target
    run = [sys.executable, "-m", "charter"]
    subprocess.run(
        [*run, "demo", "--store", db, "-n", "150"], check=True, capture_output=True, timeout=300
    )
    subprocess.run(
        [*run, "ledger", "keygen", "--out", str(tmp_path / "k.pem")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    policy = SRC / "examples" / "policy"
    script = FIXTURES / "extend-ledger-0.1.py.txt"  # the same calls that made the fixture
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script.read_text(encoding="utf-8"),
            db,
            str(policy),
            str(tmp_path / "k.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = open_store(db)
    try:
        seen = set()
        for entry in store.entries():
            assert entry.kind in events.KINDS, entry.kind
            missing = set(events.KINDS[entry.kind].fields) - set(entry.payload_object())
            assert not missing, (entry.seq, entry.kind, missing)
            seen.add(entry.kind)
    finally:
        store.close()
    assert {
        events.GRANT_REDEEMED,
        events.OUTCOME,
        events.APPROVAL_EXPIRED,
        events.KEY_REVOKED,
    } <= seen
