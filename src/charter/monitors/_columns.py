"""A slice's storage: counters and samples per time bucket, in arrays of machine numbers.

Counters are named by small integer codes; an action's own (its data sources, checked
fields, categorical values) come from its `CodeTable`, which reuses a code once nothing
counts under it any more, so a table holds only what the book still holds.

Arrays rather than an object per bucket: a slice that sees one event a minute pays a
few dozen bytes per event, not a few dicts, and a window's samples are one slice of an
array. Entries arrive in time order but for another replica's, read late: those are
kept too, and put back in order when old entries are dropped.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence

__all__ = ["CodeTable", "Column", "Tally"]

_NEVER = -(2**62)


def _order(buckets: array[int]) -> list[int]:
    """The positions of `buckets` in bucket order, ties in arrival order."""
    return sorted(range(len(buckets)), key=buckets.__getitem__)


class Tally:
    """One slice's counters: (bucket, code, amount) entries in bucket order, and a hot bucket.

    The newest bucket's counters live in a dict (`current`), added to in place by the
    events of that bucket; when a newer bucket starts, they are appended to the arrays
    as entries. An older bucket's event (another replica's, read late) counts in a dict
    of its own, appended at the next sweep, which puts the entries back in order. Amounts
    are floats: counts stay exact to 2^53, and sums of confidence fit too.
    """

    __slots__ = ("_late", "amounts", "buckets", "codes", "hot", "hot_bucket", "ordered")

    def __init__(self) -> None:
        self.buckets = array("q")
        self.codes = array("q")
        self.amounts = array("d")
        self.ordered = True
        self.hot: dict[int, float] = {}
        self.hot_bucket = _NEVER
        self._late: dict[int, dict[int, float]] = {}

    def __len__(self) -> int:
        return len(self.codes) + len(self.hot) + sum(map(len, self._late.values()))

    def current(self, bucket: int) -> dict[int, float]:
        """The counters of `bucket`, by code, to add to: `counts[c] = counts.get(c, 0) + n`."""
        if bucket == self.hot_bucket:
            return self.hot
        if bucket > self.hot_bucket:
            self._append(self.hot_bucket, self.hot)
            self.hot_bucket = bucket
            self.hot = {}
            return self.hot
        late = self._late.get(bucket)
        if late is None:
            late = self._late[bucket] = {}
        return late

    def _append(self, bucket: int, counts: dict[int, float]) -> None:
        if counts:
            self.buckets.extend([bucket] * len(counts))
            self.codes.extend(counts.keys())
            self.amounts.extend(counts.values())

    def sums(self, first: int, last: int) -> dict[int, float]:
        """Each counter's total over the buckets from `first` to `last`, both included."""
        out: dict[int, float] = {}
        get = out.get
        buckets = self.buckets
        if self.ordered:
            lo, hi = bisect.bisect_left(buckets, first), bisect.bisect_right(buckets, last)
            for code, amount in zip(self.codes[lo:hi], self.amounts[lo:hi], strict=True):
                out[code] = get(code, 0.0) + amount
        else:
            for bucket, code, amount in zip(buckets, self.codes, self.amounts, strict=True):
                if first <= bucket <= last:
                    out[code] = get(code, 0.0) + amount
        extra = [self.hot] if first <= self.hot_bucket <= last else []
        extra += [counts for b, counts in self._late.items() if first <= b <= last]
        for counts in extra:
            for code, amount in counts.items():
                out[code] = get(code, 0.0) + amount
        return out

    def drop_before(self, first: int) -> None:
        """Forget the entries of buckets before `first`; put late ones in their place."""
        if self._late:
            for bucket, counts in self._late.items():
                self._append(bucket, counts)
            self._late.clear()
            self.ordered = False
        if not self.ordered:
            order = _order(self.buckets)
            self.buckets = array("q", [self.buckets[i] for i in order])
            self.codes = array("q", [self.codes[i] for i in order])
            self.amounts = array("d", [self.amounts[i] for i in order])
            self.ordered = True
        cut = bisect.bisect_left(self.buckets, first)
        if cut:
            del self.buckets[:cut], self.codes[:cut], self.amounts[:cut]
        if self.hot_bucket < first:
            self.hot = {}

    def live_codes(self) -> set[int]:
        """The codes anything is counted under."""
        live = set(self.codes)
        live.update(self.hot)
        for counts in self._late.values():
            live.update(counts)
        return live

    def distinct_buckets(self) -> int:
        """How many buckets hold a counter (for `MonitorBook.footprint`)."""
        held = set(self.buckets)
        if self.hot:
            held.add(self.hot_bucket)
        return len(held | self._late.keys())


class Column:
    """One slice's values of one sampled figure: a bounded, deterministic sample per bucket.

    Each bucket's values form a segment of `values`. A segment keeps every `stride`-th
    value offered; the stride starts at 1 and doubles each time the segment would pass
    `size` values (every other kept value is dropped), so a busy bucket's sample spreads
    evenly over its whole stream rather than being its first values, and nothing random
    is involved. Each kept value stands for `seen / kept` values of its bucket: its
    weight when buckets are merged.
    """

    __slots__ = ("_base", "buckets", "ordered", "seen", "starts", "strides", "values")

    def __init__(self) -> None:
        self.values = array("d")
        #: Per segment: its bucket, the absolute position of its first value (positions
        #: count from the column's start, so dropping old values moves none of them),
        #: the values offered, and the stride.
        self.buckets = array("q")
        self.starts = array("q")
        self.seen = array("q")
        self.strides = array("q")
        self.ordered = True
        self._base = 0

    def add(self, bucket: int, value: float, size: int) -> None:
        """Offer one value of `bucket`; `size` (even) bounds the values a segment keeps."""
        buckets = self.buckets
        if buckets and buckets[-1] == bucket:
            seen = self.seen[-1]
            self.seen[-1] = seen + 1
            stride = self.strides[-1]
            if seen % stride:
                return
            values = self.values
            values.append(value)
            start = self.starts[-1] - self._base
            if len(values) - start > size:
                # Keeps the values at 0, 2s, 4s, ...: the next one kept is at a multiple of 2s.
                del values[start + 1 :: 2]
                self.strides[-1] = stride * 2
            return
        if buckets and bucket < buckets[-1]:
            self.ordered = False
        buckets.append(bucket)
        self.starts.append(self._base + len(self.values))
        self.seen.append(1)
        self.strides.append(1)
        self.values.append(value)

    def _end(self, segment: int) -> int:
        """The position in `values` just past `segment`'s last value."""
        if segment + 1 < len(self.starts):
            return self.starts[segment + 1] - self._base
        return len(self.values)

    def window(self, first: int, last: int) -> tuple[Sequence[float], list[float] | None, int]:
        """The kept values of buckets `first` to `last`, their weights, the values offered.

        Weights are None when no bucket was thinned (every value stands for itself).
        """
        buckets = self.buckets
        if self.ordered:
            segments: Iterable[int] = range(
                bisect.bisect_left(buckets, first), bisect.bisect_right(buckets, last)
            )
        else:
            segments = [k for k, b in enumerate(buckets) if first <= b <= last]
        picked = list(segments)
        if not picked:
            return (), None, 0
        base = self._base
        seen = sum(self.seen[k] for k in picked)
        if self.ordered:
            values: Sequence[float] = self.values[
                self.starts[picked[0]] - base : self._end(picked[-1])
            ]
        else:
            values = [v for k in picked for v in self.values[self.starts[k] - base : self._end(k)]]
        if seen == len(values):
            return values, None, seen
        weights: list[float] = []
        for k in picked:
            kept = self._end(k) - (self.starts[k] - base)
            weights.extend([self.seen[k] / kept] * kept)
        return values, weights, seen

    def drop_before(self, first: int) -> None:
        """Forget the segments of buckets before `first`."""
        if not self.ordered:
            order = _order(self.buckets)
            runs = [self.values[self.starts[k] - self._base : self._end(k)] for k in order]
            self.values = array("d")
            starts = array("q")
            for run in runs:
                starts.append(len(self.values))
                self.values.extend(run)
            self._base = 0
            self.starts = starts
            self.buckets = array("q", [self.buckets[k] for k in order])
            self.seen = array("q", [self.seen[k] for k in order])
            self.strides = array("q", [self.strides[k] for k in order])
            self.ordered = True
        cut = bisect.bisect_left(self.buckets, first)
        if cut:
            drop = self._end(cut - 1)
            del self.values[:drop]
            self._base += drop
            del self.buckets[:cut], self.starts[:cut], self.seen[:cut], self.strides[:cut]


class CodeTable:
    """The tally codes of one action's own keys: handed out from `first`, reused once free.

    Keys are tuples: `("source", name, stat)`, `("missing", path)`, `("range", path,
    stat)` for the data-quality counters, `(path, value)` for categorical values.
    """

    __slots__ = ("_free", "_next", "keys")

    def __init__(self, first: int) -> None:
        self.keys: dict[int, tuple[str, ...]] = {}
        self._next = first
        self._free: list[int] = []

    def new(self, key: tuple[str, ...]) -> int:
        """A code for `key`."""
        code = self._free.pop() if self._free else self._next
        if code == self._next:
            self._next += 1
        self.keys[code] = key
        return code

    def free(self, code: int) -> None:
        """Give `code` back: nothing counts under it any more."""
        del self.keys[code]
        self._free.append(code)
