"""What the monitors watch: windows, baseline, watched fields, data-quality limits.

`MonitorConfig` holds plain Python values (numbers, strings, lists, dicts), so the
policy bundle's parser can build one from YAML. `ActionPlan` is what one action's
requests are checked against, resolved from the config once per action name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from charter.monitors._columns import CodeTable
from charter.monitors._drift import OTHER
from charter.monitors._quality import FieldPath, QualityChecks, field_path
from charter.monitors._windows import FIRST_DYNAMIC, Slice

__all__ = ["CATEGORICAL", "NUMERIC", "ActionPlan", "FieldWatch", "MonitorConfig"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
#: A discovered field with more distinct values than `max_categories`: an identifier
#: (order ids, hashed emails), whose every value is new; it is no longer sampled.
DROPPED = "dropped"
#: Strings longer than this are no category: they are cut to it when watched, and a
#: field is discovered only from a value this short.
SHORT = 64
#: Integers past this cannot be a float; they are no sample of a numeric field.
_BIG = 2**1000


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a whole number >= 1, got `{value!r}`")
    return value


def _fields(name: str, table: Mapping[str, Sequence[str]]) -> dict[str, tuple[FieldPath, ...]]:
    out: dict[str, tuple[FieldPath, ...]] = {}
    for pattern, paths in table.items():
        if isinstance(paths, str):
            raise ValueError(f"`{name}.{pattern}` must be a list of fields, not one string")
        out[str(pattern)] = tuple(field_path(p) for p in paths)
    return out


def _limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a number or null, got `{value!r}`")
    return float(value)


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """How the monitors fold the ledger and what they check.

    Times are whole seconds; windows are rounded up to whole buckets. Action patterns
    (the keys of `watch`, `required` and `ranges`) are globs: `payments.refund`,
    `payments.*`, `*`. Field paths are `args.NAME` or `context.NAME`, dotted further
    for nested objects (`context.labels.ticket`).

    Attributes:
        bucket_seconds: the length of one time bucket: the resolution of every window.
        window_seconds: the window figures cover when a query names none.
        recent_seconds: drift compares the window of this length ending now ...
        baseline_seconds: ... with the window of this length just before it.
        retain_seconds: keep at least this much history (for `series`); the book keeps
            the longest of this, the window, and recent + baseline.
        watch: per action pattern, the fields whose drift is measured. An action no
            pattern matches watches every number, boolean and short string found at the
            top of its `args` and `context` and in `context.labels`, up to `max_fields`.
        freshness: per data source name, the oldest `age_seconds` still fresh; `*`
            is the limit of every source not named. A source with no limit is not checked.
        required: per action pattern, the fields each request must carry.
        ranges: per action pattern, per field, its `[min, max]` (either may be null).
        max_fields: the most fields watched per action (configured or discovered).
        max_categories: the most distinct values of a categorical field, and data
            source names, told apart per action at a time (the rest count as
            `(other)` until older values leave the horizon); a discovered field with
            more distinct values in all is an identifier and is no longer watched.
        sample_size: the most values a bucket keeps per sampled figure (even).
        max_drift_samples: the most values one side of a drift comparison uses.
        max_open: the most decisions awaiting their outcome that the book keeps.
    """

    bucket_seconds: int = 60
    window_seconds: int = 3600
    recent_seconds: int = 3600
    baseline_seconds: int = 86_400
    retain_seconds: int = 0
    watch: Mapping[str, Sequence[str]] = field(default_factory=dict)
    freshness: Mapping[str, float] = field(default_factory=dict)
    required: Mapping[str, Sequence[str]] = field(default_factory=dict)
    ranges: Mapping[str, Mapping[str, Sequence[float | None]]] = field(default_factory=dict)
    max_fields: int = 32
    max_categories: int = 50
    sample_size: int = 64
    max_drift_samples: int = 4096
    max_open: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "bucket_seconds",
            "window_seconds",
            "recent_seconds",
            "baseline_seconds",
            "max_fields",
            "max_categories",
            "sample_size",
            "max_drift_samples",
            "max_open",
        ):
            _positive(name, getattr(self, name))
        retain = self.retain_seconds
        if isinstance(retain, bool) or not isinstance(retain, int) or retain < 0:
            raise ValueError(f"`retain_seconds` must be a whole number >= 0, got `{retain!r}`")
        if self.sample_size % 2:
            raise ValueError(f"`sample_size` must be even, got `{self.sample_size}`")
        # Normalised copies: a caller's later change to its dicts changes nothing here.
        for name in ("watch", "required"):
            table = _fields(name, getattr(self, name))
            object.__setattr__(self, name, {k: tuple(p.path for p in v) for k, v in table.items()})
        freshness = {}
        for name, limit in self.freshness.items():
            value = _limit(f"freshness.{name}", limit)
            if value is None or value < 0:
                raise ValueError(f"`freshness.{name}` must be a number of seconds >= 0")
            freshness[str(name)] = value
        object.__setattr__(self, "freshness", freshness)
        ranges: dict[str, dict[str, tuple[float | None, float | None]]] = {}
        for pattern, declared in self.ranges.items():
            ranges[str(pattern)] = {}
            for path, bounds in declared.items():
                where = f"ranges.{pattern}.{path}"
                field_path(path)
                if isinstance(bounds, str) or len(bounds) != 2:
                    raise ValueError(f"`{where}` must be `[min, max]`")
                low, high = _limit(where, bounds[0]), _limit(where, bounds[1])
                if low is not None and high is not None and low > high:
                    raise ValueError(f"`{where}` has its min above its max")
                ranges[str(pattern)][path] = (low, high)
        object.__setattr__(self, "ranges", ranges)

    @property
    def horizon_seconds(self) -> int:
        """How far back the book keeps buckets and awaits outcomes, from its newest event."""
        return max(
            self.window_seconds, self.recent_seconds + self.baseline_seconds, self.retain_seconds
        )

    def buckets(self, seconds: float) -> int:
        """How many buckets a window of `seconds` covers: rounded up, at least one."""
        return max(1, math.ceil(seconds / self.bucket_seconds))

    def plan(self, action: str) -> ActionPlan:
        """What requests for `action` are checked against."""
        watched = [
            p
            for pattern, paths in self.watch.items()
            if fnmatchcase(action, pattern)
            for p in paths
        ]
        required = [
            p
            for pattern, paths in self.required.items()
            if fnmatchcase(action, pattern)
            for p in paths
        ]
        bounds: dict[str, tuple[float | None, float | None]] = {}
        for pattern, table in self.ranges.items():
            if fnmatchcase(action, pattern):
                for path, pair in table.items():
                    # The first pattern that names a field gives its range.
                    bounds.setdefault(path, (pair[0], pair[1]))
        return ActionPlan(
            action,
            self,
            watched=[field_path(p) for p in dict.fromkeys(watched)][: self.max_fields],
            discover=not any(fnmatchcase(action, p) for p in self.watch),
            required=[field_path(p) for p in dict.fromkeys(required)],
            ranges=[(field_path(p), lo, hi) for p, (lo, hi) in bounds.items()],
        )


class FieldWatch:
    """One watched field of one action: its path and the kind of values it takes.

    The kind is set by the first value seen (numbers are `numeric`; strings and
    booleans `categorical`); values of the other kind are not sampled. A categorical
    field's values have codes in the action's category table (`codes`, at most
    `max_categories` of them live; the rest count as `(other)`); `distinct` tracks a
    discovered categorical field's values, to drop it as an identifier.
    """

    __slots__ = ("codes", "distinct", "kind", "path")

    def __init__(self, path: str, kind: str | None, *, discovered: bool) -> None:
        self.path = path
        self.kind = kind
        self.codes: dict[str, int] = {}
        self.distinct: set[str] | None = set() if discovered else None


def _kind(value: Any) -> str | None:
    kind = type(value)
    if kind is int or kind is float:
        return NUMERIC
    if kind is bool or (kind is str and len(value) <= SHORT):
        return CATEGORICAL
    return None


class ActionPlan:
    """The checks for one action: watched fields and their codes, data-quality checks."""

    __slots__ = (
        "_cap",
        "_categories",
        "_configured",
        "_discover",
        "_size",
        "_tables",
        "action",
        "categories",
        "codes",
        "quality",
        "watches",
    )

    def __init__(
        self,
        action: str,
        config: MonitorConfig,
        *,
        watched: Sequence[FieldPath],
        discover: bool,
        required: Sequence[FieldPath],
        ranges: Sequence[tuple[FieldPath, float | None, float | None]],
    ) -> None:
        self.action = action
        #: The action's own tally codes (data sources, checked fields), and its
        #: categorical values' codes.
        self.codes = CodeTable(FIRST_DYNAMIC)
        self.categories = CodeTable(0)
        self.quality = QualityChecks(
            self.codes,
            required=required,
            ranges=ranges,
            limits=config.freshness,
            cap=config.max_categories,
        )
        self._discover = discover
        self._cap = config.max_fields
        self._size = config.sample_size
        self._categories = config.max_categories
        #: Every watched field by path, in the order first seen.
        self.watches: dict[str, FieldWatch] = {}
        self._configured = tuple((p, self._watch(p.path, discovered=False)) for p in watched)
        #: Discovered fields by name, per place looked in: args, context, context.labels.
        self._tables: tuple[dict[str, FieldWatch], ...] = ({}, {}, {})

    def _watch(self, path: str, *, discovered: bool, kind: str | None = None) -> FieldWatch:
        watch = FieldWatch(path, kind, discovered=discovered)
        self.watches[path] = watch
        return watch

    def sampled(self) -> list[tuple[str, str]]:
        """The (path, kind) of each field whose drift can be measured."""
        return [(p, w.kind) for p, w in self.watches.items() if w.kind in (NUMERIC, CATEGORICAL)]

    def observe(
        self, piece: Slice, bucket: int, args: Mapping[str, Any], context: Mapping[str, Any]
    ) -> None:
        """Sample one request's watched fields into `bucket` of the slice `piece`."""
        counts = piece.categories.current(bucket)
        if not self._discover:
            for path, watch in self._configured:
                value = path.value(args, context)
                if value is not None:
                    self._record(piece, bucket, counts, watch, value)
            return
        a, c, labels = self._tables
        self._look(piece, bucket, counts, a, "args.", args)
        self._look(piece, bucket, counts, c, "context.", context)
        inner = context.get("labels")
        if isinstance(inner, Mapping):
            self._look(piece, bucket, counts, labels, "context.labels.", inner)

    def _look(
        self,
        piece: Slice,
        bucket: int,
        counts: dict[int, float],
        table: dict[str, FieldWatch],
        prefix: str,
        obj: Mapping[str, Any],
    ) -> None:
        for name, value in obj.items():
            watch = table.get(name)
            if watch is None:
                kind = _kind(value)
                if kind is None or len(self.watches) >= self._cap:
                    continue  # not a scalar (yet), or the action watches all it may
                watch = table[name] = self._watch(prefix + name, discovered=True, kind=kind)
            self._record(piece, bucket, counts, watch, value)

    def _record(
        self, piece: Slice, bucket: int, counts: dict[int, float], watch: FieldWatch, value: Any
    ) -> None:
        """Sample one value: numbers into the field's column, categories into `counts`."""
        kind = watch.kind
        if kind is None:
            kind = watch.kind = _kind(value) or (CATEGORICAL if type(value) is str else None)
        if kind == NUMERIC:
            number = type(value)
            if (number is not float and number is not int) or not -_BIG < value < _BIG:
                return  # another kind, NaN or infinite, or an int no float holds
            piece.column(watch.path).add(bucket, value, self._size)
            return
        if kind != CATEGORICAL:
            return
        if type(value) is bool:
            text = "true" if value else "false"
        elif type(value) is str:
            text = value[:SHORT]
        else:
            return
        distinct = watch.distinct
        if distinct is not None and text not in distinct:
            distinct.add(text)
            if len(distinct) > self._categories:
                watch.kind, watch.distinct = DROPPED, None
                return
        code = watch.codes.get(text)
        if code is None:
            # Past the cap of values told apart, a value counts as `(other)`.
            key = text if len(watch.codes) < self._categories else OTHER
            code = watch.codes.get(key)
            if code is None:
                code = watch.codes[key] = self.categories.new((watch.path, key))
        counts[code] = counts.get(code, 0.0) + 1

    def forget(self, live_codes: set[int], live_categories: set[int]) -> None:
        """Free the codes nothing in the book counts under any more."""
        self.quality.forget(live_codes)
        for watch in self.watches.values():
            for value, code in list(watch.codes.items()):
                if code not in live_categories:
                    del watch.codes[value]
                    self.categories.free(code)
