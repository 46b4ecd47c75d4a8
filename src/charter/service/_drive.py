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
from typing import Any, TypeVar

__all__ = ["Flow", "run", "run_async"]

T = TypeVar("T")

#: A flow: yields futures, is sent their results, returns its answer.
Flow = Generator[Future[Any] | asyncio.Future[Any], Any, T]


def run(flow: Flow[T]) -> T:
    """Drive `flow` on this thread, blocking on each future it yields."""
    waited: Any = None
    failure: BaseException | None = None
    while True:
        try:
            future = flow.throw(failure) if failure is not None else flow.send(waited)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            waited, failure = future.result(), None
        except BaseException as exc:  # handed back to the flow, which cleans up
            waited, failure = None, exc


async def run_async(flow: Flow[T]) -> T:
    """Drive `flow` on the running event loop, awaiting each future it yields.

    Each wait is shielded: a caller that goes away must not cancel a commit that others
    (or the ledger) still depend on; the writer commits a queued entry regardless.
    """
    waited: Any = None
    failure: BaseException | None = None
    while True:
        try:
            future = flow.throw(failure) if failure is not None else flow.send(waited)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            if isinstance(future, asyncio.Future):
                waited = await asyncio.shield(future)
            else:
                waited = await asyncio.shield(asyncio.wrap_future(future))
            failure = None
        except BaseException as exc:  # handed back to the flow, which cleans up
            waited, failure = None, exc
