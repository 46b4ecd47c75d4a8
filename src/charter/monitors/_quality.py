"""Data quality: are the inputs agents act on fresh, complete and within their ranges?

Three checks run on every decision's request, each configured in `MonitorConfig`:

- freshness: each `context.data_sources` item `{name, age_seconds}` against the age
  limit of its source (a source with no limit is not checked); one without an age is
  counted apart, since an unknown age can hide stale data;
- completeness: the fields an action must carry (`args.X`, `context.X`, dotted for
  nested values), absent or null counted as missing;
- ranges: numbers declared to lie in [min, max]; a value that is no number is outside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from charter.monitors._columns import CodeTable
from charter.monitors._windows import COMPLETENESS_CHECKED, COMPLETENESS_MISSING

__all__ = [
    "FieldPath",
    "FieldQuality",
    "QualityChecks",
    "QualityTotals",
    "SourceQuality",
    "field_path",
]

#: The source name the sources past the cap of distinct names count under.
OTHER_SOURCE = "(other)"
#: How many offenders the figures name, worst first.
WORST = 5


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A field of a request: `args.amount`, `context.confidence`, `context.labels.ticket`."""

    path: str
    root: str
    keys: tuple[str, ...]

    def value(self, args: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
        """The field's value in a request's args and context; None when absent."""
        value: Any = args if self.root == "args" else context
        for key in self.keys:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value


def field_path(path: str) -> FieldPath:
    """Parse `args.X` or `context.X` (dotted further for nested objects).

    Raises:
        ValueError: the path does not start with `args.` or `context.`, or has an empty part.
    """
    root, _, rest = path.partition(".")
    keys = tuple(rest.split(".")) if rest else ()
    if root not in ("args", "context") or not keys or not all(keys):
        raise ValueError(f"`{path}` is not a request field: write `args.NAME` or `context.NAME`")
    return FieldPath(path, root, keys)


def _number(value: Any) -> TypeGuard[float]:
    """Whether `value` is a number a range can hold: not a boolean, not NaN or infinite."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


_STATS = ("checked", "stale", "missing_age")


class QualityChecks:
    """One action's data-quality checks, counting into a slice's tally under its codes."""

    __slots__ = ("_cap", "_codes", "_fallback", "_limits", "_sources", "ranges", "required")

    def __init__(
        self,
        codes: CodeTable,
        *,
        required: Sequence[FieldPath],
        ranges: Sequence[tuple[FieldPath, float | None, float | None]],
        limits: Mapping[str, float],
        cap: int,
    ) -> None:
        self._codes = codes
        self.required = tuple((f, codes.new(("missing", f.path))) for f in required)
        self.ranges = tuple(
            (
                f,
                low,
                high,
                codes.new(("range", f.path, "checked")),
                codes.new(("range", f.path, "outside")),
            )
            for f, low, high in ranges
        )
        self._limits = limits
        self._fallback = limits.get("*")
        self._cap = cap
        #: Per data source name: its codes for checked, stale and missing age.
        self._sources: dict[str, tuple[int, int, int]] = {}

    def __bool__(self) -> bool:
        return bool(self.required or self.ranges or self._limits)

    def record(
        self, counts: dict[int, float], args: Mapping[str, Any], context: Mapping[str, Any]
    ) -> None:
        """Check one decision's request, counting into its bucket's `counts` (by code)."""
        get = counts.get
        sources = context.get("data_sources") if self._limits else None
        if sources and isinstance(sources, list):
            self._sources_seen(counts, sources)
        if self.required:
            counts[COMPLETENESS_CHECKED] = get(COMPLETENESS_CHECKED, 0.0) + 1
            lacking = False
            for field, code in self.required:
                if field.value(args, context) is None:
                    counts[code] = get(code, 0.0) + 1
                    lacking = True
            if lacking:
                counts[COMPLETENESS_MISSING] = get(COMPLETENESS_MISSING, 0.0) + 1
        for field, low, high, checked, outside in self.ranges:
            value = field.value(args, context)
            if value is None:
                continue
            counts[checked] = get(checked, 0.0) + 1
            if (
                not _number(value)
                or (low is not None and value < low)
                or (high is not None and value > high)
            ):
                counts[outside] = get(outside, 0.0) + 1

    def _sources_seen(self, counts: dict[int, float], sources: Iterable[Any]) -> None:
        for source in sources:
            if not isinstance(source, Mapping):
                continue
            name = source.get("name")
            if not isinstance(name, str):
                continue
            limit = self._limits.get(name, self._fallback)
            if limit is None:
                continue
            codes = self._sources.get(name)
            if codes is None:
                # Source names are the agent's text: past the cap they are told apart no more.
                key = name if len(self._sources) < self._cap else OTHER_SOURCE
                codes = self._sources.get(key)
                if codes is None:
                    codes = self._sources[key] = (
                        self._codes.new(("source", key, _STATS[0])),
                        self._codes.new(("source", key, _STATS[1])),
                        self._codes.new(("source", key, _STATS[2])),
                    )
            counts[codes[0]] = counts.get(codes[0], 0.0) + 1
            age = source.get("age_seconds")
            if not _number(age):
                counts[codes[2]] = counts.get(codes[2], 0.0) + 1
            elif age > limit:
                counts[codes[1]] = counts.get(codes[1], 0.0) + 1

    def forget(self, live: set[int]) -> None:
        """Free the codes of sources nothing counts under any more."""
        for name, codes in list(self._sources.items()):
            if not live.intersection(codes):
                del self._sources[name]
                for code in codes:
                    self._codes.free(code)


@dataclass(frozen=True, slots=True)
class SourceQuality:
    """How one data source fared in a window: checked, stale, no age given."""

    name: str
    checked: int
    stale: int
    missing_age: int

    @property
    def failure_rate(self) -> float:
        """The share of checks that were stale or gave no age."""
        return (self.stale + self.missing_age) / self.checked

    def to_json(self) -> dict[str, Any]:
        """The source's figures as plain JSON."""
        return {
            "name": self.name,
            "checked": self.checked,
            "stale": self.stale,
            "missing_age": self.missing_age,
            "failure_rate": self.failure_rate,
        }


@dataclass(frozen=True, slots=True)
class FieldQuality:
    """How one field of one action fared in a window: `missing` or `range` check."""

    action: str
    field: str
    check: str
    checked: int
    failed: int

    @property
    def failure_rate(self) -> float:
        """The share of checks that failed."""
        return self.failed / self.checked

    def to_json(self) -> dict[str, Any]:
        """The field's figures as plain JSON."""
        return {
            "action": self.action,
            "field": self.field,
            "check": self.check,
            "checked": self.checked,
            "failed": self.failed,
            "failure_rate": self.failure_rate,
        }


class QualityTotals:
    """Quality counts summed over a window's slices, across actions."""

    def __init__(self) -> None:
        self.sources: dict[str, list[float]] = {}
        self.checked = 0.0
        self.incomplete = 0.0
        self.checked_by_action: dict[str, float] = {}
        self.missing: dict[tuple[str, str], float] = {}  # (action, field) -> decisions lacking it
        self.ranges: dict[tuple[str, str], list[float]] = {}  # -> [checked, outside]

    def completeness(self, action: str, checked: float, incomplete: float) -> None:
        """Add one slice's completeness counts."""
        if checked:
            self.checked += checked
            self.incomplete += incomplete
            # An action's required fields are checked on each of its decisions alike.
            self.checked_by_action[action] = self.checked_by_action.get(action, 0) + checked

    def add(self, action: str, key: tuple[str, ...], amount: float) -> None:
        """Add one slice's total of the counter `key` (a `CodeTable` key) of `action`."""
        kind = key[0]
        if kind == "source":
            self.sources.setdefault(key[1], [0.0, 0.0, 0.0])[_STATS.index(key[2])] += amount
        elif kind == "missing":
            self.missing[(action, key[1])] = self.missing.get((action, key[1]), 0) + amount
        elif kind == "range":
            self.ranges.setdefault((action, key[1]), [0.0, 0.0])[key[2] == "outside"] += amount

    def worst_sources(self) -> tuple[SourceQuality, ...]:
        """The sources with most failed checks (stale or no age), worst first."""
        rows = [
            SourceQuality(n, int(c[0]), int(c[1]), int(c[2]))
            for n, c in self.sources.items()
            if c[0] and (c[1] or c[2])
        ]
        rows.sort(key=lambda r: (-(r.stale + r.missing_age), -r.failure_rate, r.name))
        return tuple(rows[:WORST])

    def worst_fields(self) -> tuple[FieldQuality, ...]:
        """The fields with most failed checks (missing or out of range), worst first."""
        rows = [
            FieldQuality(a, f, "missing", int(self.checked_by_action[a]), int(n))
            for (a, f), n in self.missing.items()
            if n
        ]
        rows += [
            FieldQuality(a, f, "range", int(c[0]), int(c[1]))
            for (a, f), c in self.ranges.items()
            if c[1]
        ]
        rows.sort(key=lambda r: (-r.failed, -r.failure_rate, r.action, r.field, r.check))
        return tuple(rows[:WORST])
