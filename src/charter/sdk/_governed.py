"""`@governed`: ask Charter before a function acts, and tell it how the action went.

    @governed("payments.refund", client=client, agent="support-bot")
    def refund(order_id: str, amount: float, currency: str) -> str: ...

A call decides with the function's bound arguments as the action's `args`, runs the
function only when the verdict is `allow`, redeems the grant with the arguments as they
are right before running, and reports the outcome (an exception is reported as a failure
and re-raised). The steps are `governed_flow`, written once; this module only performs
them, blocking for plain functions and awaiting for coroutine functions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from charter.sdk._base import AsyncGovernanceClient, GovernanceClient, note
from charter.sdk._context import current_context
from charter.sdk._flow import (
    Decide,
    FailOpen,
    Flow,
    Op,
    OutcomeLost,
    Redeem,
    Report,
    Run,
    governed_flow,
    run_async,
    run_sync,
)

__all__ = ["governed"]

P = ParamSpec("P")
R = TypeVar("R")

#: Leading parameters that are the object a method is bound to, not an argument.
_BOUND = ("self", "cls")


def _is_async_client(client: GovernanceClient | AsyncGovernanceClient) -> bool:
    return inspect.iscoroutinefunction(client.decide)


def _skipped(signature: inspect.Signature, exclude: Iterable[str], where: str) -> frozenset[str]:
    names = list(signature.parameters)
    skip = set(exclude)
    unknown = sorted(skip - set(names))
    if unknown:
        raise TypeError(
            f"`exclude` names {', '.join(f'`{n}`' for n in unknown)}, which `{where}` does not take"
        )
    if names and names[0] in _BOUND:
        skip.add(names[0])
    return frozenset(skip)


def _arguments(bound: inspect.BoundArguments, skip: frozenset[str]) -> dict[str, Any]:
    """The action's args: each bound parameter by name; `**kwargs` merged in at the top."""
    args: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in skip:
            continue
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            args.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            args[name] = list(value)
        else:
            args[name] = value
    return args


def _blocking(client: GovernanceClient, run: Callable[[], Any]) -> Callable[[Op], Any]:
    """Perform a governed flow's operations with a blocking client."""

    def perform(op: Op) -> Any:
        if isinstance(op, Run):
            return run()
        if isinstance(op, Decide):
            return client.decide(
                op.agent,
                op.action,
                op.args,
                context=op.context,
                idempotency_key=op.idempotency_key,
            )
        if isinstance(op, Redeem):
            return client.redeem(op.grant, op.args)
        if isinstance(op, Report):
            return client.report_outcome(
                op.decision_id, success=op.success, error=op.error, duration_ms=op.duration_ms
            )
        if isinstance(op, FailOpen | OutcomeLost):
            return note(client.stats, op)
        raise TypeError(f"`@governed` does not perform {op!r}")  # pragma: no cover

    return perform


def _awaiting(
    client: AsyncGovernanceClient, run: Callable[[], Awaitable[Any]]
) -> Callable[[Op], Awaitable[Any]]:
    """Perform a governed flow's operations with an async client."""

    async def perform(op: Op) -> Any:
        if isinstance(op, Run):
            return await run()
        if isinstance(op, Decide):
            return await client.decide(
                op.agent,
                op.action,
                op.args,
                context=op.context,
                idempotency_key=op.idempotency_key,
            )
        if isinstance(op, Redeem):
            return await client.redeem(op.grant, op.args)
        if isinstance(op, Report):
            return await client.report_outcome(
                op.decision_id, success=op.success, error=op.error, duration_ms=op.duration_ms
            )
        if isinstance(op, FailOpen | OutcomeLost):
            return note(client.stats, op)
        raise TypeError(f"`@governed` does not perform {op!r}")  # pragma: no cover

    return perform


def _threaded(
    client: GovernanceClient, run: Callable[[], Awaitable[Any]]
) -> Callable[[Op], Awaitable[Any]]:
    """Perform with a blocking client from a coroutine: its calls go to a worker thread."""
    blocking = _blocking(client, lambda: None)

    async def perform(op: Op) -> Any:
        if isinstance(op, Run):
            return await run()
        return await asyncio.to_thread(blocking, op)

    return perform


def governed(
    action: str,
    *,
    client: GovernanceClient | AsyncGovernanceClient,
    agent: str,
    context: Mapping[str, Any] | None = None,
    idempotency_key: Callable[[Mapping[str, Any]], str | None] | None = None,
    exclude: Iterable[str] = (),
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a function (or coroutine function) an action that Charter governs.

    Args:
        action: the dotted action name the policy knows, such as `payments.refund`.
        client: who decides: `Client`, `AsyncClient`, `EmbeddedClient` or
            `AsyncEmbeddedClient`. A coroutine function may use either kind (a blocking
            client's calls then run in a worker thread); a plain function needs a
            blocking one.
        agent: the acting agent's id.
        context: context sent with every call; a `context(...)` block around the call
            adds to it and wins where both set a field.
        idempotency_key: computes a key from the call's args, so a retried call gets
            the first decision back instead of a new one.
        exclude: parameters that are not part of the action's args (a session, a
            logger); `self` or `cls` is always left out.

    Returns:
        A decorator; the decorated function has the same signature and, when allowed,
        returns what the function returns.

    Raises:
        TypeError: at decoration, `exclude` names an unknown parameter, or a plain
            function was given an async client.

    The decorated function raises, besides its own errors:
        ActionDenied: the verdict is `deny`; the function did not run.
        ApprovalRequired: the verdict is `require_approval` or `escalate`; wait on
            its `decision_id`.
        CharterUnavailable: Charter could not be asked and the client fails closed.
        GrantRefused: the grant was refused, e.g. because the arguments changed.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = getattr(fn, "__qualname__", repr(fn))
        signature = inspect.signature(fn)
        skip = _skipped(signature, exclude, name)
        is_coroutine = inspect.iscoroutinefunction(fn)
        if not is_coroutine and _is_async_client(client):
            raise TypeError(
                f"`{name}` is a plain function but its client is async; "
                "use `Client` or `EmbeddedClient`, or make it `async def`"
            )

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Flow[Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            decided = _arguments(bound, skip)
            request = Decide(
                agent,
                action,
                decided,
                {**(context or {}), **current_context()},
                idempotency_key(decided) if idempotency_key else None,
            )
            return governed_flow(
                request,
                args_now=lambda: _arguments(bound, skip),
                fail_open=client.fail_open,
                clock=time.perf_counter,
            )

        if is_coroutine:
            coroutine = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def governed_coroutine(*args: Any, **kwargs: Any) -> Any:
                def run() -> Awaitable[Any]:
                    return coroutine(*args, **kwargs)

                flow = start(args, kwargs)
                if _is_async_client(client):
                    return await run_async(
                        flow, _awaiting(cast(AsyncGovernanceClient, client), run)
                    )
                return await run_async(flow, _threaded(cast(GovernanceClient, client), run))

            return cast(Callable[P, R], governed_coroutine)

        @functools.wraps(fn)
        def governed_function(*args: P.args, **kwargs: P.kwargs) -> R:
            flow = start(args, kwargs)
            perform = _blocking(cast(GovernanceClient, client), lambda: fn(*args, **kwargs))
            result: R = run_sync(flow, perform)
            return result

        return governed_function

    return decorate
