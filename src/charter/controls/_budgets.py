"""What each agent has spent of its budgets, kept in memory by the gateway.

Rebuilt from the ledger when the gateway opens; recorded beside every decision (as the
agent's state) so replay does not need it.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import deque
from collections.abc import Iterable

from charter.model import BudgetUsage

__all__ = ["BudgetSpending"]


class BudgetSpending:
    """Budget spending per (agent, budget): allowed decisions still inside the window.

        Each pair keeps its decisions in time order with running totals, so asking costs only
        the entries that fell out of the window since the last ask. The gateway's clock moves
        forward; an entry once out of its window never counts again, and one counted late (another
    replica's, read by the follower) takes its place in time order.
    """

    def __init__(self) -> None:
        self._spent: dict[tuple[str, str], tuple[deque[tuple[dt.datetime, int]], list[int]]] = {}

    def add(self, agent: str, at: dt.datetime, risk: int, budgets: Iterable[str]) -> None:
        """Count an allowed decision against each budget it falls under."""
        for budget in budgets:
            history, totals = self._spent.setdefault((agent, budget), (deque(), [0, 0]))
            if history and at < history[-1][0]:
                # Another replica's decision read late: kept in time order, so it leaves
                # the window when its own time does, not when a later one's does.
                history.insert(bisect.bisect_right(history, (at, risk)), (at, risk))
            else:
                history.append((at, risk))
            totals[0] += 1
            totals[1] += risk

    def remove(self, agent: str, at: dt.datetime, risk: int, budgets: Iterable[str]) -> None:
        """Take back what `add` counted for a decision that was never recorded.

        Nothing happens for a budget whose entry has already left its window.
        """
        for budget in budgets:
            found = self._spent.get((agent, budget))
            if found is None:
                continue
            history, totals = found
            try:
                history.remove((at, risk))
            except ValueError:
                continue
            totals[0] -= 1
            totals[1] -= risk

    def state(
        self, agent: str, budgets: Iterable[tuple[str, int]], now: dt.datetime
    ) -> dict[str, BudgetUsage]:
        """Usage of each (budget id, window seconds) over the window ending at `now`."""
        usage: dict[str, BudgetUsage] = {}
        for budget, window in budgets:
            found = self._spent.get((agent, budget))
            if found is None:
                continue
            history, totals = found
            start = now - dt.timedelta(seconds=window)
            while history and history[0][0] <= start:
                _, risk = history.popleft()
                totals[0] -= 1
                totals[1] -= risk
            if totals[0]:
                usage[budget] = BudgetUsage(totals[0], totals[1])
        return usage
