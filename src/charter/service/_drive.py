"""Sync and async written once: drive a flow that yields the futures it waits on.

A flow is a generator: it does its work under the service's lock, yields each ledger
future it must wait for, receives the entry (or has the failure thrown in), and returns
its answer. `run` blocks on each future; `run_async` awaits it. The flow never knows
which, so grants, outcomes and keyed decisions are written once for both callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Flow", "run", "run_async"]

T = TypeVar("T")

#: A flow: yields futures, is sent their results, returns its answer.
Flow = Generator[Future[Any] | asyncio.Future[Any], Any, T]


@dataclass(frozen=True, slots=True)
class _Answer(Generic[T]):
    """What a flow returned when it stopped."""

    value: T


def _resume(
    flow: Flow[T], waited: Any, failure: BaseException | None
) -> Future[Any] | asyncio.Future[Any] | _Answer[T]:
    """Send the flow what it waited for (or throw in its failure): its next future, or answer."""
    try:
        return flow.throw(failure) if failure is not None else flow.send(waited)
    except StopIteration as done:
        return _Answer(done.value)


def run(flow: Flow[T]) -> T:
    """Drive `flow` on this thread, blocking on each future it yields."""
    waited: Any = None
    failure: BaseException | None = None
    while not isinstance(step := _resume(flow, waited, failure), _Answer):
        try:
            waited, failure = step.result(), None
        except BaseException as exc:  # handed back to the flow, which cleans up
            waited, failure = None, exc
    return step.value


async def run_async(flow: Flow[T]) -> T:
    """Drive `flow` on the running event loop, awaiting each future it yields.

    Each wait is shielded: a caller that goes away must not cancel a commit that others
    (or the ledger) still depend on; the writer commits a queued entry regardless.
    """
    waited: Any = None
    failure: BaseException | None = None
    while not isinstance(step := _resume(flow, waited, failure), _Answer):
        try:
            if isinstance(step, asyncio.Future):
                waited = await asyncio.shield(step)
            else:
                waited = await asyncio.shield(asyncio.wrap_future(step))
            failure = None
        except BaseException as exc:  # handed back to the flow, which cleans up
            waited, failure = None, exc
    return step.value
