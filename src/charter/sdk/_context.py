"""What the agent says about its situation, set around a block of code.

Governed calls inside `with context(confidence=0.9, rationale="..."):` send that context
with their requests. It lives in a `contextvars.ContextVar`, so it follows the code that
set it: into asyncio tasks created inside the block and `asyncio.to_thread` calls, but
never into a concurrent task that did not inherit it. Blocks nest; inner values win.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

__all__ = ["context", "current_context"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("charter_sdk_context", default=_EMPTY)


@contextmanager
def context(
    *,
    confidence: float | None = None,
    rationale: str | None = None,
    data_sources: Sequence[Mapping[str, Any]] | None = None,
    environment: str | None = None,
    alternatives: Sequence[str] | None = None,
    labels: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Mapping[str, Any]]:
    """Attach context to every governed call made inside the block.

    Args:
        confidence: the agent's stated confidence, from 0 to 1.
        rationale: why the agent wants to act, in its own words.
        data_sources: the data relied on, each `{"name": ..., "age_seconds": ...}`.
        environment: where the action runs, such as `prod`.
        alternatives: the other options the agent considered.
        labels: free-form values for policies to read.

    Yields:
        The context in force inside the block (the outer one merged with these values).
    """
    given: dict[str, Any] = {
        "confidence": confidence,
        "rationale": rationale,
        "data_sources": [dict(s) for s in data_sources] if data_sources is not None else None,
        "environment": environment,
        "alternatives": list(alternatives) if alternatives is not None else None,
        "labels": dict(labels) if labels is not None else None,
    }
    merged = MappingProxyType(
        {**_CONTEXT.get(), **{k: v for k, v in given.items() if v is not None}}
    )
    token = _CONTEXT.set(merged)
    try:
        yield merged
    finally:
        _CONTEXT.reset(token)


def current_context() -> Mapping[str, Any]:
    """The context set by the enclosing `context` blocks; empty outside any."""
    return _CONTEXT.get()
