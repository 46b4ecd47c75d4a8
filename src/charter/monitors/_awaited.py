"""What the book awaits: decisions until their outcome, approvals until their end.

An outcome or an approval step names its decision by id; the book keeps, per decision
still awaited, only what the figures of what follows need. A table forgets its items
once the horizon passes them, or its oldest when it holds too many, so a stream of
decisions whose outcomes never come cannot grow it without bound.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

from charter.monitors._windows import SliceKey

__all__ = ["Awaited", "OpenApproval", "OpenDecision"]


class OpenDecision:
    """A decision awaiting its outcome: its slice, time (epoch µs), confidence, reviewers."""

    __slots__ = ("at", "confidence", "index", "key", "reviewed")

    def __init__(
        self, key: SliceKey, at: int, index: int, confidence: float | None, reviewed: bool
    ) -> None:
        self.key = key
        self.at = at
        self.index = index
        self.confidence = confidence
        #: Whether a person took part: the decision waited for one, or an approval opened.
        self.reviewed = reviewed


class OpenApproval:
    """An approval awaiting its end: its decision and when it opened (epoch µs)."""

    __slots__ = ("at", "decision", "index")

    def __init__(self, decision: OpenDecision, at: int, index: int) -> None:
        self.decision = decision
        self.at = at
        self.index = index


class _Timed(Protocol):
    @property
    def index(self) -> int: ...


T = TypeVar("T", bound=_Timed)


class Awaited(Generic[T]):
    """Items by id, and the order they came in, to forget the oldest first.

    The order is a deque of (bucket index, id) in arrival order; an item taken out by
    its id leaves its entry behind, skipped when reached and dropped in bulk once such
    entries outnumber the live ones, so every operation is O(1) amortized.
    """

    __slots__ = ("items", "order")

    def __init__(self) -> None:
        self.items: dict[str, T] = {}
        self.order: deque[tuple[int, str]] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def add(self, key: str, item: T, limit: int) -> None:
        """Await `item` under `key`; forget the oldest item when more than `limit` wait."""
        self.items[key] = item
        self.order.append((item.index, key))
        if len(self.items) > limit:
            self._forget(None)

    def get(self, key: str) -> T | None:
        """The item awaited under `key`, if any."""
        return self.items.get(key)

    def pop(self, key: str) -> T | None:
        """Stop awaiting the item under `key` and return it, if there was one."""
        return self.items.pop(key, None)

    def expire(self, first: int) -> None:
        """Forget the items of buckets before `first` (those read late may linger a little)."""
        order = self.order
        while order and order[0][0] < first:
            self._forget(first)
        if len(order) > 2 * len(self.items) + 1024:
            items = self.items
            self.order = deque(
                (i, k) for i, k in order if (item := items.get(k)) is not None and item.index == i
            )

    def _forget(self, first: int | None) -> None:
        """Forget the oldest live item (only one before `first`, if given)."""
        order, items = self.order, self.items
        while order and (first is None or order[0][0] < first):
            index, key = order.popleft()
            item = items.get(key)
            if item is not None and item.index == index:
                del items[key]
                return
