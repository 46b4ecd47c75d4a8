"""Reading a bundle's files: YAML with line numbers, turned into plain JSON with locations.

A bundle's identity is the canonical JSON of what its files say, so YAML-only values
(dates, sets, anchors' aliasing) are converted to JSON or rejected here, where the error can
still point at a line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from charter.errors import Problem

__all__ = ["Node", "SourceFile", "read_bundle_files", "read_yaml"]

POLICY_SUFFIXES = (".yaml", ".yml")
#: Folders of a bundle that hold no policy: scenario suites and runbooks are read separately.
SCENARIO_DIR = "scenarios"
RUNBOOK_DIR = "runbooks"


@dataclass(slots=True)
class Node:
    """A plain JSON value with the location of every key and item beneath it.

    `locs` maps a child key (or list index) to its (line, col), 1-based; bundles rebuilt
    from the ledger have no source, so their locations are (0, 0).
    """

    value: Any
    file: str
    line: int = 0
    col: int = 0
    locs: dict[Any, tuple[int, int]] = field(default_factory=dict)
    children: dict[Any, Node] = field(default_factory=dict)

    def child(self, key: Any) -> Node:
        """The node under `key` (which must exist in `value`)."""
        found = self.children.get(key)
        if found is not None:
            return found
        line, col = self.locs.get(key, (self.line, self.col))
        return Node(self.value[key], self.file, line, col)

    def items(self) -> Iterator[tuple[Any, Node]]:
        """The (key, node) pairs of a mapping, or (index, node) of a list."""
        keys = range(len(self.value)) if isinstance(self.value, list) else self.value.keys()
        for key in keys:
            yield key, self.child(key)

    def problem(self, code: str, message: str) -> Problem:
        """A problem located at this node."""
        return Problem(self.file, self.line, self.col, code, message)


def _show(key: Any) -> str:
    """A YAML key as the author wrote it (`true`, `null`), not as Python prints it."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _to_node(raw: Any, file: str, line: int, col: int, problems: list[Problem]) -> Node:
    """Convert ruamel's round-trip objects into a `Node` tree of plain JSON values."""
    lc = getattr(raw, "lc", None)
    if isinstance(raw, dict):
        value: dict[str, Any] = {}
        node = Node(value, file, line, col)
        for key, item in raw.items():
            # A key brought in by a `<<` merge has no position of its own: use the mapping's.
            own = lc is not None and key in lc.data
            kline, kcol = lc.key(key) if own and lc else (line - 1, col - 1)
            vline, vcol = lc.value(key) if own and lc else (kline, kcol)
            if item is None and vline != kline:  # `key:` with no value: ruamel points past it
                vline, vcol = kline, kcol
            if isinstance(key, int) and not isinstance(key, bool):
                key = str(key)  # JSON keys are text; `0:` in YAML reads as a number
            if not isinstance(key, str):
                message = f"key `{_show(key)}` must be text"
                problems.append(Problem(file, kline + 1, kcol + 1, "key_type", message))
                continue
            if key in value:  # `1:` and `"1":` are different YAML keys but one JSON key
                message = f"key `{key}` is given twice"
                problems.append(Problem(file, kline + 1, kcol + 1, "duplicate_key", message))
                continue
            child = _to_node(item, file, vline + 1, vcol + 1, problems)
            value[key] = child.value
            node.children[key] = child
            node.locs[key] = (kline + 1, kcol + 1)
        return node
    if isinstance(raw, list):
        items: list[Any] = []
        node = Node(items, file, line, col)
        for i, item in enumerate(raw):
            iline, icol = lc.item(i) if lc is not None else (line - 1, col - 1)
            child = _to_node(item, file, iline + 1, icol + 1, problems)
            items.append(child.value)
            node.children[i] = child
            node.locs[i] = (iline + 1, icol + 1)
        return node
    if raw is None or isinstance(raw, bool | str):
        return Node(raw if not isinstance(raw, str) else str(raw), file, line, col)
    if isinstance(raw, int):
        return Node(int(raw), file, line, col)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            problems.append(
                Problem(file, line, col, "yaml_value", "numbers must be finite (no .nan, .inf)")
            )
            return Node(None, file, line, col)
        number = float(raw)
        # An integral float (`10.0`) hashes as `10` in canonical JSON; keep it an int so
        # the compiled bundle and the one rebuilt from the ledger read the same value.
        return Node(int(number) if number.is_integer() else number, file, line, col)
    problems.append(
        Problem(
            file,
            line,
            col,
            "yaml_value",
            f"`{raw}` is a YAML {type(raw).__name__}, which JSON cannot carry; quote it",
        )
    )
    return Node(None, file, line, col)


def read_yaml(path: Path, display: str, problems: list[Problem]) -> Node | None:
    """Parse one YAML file into a `Node`, appending any syntax problem to `problems`."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(display, 0, 0, "encoding", f"not UTF-8 text: {exc.reason}"))
        return None
    except OSError as exc:
        problems.append(Problem(display, 0, 0, "unreadable", exc.strerror or str(exc)))
        return None
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        col = mark.column + 1 if mark else 0
        code = "duplicate_key" if "duplicate key" in str(exc.problem) else "yaml_syntax"
        message = str(exc.problem or exc.context or "invalid YAML").replace('"', "`")
        problems.append(Problem(display, line, col, code, message))
        return None
    except YAMLError as exc:
        problems.append(Problem(display, 0, 0, "yaml_syntax", str(exc)))
        return None
    if raw is None:
        return Node({}, display, 1, 1)
    return _to_node(raw, display, 1, 1, problems)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One policy file of a bundle: its path relative to the bundle, and its content."""

    name: str
    node: Node


def read_bundle_files(
    root: Path, problems: list[Problem]
) -> tuple[list[SourceFile], dict[str, str]]:
    """Read every policy file (top-level `*.yaml`/`*.yml`) and runbook of a bundle folder.

    Scenario suites under `scenarios/` are tests, not policy, and do not change the version.
    """
    files: list[SourceFile] = []
    if not root.is_dir():
        problems.append(Problem(str(root), 0, 0, "not_a_bundle", "is not a folder"))
        return files, {}
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in POLICY_SUFFIXES:
            node = read_yaml(path, path.name, problems)
            if node is not None:
                files.append(SourceFile(path.name, node))
    runbooks: dict[str, str] = {}
    runbook_root = root / RUNBOOK_DIR
    if runbook_root.is_dir():
        for path in sorted(runbook_root.rglob("*")):
            if path.is_file():
                rel = path.relative_to(root).as_posix()
                try:
                    runbooks[rel] = path.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError) as exc:
                    problems.append(Problem(rel, 0, 0, "unreadable", str(exc)))
    if not files and not problems:
        problems.append(Problem(str(root), 0, 0, "empty_bundle", "holds no `*.yaml` policy files"))
    return files, runbooks
