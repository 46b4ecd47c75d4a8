"""The SDK's multi-step logic, written once and without I/O.

A flow is a generator that yields *operations* (decide, redeem, run the function, report
the outcome, fetch a decision, sleep) and receives each one's result, or has the error it
raised thrown in. A driver performs the operations: `run_sync` with blocking calls,
`run_async` with awaits. This is httpx's auth-flow pattern (`httpx/_auth.py`): the order of
the steps, what each failure means and when to give up live here, so the sync and async
clients cannot drift apart, and the flows can be tested by feeding them answers by hand.

`governed_flow` is the life of one governed call::

    decide ─┬─ allow ──▶ redeem(grant, exact args) ──▶ run ──▶ report outcome ──▶ result
            ├─ deny ───▶ ActionDenied
            └─ require_approval / escalate ─┬─ wait = 0 ──▶ ApprovalRequired
                                            └─ wait > 0 ──▶ wait for people ─┐
    resume_flow: wait for people (a decision made earlier, maybe by another process) ─┤
                                                                                     │
        approved ──▶ redeem(grant, approved args) ──▶ run(approved args) ──▶ report ◀┘
        denied / expired ──▶ ActionDenied (the reviewer's reason)
        still waiting ──▶ ApprovalRequired (resume it later)

    The grant is redeemed with the args as they are just before the run (`args_now`),
    so an argument changed in place after the decision is refused, not run. After an
    approval the function runs with the arguments people approved, which a reviewer
    may have modified; the grant is bound to exactly those, and works once, so a
    decision cannot be resumed twice.

    Charter unavailable at decide or redeem: fail closed (re-raise), or with fail_open
    run anyway and count it; but never when Charter answered the decision `denied` (its
    store is away: it was reached, and said no). A report that cannot be recorded never
    fails a call whose action already ran (the caller might retry it): it is counted
    and logged instead.

The clients write their own multi-step methods the same way: `decide_flow` decides and,
when the pending cap refuses, reads the refused decision so the error carries it whole;
`wait_flow` polls a decision until people have decided or the time is up. Each poll says
how long the server may hold it (`Fetch.hold`); a server that long-polls answers when the
state changes, and since the flow only sleeps for what is left of its backoff step after
the answer came back, a held poll is followed immediately by the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from charter.errors import CharterError
from charter.model import Verdict
from charter.sdk._errors import (
    ActionDenied,
    ApprovalRequired,
    CharterUnavailable,
    PendingLimitReached,
)
from charter.sdk._types import DecisionResult, DecisionStatus, Grant

__all__ = [
    "Backoff",
    "Decide",
    "FailOpen",
    "Fetch",
    "Flow",
    "Op",
    "OutcomeLost",
    "Redeem",
    "Report",
    "Request",
    "Run",
    "Sleep",
    "Wait",
    "decide_flow",
    "describe_error",
    "governed_flow",
    "resume_flow",
    "run_async",
    "run_sync",
    "wait_flow",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Decide:
    """Ask Charter to decide a request; answers a `DecisionResult`."""

    agent: str
    action: str
    args: Mapping[str, Any]
    context: Mapping[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Redeem:
    """Spend the grant on exactly these arguments; answers None, or raises GrantRefused."""

    grant: Grant
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Run:
    """Run the governed function; answers its return value, or throws its exception.

    With `args`, the function runs with these arguments (the ones people approved)
    instead of the ones it was called with.
    """

    args: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait up to `timeout` s for people to settle a decision; answers a `DecisionStatus`."""

    decision_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Report:
    """Record how the action went, linked to its decision."""

    decision_id: str
    success: bool
    error: str | None = None
    duration_ms: float | None = None
    result_digest: str | None = None


@dataclass(frozen=True, slots=True)
class FailOpen:
    """Charter was unreachable and the client fails open: count it, warn, and go on."""

    stage: str
    action: str
    error: CharterUnavailable


@dataclass(frozen=True, slots=True)
class OutcomeLost:
    """An outcome could not be recorded after the action ran: count it, warn, go on."""

    decision_id: str
    error: CharterError


@dataclass(frozen=True, slots=True)
class Fetch:
    """Read a decision's state; the server may hold the answer up to `hold` seconds."""

    decision_id: str
    hold: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this many seconds before the next step."""

    seconds: float


Op = Decide | Redeem | Run | Report | FailOpen | OutcomeLost | Fetch | Sleep | Wait
#: What a client sends to Charter: each of its methods is one of these, or a flow of them.
Request = Decide | Redeem | Report | Fetch
#: A flow: yields operations, receives their results, returns its answer.
Flow = Generator[Op, Any, T]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How `wait` spaces its polls: `first`, then times `factor`, never above `most`."""

    first: float = 0.2
    factor: float = 2.0
    most: float = 5.0


def describe_error(exc: BaseException) -> str:
    """How a failed action's error is recorded: its type, then its message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _report(op: Report) -> Flow[None]:
    try:
        yield op
    except CharterError as exc:
        yield OutcomeLost(op.decision_id, exc)


def governed_flow(
    request: Decide,
    *,
    args_now: Callable[[], Mapping[str, Any]],
    fail_open: bool,
    clock: Callable[[], float],
    wait: float = 0.0,
    check: Callable[[Mapping[str, Any]], object] | None = None,
) -> Flow[Any]:
    """Decide, and run the action only when allowed, redeeming its grant just before.

    Args:
        request: what to decide.
        args_now: the action's args as they are now, read again just before the run.
        fail_open: run the action when Charter cannot be reached, instead of raising
            (not when it answered `denied`, its store being away).
        clock: a monotonic clock in seconds, for the outcome's duration.
        wait: seconds to wait for people when the decision needs them; 0 raises
            `ApprovalRequired` at once.
        check: raises (TypeError) when approved arguments cannot be run; called
            before the grant is redeemed, so a misfit does not spend it.

    Returns:
        The governed function's return value.

    Raises:
        ActionDenied: the verdict is `deny`, or people denied it or let it expire.
        ApprovalRequired: the decision needs people and they have not settled it within
            `wait` seconds.
        CharterUnavailable: Charter could not be asked and the client fails closed; or
            it answered `denied` (its store is away), whatever `fail_open` says; or
            it stopped answering while the call waited for people (a decision that
            needs people never runs unapproved, whatever `fail_open` says).
        GrantRefused: the grant was refused (already used, expired, arguments changed).
    """
    try:
        decided: DecisionResult = yield request
    except CharterUnavailable as exc:
        if not fail_open or exc.denied:
            raise
        yield FailOpen("decide", request.action, exc)
        return (yield Run())  # no decision was recorded, so there is nothing to report to
    if decided.verdict is Verdict.DENY:
        raise ActionDenied(decided)
    if decided.verdict is not Verdict.ALLOW:
        if wait <= 0:
            raise ApprovalRequired(decided)
        status: DecisionStatus = yield Wait(decided.id, wait)
        return (yield from _when_settled(status, request.action, wait, fail_open, clock, check))
    if decided.grant is None:
        raise CharterError(
            f"decision {decided.id} allows `{request.action}` but carries no grant to redeem",
            code="grant_missing",
        )
    return (
        yield from _execute(
            decided.id, decided.grant, args_now(), Run(), request.action, fail_open, clock
        )
    )


def resume_flow(
    decision_id: str,
    *,
    agent: str,
    action: str,
    wait: float,
    fail_open: bool,
    clock: Callable[[], float],
    check: Callable[[Mapping[str, Any]], object] | None = None,
) -> Flow[Any]:
    """Take up a decision made earlier: wait for people, then run it as they approved it.

    This is how an agent that was told `ApprovalRequired` (or restarted since) acts on
    the approval: nothing of the first call is needed but the decision's id.

    Args:
        decision_id: the decision, such as `ApprovalRequired.decision_id`.
        agent: the agent resuming it; a decision for another agent is refused.
        action: the governed action; a decision on another action is refused.
        wait: seconds to wait for people; 0 looks once.
        fail_open: run the action when its grant cannot be redeemed because Charter
            cannot be reached, instead of raising.
        clock: a monotonic clock in seconds, for the outcome's duration.
        check: raises (TypeError) when the approved arguments cannot be run; called
            before the grant is redeemed.

    Returns:
        The governed function's return value.

    Raises:
        CharterError: no such decision (`decision_unknown`), or it is another agent's
            or another action's (`decision_mismatch`), or it opened no approval
            (`not_resumable`).
        ActionDenied: people denied it or let it expire, or the policy denied it.
        ApprovalRequired: people have not settled it within `wait` seconds.
        GrantRefused: its grant was already used (`grant_used`): it ran already.
        CharterUnavailable: Charter could not be asked.
    """
    status: DecisionStatus = yield Wait(decision_id, max(0.0, wait))
    found = status.result
    if (found.agent, found.action) != (agent, action):
        raise CharterError(
            f"decision {decision_id} is `{found.action}` for agent `{found.agent}`, "
            f"not `{action}` for `{agent}`; resume it with the function that asked for it",
            code="decision_mismatch",
        )
    return (yield from _when_settled(status, action, wait, fail_open, clock, check))


def _when_settled(
    status: DecisionStatus,
    action: str,
    waited: float,
    fail_open: bool,
    clock: Callable[[], float],
    check: Callable[[Mapping[str, Any]], object] | None,
) -> Flow[Any]:
    """Act on a decision once people have had their say: run it approved, or raise."""
    if status.waiting:
        raise ApprovalRequired(status.result, waited=waited or None)
    if status.refused:
        raise ActionDenied(status.result)
    approved = status.args
    if approved is None:
        raise CharterError(
            f"decision {status.id} ({status.state}) opened no approval, so there is "
            f"nothing to resume; call the function again to decide anew",
            code="not_resumable",
        )
    if status.grant is None:
        raise CharterError(
            f"decision {status.id} is {status.state} but its answer carries no grant to "
            f"redeem; use the agent's own key",
            code="grant_missing",
        )
    if check is not None:
        check(approved)
    # Once approved, redeeming is what stops a second run: a decision already redeemed,
    # run or failed is refused by Charter (`grant_used`), and the refusal is recorded.
    return (
        yield from _execute(
            status.id, status.grant, approved, Run(approved), action, fail_open, clock
        )
    )


def _execute(
    decision_id: str,
    grant: Grant,
    args: Mapping[str, Any],
    run: Run,
    action: str,
    fail_open: bool,
    clock: Callable[[], float],
) -> Flow[Any]:
    """Redeem the grant on exactly `args`, run, and report how it went."""
    try:
        yield Redeem(grant, args)
    except CharterUnavailable as exc:
        if not fail_open:
            raise
        yield FailOpen("redeem", action, exc)
    started = clock()
    try:
        value = yield run
    except Exception as exc:
        elapsed = (clock() - started) * 1000
        yield from _report(Report(decision_id, False, describe_error(exc), elapsed))
        raise
    yield from _report(Report(decision_id, True, None, (clock() - started) * 1000))
    return value


def wait_flow(
    decision_id: str,
    timeout: float,
    *,
    clock: Callable[[], float],
    backoff: Backoff | None = None,
) -> Flow[DecisionStatus]:
    """Poll a decision until people have decided, or `timeout` seconds have passed.

    Args:
        decision_id: the decision to watch, such as `ApprovalRequired.decision_id`.
        timeout: how long to wait in all, in seconds.
        clock: a monotonic clock in seconds.
        backoff: how the polls are spaced; `Backoff()` when None.

    Returns:
        The last status read: final, or still waiting (`status.waiting`) at the deadline.

    Raises:
        CharterError: no decision has this id (code `decision_unknown`).
    """
    backoff = backoff or Backoff()
    deadline = clock() + timeout
    step = backoff.first
    while True:
        asked = clock()
        status: DecisionStatus | None = yield Fetch(decision_id, max(0.0, deadline - asked))
        if status is None:
            raise CharterError(f"no decision has the id `{decision_id}`", code="decision_unknown")
        now = clock()
        if not status.waiting or now >= deadline:
            return status
        pause = min(step - (now - asked), deadline - now)
        if pause > 0:
            yield Sleep(pause)
        step = min(step * backoff.factor, backoff.most)


def decide_flow(request: Decide) -> Flow[DecisionResult]:
    """Decide one request; a refusal at the pending cap comes back with its decision whole.

    Charter records the refused decision but names only its id in the refusal; reading
    it is best effort: when it cannot be read, the refusal is raised as it came.

    Raises:
        PendingLimitReached: the agent has as many approvals pending as it may.
    """
    try:
        decided: DecisionResult = yield request
    except PendingLimitReached as refused:
        named = refused.decision_id
        if refused.decision is not None or named is None:
            raise
        try:
            status: DecisionStatus | None = yield Fetch(named, 0.0)
        except CharterError:
            raise refused from None
        if status is None:
            raise
        raise PendingLimitReached(status.result, refused.refusal) from None
    return decided


def run_sync(flow: Flow[T], perform: Callable[[Op], Any]) -> T:
    """Drive a flow with blocking calls: `perform` each operation, send back what it gives."""
    try:
        op = next(flow)
        while True:
            try:
                answer = perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        flow.close()


async def run_async(flow: Flow[T], perform: Callable[[Op], Awaitable[Any]]) -> T:
    """Drive a flow with awaits: the twin of `run_sync`."""
    try:
        op = next(flow)
        while True:
            try:
                answer = await perform(op)
            except Exception as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(answer)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        flow.close()
