"""`@governed`: ask Charter before a function acts, and tell it how the action went.

    @governed("payments.refund", client=client, agent="support-bot", wait=30)
    def refund(order_id: str, amount: float, currency: str) -> str: ...

A call decides with the function's bound arguments as the action's `args`, runs the
function only when the verdict is `allow`, redeems the grant with the arguments as they
are right before running, and reports the outcome (an exception is reported as a failure
and re-raised). When the decision needs people, the call waits up to `wait` seconds for
them and runs with the arguments they approved (a reviewer may have modified them), or
raises `ApprovalRequired`; `refund.resume(decision_id)` takes it up later, from any
process. The steps are `governed_flow` and `resume_flow`, written once; this module only
performs them, blocking for plain functions and awaiting for coroutine functions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, TypeVar, cast

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
    Wait,
    governed_flow,
    resume_flow,
    run_async,
    run_sync,
)

__all__ = ["Governed", "governed"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: Runs the governed function: as called (None), or with the approved arguments.
Runner = Callable[[Mapping[str, Any] | None], Any]


class Governed(Protocol[P, R_co]):
    """A governed function: call it like the original, or `resume` an earlier decision."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Decide, wait for people if need be, run when allowed, report the outcome."""
        ...

    def resume(self, decision_id: str, /, *, wait: float | None = None, **excluded: Any) -> R_co:
        """Wait for people to settle an earlier decision, then run it as they approved it.

        Args:
            decision_id: the decision, such as `ApprovalRequired.decision_id`; it may
                come from another process, or from before a restart.
            wait: seconds to wait for people; the decorator's (or client's) when None,
                0 to look once.
            **excluded: values for the parameters left out of the action's args
                (`exclude`, `self`), which no decision records.

        Returns:
            What the function returns, run once with the approved arguments.

        Raises:
            CharterError: no such decision (`decision_unknown`), another agent's or
                action's (`decision_mismatch`), or one that opened no approval
                (`not_resumable`).
            ActionDenied: people denied it or let it expire (`reason`, `denied_by`).
            ApprovalRequired: still waiting for people after `wait` seconds.
            GrantRefused: it already ran (`grant_used`): a decision runs once.
            CharterUnavailable: Charter could not be asked.
        """
        ...


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


def _rebind(
    signature: inspect.Signature,
    skip: frozenset[str],
    approved: Mapping[str, Any],
    kept: Mapping[str, Any],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call that runs the function with the approved args: `_arguments` undone.

    Each parameter takes its approved value by name (a `*args` parameter its list, a
    `**kwargs` one whatever no other parameter names); one the approval leaves out
    takes its default. `kept` holds the parameters no decision records (`self`,
    excluded ones). Raises TypeError, before anything is redeemed, when the approved
    args do not fit the function.
    """
    values = dict(approved)
    arguments: dict[str, Any] = {}
    spill: str | None = None
    for name, parameter in signature.parameters.items():
        if name in skip:
            if name in kept:
                arguments[name] = kept[name]
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            spill = name
        elif name in values:
            value = values.pop(name)
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                value = tuple(value)
            arguments[name] = value
    if spill is not None:
        arguments[spill], values = values, {}
    if values:
        names = ", ".join(f"`{n}`" for n in sorted(values))
        raise TypeError(f"the approved args name {names}, which the function does not take")
    call = inspect.BoundArguments(signature, arguments)
    signature.bind(*call.args, **call.kwargs)  # a missing required parameter fails here
    return call.args, call.kwargs


def _ask(client: GovernanceClient | AsyncGovernanceClient, op: Op) -> Any:
    """Call the client method an operation names.

    A blocking client gives back its answer; an async one, the awaitable of it.
    """
    if isinstance(op, Wait):
        return client.wait(op.decision_id, op.timeout)
    if isinstance(op, Decide):
        return client.decide(
            op.agent, op.action, op.args, context=op.context, idempotency_key=op.idempotency_key
        )
    if isinstance(op, Redeem):
        return client.redeem(op.grant, op.args)
    if isinstance(op, Report):
        return client.report_outcome(
            op.decision_id, success=op.success, error=op.error, duration_ms=op.duration_ms
        )
    raise TypeError(f"`@governed` does not perform {op!r}")  # pragma: no cover


def _blocking(client: GovernanceClient, run: Runner) -> Callable[[Op], Any]:
    """Perform a governed flow's operations with a blocking client."""

    def perform(op: Op) -> Any:
        if isinstance(op, Run):
            return run(op.args)
        if isinstance(op, FailOpen | OutcomeLost):
            return note(client.stats, op)
        return _ask(client, op)

    return perform


def _awaiting(client: AsyncGovernanceClient, run: Runner) -> Callable[[Op], Awaitable[Any]]:
    """Perform a governed flow's operations with an async client."""

    async def perform(op: Op) -> Any:
        if isinstance(op, FailOpen | OutcomeLost):
            return note(client.stats, op)
        return await (run(op.args) if isinstance(op, Run) else _ask(client, op))

    return perform


def _threaded(client: GovernanceClient, run: Runner) -> Callable[[Op], Awaitable[Any]]:
    """Perform with a blocking client from a coroutine: its calls go to a worker thread.

    Waiting for people then holds that thread for the wait; an async client does not.
    """
    blocking = _blocking(client, run)

    async def perform(op: Op) -> Any:
        if isinstance(op, Run):
            return await run(op.args)
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
    wait: float | None = None,
) -> Callable[[Callable[P, R]], Governed[P, R]]:
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
        wait: seconds a call waits for people when its decision needs them, then runs
            with the arguments they approved (a reviewer may have modified them: the
            function gets the modified ones). 0 raises `ApprovalRequired` at once;
            None (the default) takes the client's `approval_wait`, itself 0 unless set.

    Returns:
        A decorator; the decorated function has the same signature and, when allowed,
        returns what the function returns. It also has `resume(decision_id, *,
        wait=None, **excluded)`, which takes up a decision made earlier (by this
        process or one before a restart): it waits for people, then runs the function
        once with the approved arguments, redeeming the decision's grant.

    Raises:
        TypeError: at decoration, `exclude` names an unknown parameter, `wait` is
            negative, or a plain function was given an async client.

    The decorated function raises, besides its own errors:
        ActionDenied: the verdict is `deny`, or people denied the action (`reason`,
            `denied_by`) or let it expire; the function did not run.
        PendingLimitReached: the agent has as many approvals pending as it may; not
            retried.
        ApprovalRequired: the decision needs people and they have not settled it within
            `wait` seconds; keep its `decision_id` and `resume` it.
        CharterUnavailable: Charter could not be asked and the client fails closed.
        GrantRefused: the grant was refused, e.g. because the arguments changed.
    """
    if wait is not None and wait < 0:
        raise TypeError("`wait` must not be negative")

    def waiting(asked: float | None) -> float:
        # Read at call time, so a client's `approval_wait` may be changed later.
        chosen = asked if asked is not None else wait
        return chosen if chosen is not None else client.approval_wait

    def decorate(fn: Callable[P, R]) -> Governed[P, R]:
        name = getattr(fn, "__qualname__", repr(fn))
        signature = inspect.signature(fn)
        skip = _skipped(signature, exclude, name)
        is_coroutine = inspect.iscoroutinefunction(fn)
        is_async_client = _is_async_client(client)
        if not is_coroutine and is_async_client:
            raise TypeError(
                f"`{name}` is a plain function but its client is async; "
                "use `Client` or `EmbeddedClient`, or make it `async def`"
            )

        def start(bound: inspect.BoundArguments) -> Flow[Any]:
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
                wait=waiting(None),
                check=lambda approved: _rebind(signature, skip, approved, bound.arguments),
            )

        def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound

        def resumed(decision_id: str, asked: float | None, kept: dict[str, Any]) -> Flow[Any]:
            unknown = sorted(set(kept) - skip)
            if unknown:
                raise TypeError(
                    f"`{name}.resume` takes only the parameters left out of the action's "
                    f"args; {', '.join(f'`{n}`' for n in unknown)} come from the approval"
                )
            return resume_flow(
                decision_id,
                agent=agent,
                action=action,
                wait=waiting(asked),
                fail_open=client.fail_open,
                clock=time.perf_counter,
                check=lambda approved: _rebind(signature, skip, approved, kept),
            )

        def runner(
            args: tuple[Any, ...], kwargs: dict[str, Any], kept: Mapping[str, Any]
        ) -> Runner:
            # For a coroutine function, what it returns is the coroutine to await.
            def run(approved: Mapping[str, Any] | None) -> Any:
                if approved is None:
                    return fn(*args, **kwargs)
                again, named = _rebind(signature, skip, approved, kept)
                return fn(*again, **named)

            return run

        def perform(run: Runner) -> Callable[[Op], Any]:
            if not is_coroutine:
                return _blocking(cast(GovernanceClient, client), run)
            if is_async_client:
                return _awaiting(cast(AsyncGovernanceClient, client), run)
            return _threaded(cast(GovernanceClient, client), run)

        drive = run_async if is_coroutine else run_sync

        def call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            """The governed call: `run_sync`'s answer, or the awaitable of `run_async`'s."""
            bound = bind(args, kwargs)
            return drive(start(bound), perform(runner(args, kwargs, bound.arguments)))

        def resume(decision_id: str, asked: float | None, excluded: dict[str, Any]) -> Any:
            """`resume`, answered as `call` is."""
            flow = resumed(decision_id, asked, excluded)
            return drive(flow, perform(runner((), {}, excluded)))

        if is_coroutine:

            @functools.wraps(fn)
            async def governed_coroutine(*args: Any, **kwargs: Any) -> Any:
                return await call(args, kwargs)

            async def resume_coroutine(
                decision_id: str, /, *, wait: float | None = None, **excluded: Any
            ) -> Any:
                return await resume(decision_id, wait, excluded)

            governed_coroutine.resume = resume_coroutine  # type: ignore[attr-defined]
            return cast(Governed[P, R], governed_coroutine)

        @functools.wraps(fn)
        def governed_function(*args: P.args, **kwargs: P.kwargs) -> R:
            result: R = call(args, kwargs)
            return result

        def resume_function(
            decision_id: str, /, *, wait: float | None = None, **excluded: Any
        ) -> R:
            result: R = resume(decision_id, wait, excluded)
            return result

        governed_function.resume = resume_function  # type: ignore[attr-defined]
        return cast(Governed[P, R], governed_function)

    return decorate
