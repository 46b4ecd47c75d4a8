"""Reading a bundle's YAML nodes: the checks every section shares, each saying where.

`Reader` collects problems (file, line, column, code, message) while a section parser
walks its nodes; nothing here knows what any section means.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from charter.errors import Problem
from charter.model import ACTION_NAME
from charter.policy._source import Node

__all__ = ["Cond", "Reader", "Selector", "action_pattern", "parse_duration", "selector"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> int | None:
    """Seconds in a duration such as `90s`, `15m`, `4h`, `2d`, `1w` (or a bare integer)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and int(match.group(1)) > 0:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return None


@dataclass(frozen=True, slots=True)
class Cond:
    """A CEL condition as written, with where it was written."""

    source: str
    node: Node


@dataclass(frozen=True, slots=True)
class Selector:
    """Which requests a rule applies to; an empty tuple means any."""

    roles: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()


class Reader:
    """Collects problems while walking a file; every check says where it failed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def add(self, node: Node, code: str, message: str) -> None:
        self.problems.append(node.problem(code, message))

    def mapping(self, node: Node, what: str) -> bool:
        if isinstance(node.value, dict):
            return True
        self.add(node, "type", f"{what} must be a mapping of keys to values")
        return False

    def once(self, section: Node, name: str, seen: bool) -> bool:
        """Whether a section that one file at most may hold is a mapping met the first time."""
        if seen:
            self.add(section, "duplicate", f"`{name}` is defined in more than one file")
            return False
        return self.mapping(section, f"`{name}`")

    def named(
        self, section: Node, where: str, kind: str, id_kind: str, defined: Container[str]
    ) -> Iterator[tuple[str, str, Node]]:
        """A mapping section's entries: each key, how problems name the entry, its node.

        An entry whose id is invalid, that is not a mapping or that is `defined` already
        (by an earlier file) is reported and skipped.
        """
        if not self.mapping(section, where):
            return
        for name, node in section.items():
            what = f"{kind} `{name}`"
            if not self.identifier(section.child(name), name, id_kind):
                continue
            if not self.mapping(node, what):
                continue
            if name in defined:
                self.add(node, "duplicate", f"{what} is defined twice")
                continue
            yield name, what, node

    def listed(self, section: Node, where: str, kind: str) -> Iterator[Node]:
        """A list section's entries that are mappings; the others are reported."""
        if not isinstance(section.value, list):
            self.add(section, "type", f"{where} must be a list")
            return
        for _, node in section.items():
            if self.mapping(node, f"a {kind}"):
                yield node

    def identified(
        self,
        section: Node,
        where: str,
        kind: str,
        id_kind: str,
        allowed: Iterable[str],
        required: Iterable[str],
    ) -> Iterator[tuple[Any, str, Node]]:
        """`listed` entries that carry an `id`: each id, how problems name it, its node.

        Unknown and missing keys are reported and the entry still read; an entry with an
        invalid id is reported and skipped.
        """
        for node in self.listed(section, where, kind):
            item_id = node.value.get("id", "?")
            what = f"{kind} `{item_id}`"
            self.keys(node, allowed, what, required)
            if "id" in node.value and not self.identifier(node.child("id"), item_id, id_kind):
                continue
            yield item_id, what, node

    def keys(
        self, node: Node, allowed: Iterable[str], what: str, required: Iterable[str] = ()
    ) -> bool:
        """Report unknown and missing keys; True when nothing was wrong."""
        ok = True
        allowed = tuple(allowed)
        for key in node.value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                line, col = node.locs.get(key, (node.line, node.col))
                self.problems.append(
                    Problem(
                        node.file,
                        line,
                        col,
                        "unknown_key",
                        f"unknown key `{key}` in {what}{hint} (allowed: {', '.join(allowed)})",
                    )
                )
                ok = False
        for key in required:
            if key not in node.value:
                self.add(node, "missing_key", f"{what} needs `{key}`")
                ok = False
        return ok

    def text(self, node: Node, key: str, what: str, *, default: str = "") -> str:
        if key not in node.value:
            return default
        child = node.child(key)
        if isinstance(child.value, str) and child.value.strip():
            return child.value
        self.add(child, "type", f"`{key}` of {what} must be non-empty text")
        return default

    def integer(self, node: Node, key: str, what: str, *, minimum: int = 0) -> int | None:
        if key not in node.value:
            return None
        child = node.child(key)
        value = child.value
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.add(child, "type", f"`{key}` of {what} must be a whole number >= {minimum}")
        return None

    def names(
        self, node: Node, key: str, what: str, check: Callable[[str], bool] | None = None
    ) -> tuple[str, ...]:
        """A list of names (a single name is accepted as a list of one)."""
        if key not in node.value:
            return ()
        child = node.child(key)
        raw = child.value
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            self.add(child, "type", f"`{key}` of {what} must be a name or a list of names")
            return ()
        if check is not None:
            for i, item in enumerate(items):
                if not check(item):
                    where = child.child(i) if isinstance(raw, list) else child
                    self.add(where, "invalid_name", f"`{item}` is not a valid {key[:-1]} name")
        return tuple(items)

    def conditions(self, node: Node, key: str, what: str) -> tuple[Cond, ...]:
        """`when:` as one CEL expression or a list that must all hold."""
        if key not in node.value:
            return ()
        child = node.child(key)
        if isinstance(child.value, str) and child.value.strip():
            return (Cond(child.value.strip(), child),)
        if isinstance(child.value, list) and child.value:
            out = []
            for _, item in child.items():
                if isinstance(item.value, str) and item.value.strip():
                    out.append(Cond(item.value.strip(), item))
                else:
                    self.add(item, "type", f"each condition of {what} must be CEL text")
            return tuple(out)
        self.add(child, "type", f"`{key}` of {what} must be CEL text or a list of them")
        return ()

    def duration(self, node: Node, key: str, what: str) -> int | None:
        """Seconds in the duration under `key` (`90s`, `15m`, `4h`...), None when absent."""
        if key not in node.value:
            return None
        seconds = parse_duration(node.value[key])
        if seconds is None:
            self.add(
                node.child(key), "duration", f"`{key}` of {what} must be a duration like `15m`"
            )
        return seconds

    def fraction(self, node: Node, key: str, what: str) -> float | None:
        """A number above 0 and at most 1 under `key` (a share such as `0.5`)."""
        if key not in node.value:
            return None
        value = node.value[key]
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
        self.add(node.child(key), "type", f"`{key}` of {what} must be a number above 0, up to 1")
        return None

    def identifier(self, node: Node, value: Any, what: str) -> bool:
        if isinstance(value, str) and _ID.match(value):
            return True
        self.add(
            node,
            "invalid_id",
            f"{what} `{value}` must start with a letter or digit and use only "
            "letters, digits, `_`, `-`, `.` or `:`",
        )
        return False


def action_pattern(name: str) -> bool:
    """Whether `name` is a dotted action name, or a pattern of one with `*` wildcards."""
    return bool(ACTION_NAME.match(name.replace("*", "x")))


def selector(r: Reader, node: Node, what: str) -> Selector:
    """The `roles`, `actions` and `agents` keys of an entry, as the requests it applies to."""
    return Selector(
        roles=r.names(node, "roles", what),
        actions=r.names(node, "actions", what, action_pattern),
        agents=r.names(node, "agents", what),
    )
