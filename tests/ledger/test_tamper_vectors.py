"""Every named tamper vector in `vectors/*.yaml` is detected as specified."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _tamper import SEED_KEY, apply, build, checkpoint
from ruamel.yaml import YAML

from charter.ledger import ProblemCode, verify_chain

VECTORS = Path(__file__).parent / "vectors"


def load_vectors() -> list[Any]:
    yaml = YAML(typ="safe")
    cases = []
    for path in sorted(VECTORS.glob("*.yaml")):
        for vector in yaml.load(path.read_text()):
            cases.append(pytest.param(vector, id=f"{path.stem}:{vector['name']}"))
    return cases


@pytest.mark.parametrize("vector", load_vectors())
def test_vector(vector: dict[str, Any]) -> None:
    """The verifier reports the vector's expected first problem, or none."""
    size = vector["size"]
    rows = build(size + vector.get("grow", 0))
    signed = checkpoint(rows[:size]) if vector.get("checkpoint") else None
    if signed is not None and vector.get("forge_signature"):
        signed = replace(signed, signature=signed.signature[:-2] + "00")
    for op in vector["ops"]:
        apply(rows, op)
    report = verify_chain(rows, checkpoint=signed, public_key=SEED_KEY.public_key())
    expect = vector["expect"]
    if expect.get("ok"):
        assert report.ok, report.problem
        assert report.problem is None
        return
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.code, report.problem.seq) == (expect["code"], expect["seq"]), str(
        report.problem
    )


def test_vectors_cover_every_problem_code() -> None:
    """The vector files exercise every problem code except malformed rows."""
    codes = {param.values[0]["expect"].get("code") for param in load_vectors()}  # type: ignore[index]
    assert {code.value for code in ProblemCode} - codes == {"malformed"}
