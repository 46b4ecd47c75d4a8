"""What every client shares: the interface, fail-open accounting, and its methods.

`GovernanceClient` and `AsyncGovernanceClient` are the interface `@governed` needs,
declared once (`_ClientInterface`) for answers given at once or awaited; the HTTP
clients and the embedded adapters all satisfy one of them, so code written against a
remote Charter runs unchanged against one in the same process. They do so by inheriting
`SyncClientBase` or `AsyncClientBase`, which drive the same flows (`_Methods`, each
method written once); a client only says how it sends one request.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from charter.sdk._flow import (
    Backoff,
    Decide,
    FailOpen,
    Fetch,
    Flow,
    Op,
    OutcomeLost,
    Redeem,
    Report,
    Request,
    Sleep,
    decide_flow,
    run_async,
    run_sync,
    wait_flow,
)
from charter.sdk._types import DecisionResult, DecisionStatus, Grant

__all__ = [
    "AsyncClientBase",
    "AsyncGovernanceClient",
    "ClientStats",
    "GovernanceClient",
    "SyncClientBase",
    "note",
]

logger = logging.getLogger("charter.sdk")

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=Callable[..., Any])


class ClientStats:
    """Counters of what a client let through or lost; safe to read from any thread.

    Attributes:
        failed_open: actions run without a decision or a redeemed grant because Charter
            could not be reached and the client fails open.
        outcomes_lost: outcomes that could not be recorded after their action ran.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed_open = 0
        self.outcomes_lost = 0

    def count(self, what: str) -> None:
        """Add one to `failed_open` or `outcomes_lost`."""
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def __repr__(self) -> str:
        return f"ClientStats(failed_open={self.failed_open}, outcomes_lost={self.outcomes_lost})"


def note(stats: ClientStats, op: FailOpen | OutcomeLost) -> None:
    """Count and log what a governed flow let through or lost."""
    if isinstance(op, FailOpen):
        stats.count("failed_open")
        logger.warning(
            "charter could not be reached at %s; running `%s` anyway because the client "
            "fails open: %s",
            op.stage,
            op.action,
            op.error,
        )
    else:
        stats.count("outcomes_lost")
        logger.warning(
            "the outcome of decision %s could not be recorded: %s", op.decision_id, op.error
        )


#: What the interface's methods answer: the value for a blocking client, an awaitable of
#: it for an async one.
_Decided_co = TypeVar("_Decided_co", covariant=True)
_Done_co = TypeVar("_Done_co", covariant=True)
_Found_co = TypeVar("_Found_co", covariant=True)
_Settled_co = TypeVar("_Settled_co", covariant=True)


class _ClientInterface(Protocol[_Decided_co, _Done_co, _Found_co, _Settled_co]):
    """Both client interfaces: the same members, answering at once or with an awaitable.

    Written once and parametrised by the answers, as Python cannot declare a method and
    its `async` twin together; `GovernanceClient` and `AsyncGovernanceClient` fill them in.
    """

    fail_open: bool
    stats: ClientStats
    approval_wait: float

    def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> _Decided_co:
        """Decide one request."""
        ...

    def redeem(self, grant: Grant, args: Mapping[str, Any]) -> _Done_co:
        """Spend a grant on exactly these arguments."""
        ...

    def report_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> _Done_co:
        """Record how an action went."""
        ...

    def get_decision(self, decision_id: str) -> _Found_co:
        """A decision and its state now."""
        ...

    def wait(self, decision_id: str, timeout: float = 60.0) -> _Settled_co:
        """Wait until people have decided, or `timeout` seconds have passed."""
        ...


class GovernanceClient(
    _ClientInterface[DecisionResult, None, DecisionStatus | None, DecisionStatus], Protocol
):
    """What `@governed` needs from a blocking client.

    `approval_wait` is how long a governed call waits for people by default when its
    decision needs them (0: raise `ApprovalRequired` at once).
    """


class AsyncGovernanceClient(
    _ClientInterface[
        Awaitable[DecisionResult],
        Awaitable[None],
        Awaitable[DecisionStatus | None],
        Awaitable[DecisionStatus],
    ],
    Protocol,
):
    """What `@governed` needs from an async client: `GovernanceClient`, awaited."""


class _ClientSettings:
    """What every client holds: fail-open, counters, the wait's backoff and default.

    Args:
        fail_open: let governed actions run when Charter cannot be reached (counted in
            `stats.failed_open` and logged); by default they raise `CharterUnavailable`.
        backoff: how `wait` spaces its polls when the server cannot hold them.
        clock: a monotonic clock in seconds; tests pass their own.
        approval_wait: seconds a governed call waits for people by default when its
            decision needs them; 0 raises `ApprovalRequired` at once. `@governed(...,
            wait=...)` overrides it per function.
    """

    def __init__(
        self,
        *,
        fail_open: bool = False,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        approval_wait: float = 0.0,
    ) -> None:
        if approval_wait < 0:
            raise ValueError("`approval_wait` must not be negative")
        self.fail_open = fail_open
        self.stats = ClientStats()
        self.backoff = backoff or Backoff()
        self.approval_wait = approval_wait
        self._clock = clock


class _Methods:
    """The clients' methods, each written once as the flow of requests it makes.

    `SyncClientBase` drives each flow with blocking calls and `AsyncClientBase` with
    awaits, so these docstrings are both kinds of client's. `self` is the client: the
    flows read only what `_ClientSettings` holds.
    """

    backoff: Backoff
    _clock: Callable[[], float]

    def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Flow[DecisionResult]:
        """Ask Charter whether `agent` may take `action` with `args`.

        Args:
            agent: the acting agent's id; an agent key may only name its own agent.
            action: the dotted action name, such as `payments.refund`.
            args: the action's arguments, as JSON values.
            context: what the agent says about its situation (confidence, rationale, ...).
            idempotency_key: the same key and request give back the first decision.

        Returns:
            The recorded decision, with a grant when it allows the action.

        Raises:
            CharterUnavailable: Charter could not be asked (the server, or the embedded
                ledger, failed).
            PendingLimitReached: it needs approval and the agent has as many pending as
                it may (429); recorded, not to be retried.
            RequestInvalid: the request is malformed; nothing was decided.
            IdempotencyConflict: the key was used with a different request.
            CharterError: any other refusal (authentication, permission), by its code.
        """
        return decide_flow(Decide(agent, action, args, context or {}, idempotency_key))

    def redeem(self, grant: Grant, args: Mapping[str, Any]) -> Flow[None]:
        """Spend `grant` on exactly `args`, right before acting; it works once.

        Raises:
            GrantRefused: unknown, used, expired, or the arguments changed (`code` says).
            CharterUnavailable: Charter could not be asked.
        """
        yield Redeem(grant, args)

    def report_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> Flow[None]:
        """Record how the action went; once per decision.

        Raises:
            NotFound: no such decision.
            Conflict: an outcome is already recorded for it.
            CharterUnavailable: Charter could not be asked.
        """
        yield Report(decision_id, success, error, duration_ms, result_digest)

    def get_decision(self, decision_id: str) -> Flow[DecisionStatus | None]:
        """A decision and its state now, in the shape the HTTP API answers it.

        Returns:
            The decision's status, or None when there is no such decision.

        Raises:
            CharterUnavailable: Charter could not be asked.
        """
        status: DecisionStatus | None = yield Fetch(decision_id, 0.0)
        return status

    def wait(self, decision_id: str, timeout: float = 60.0) -> Flow[DecisionStatus]:
        """Wait until people have decided on a decision, or `timeout` seconds have passed.

        No polling storm: over HTTP each request is a long poll (`?wait=`, at most 30 s
        each) that the server answers as soon as the approval settles; the embedded
        clients are woken by the gateway itself. `wait` only reads: to run the action
        once approved, use the governed function's `resume`.

        Args:
            decision_id: the decision, such as `ApprovalRequired.decision_id`.
            timeout: how long to wait in all, in seconds; 0 reads it once.

        Returns:
            The decision's status: settled (`approved` with its grant, token and the
            approved `args`; `denied` or `expired` with the reviewer's `resolution`;
            or any state a decision that needed nobody is in), or still waiting
            (`status.waiting`) when the time ran out. Timing out is not an error.

        Raises:
            CharterError: no decision has this id (code `decision_unknown`).
            CharterUnavailable: Charter could not be asked.
        """
        return wait_flow(decision_id, timeout, clock=self._clock, backoff=self.backoff)


def _request(op: Op) -> Request:
    """What a client's flow asks Charter; sleeping aside, its flows yield nothing else."""
    if isinstance(op, Decide | Redeem | Report | Fetch):
        return op
    raise TypeError(f"a client does not perform {op!r}")  # pragma: no cover


def _named(method: M, flow: Callable[..., Flow[Any]]) -> M:
    """`method`, with `flow`'s name, docstring and parameters: it answers what `flow` returns."""
    functools.update_wrapper(method, flow)
    # Not the flow's return annotation: the method answers (or awaits) what it returns.
    answers = inspect.signature(flow).replace(return_annotation=inspect.Signature.empty)
    method.__signature__ = answers  # type: ignore[attr-defined]
    return method


def _blocking(
    flow: Callable[Concatenate[Any, P], Flow[T]],
) -> Callable[Concatenate[SyncClientBase, P], T]:
    """A blocking client's method: `flow`, driven with blocking calls."""

    def method(self: SyncClientBase, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(flow(self, *args, **kwargs), self._perform)

    return _named(method, flow)


def _awaited(
    flow: Callable[Concatenate[Any, P], Flow[T]],
) -> Callable[Concatenate[AsyncClientBase, P], Coroutine[Any, Any, T]]:
    """An async client's method: `flow`, driven with awaits."""

    async def method(self: AsyncClientBase, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(flow(self, *args, **kwargs), self._perform)

    return _named(method, flow)


class SyncClientBase(_ClientSettings, abc.ABC):
    """The blocking clients' methods: `_Methods`' flows, driven with blocking calls.

    A client only says how it asks Charter one `Request` (`_ask`). The arguments are
    `_ClientSettings`'s.
    """

    @abc.abstractmethod
    def _ask(self, request: Request) -> Any:
        """Send one request to Charter and give back its answer, or raise its error.

        A `Fetch` with a `hold` may be held until the approval settles, or that long.
        """

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            return None
        return self._ask(_request(op))

    decide = _blocking(_Methods.decide)
    redeem = _blocking(_Methods.redeem)
    report_outcome = _blocking(_Methods.report_outcome)
    get_decision = _blocking(_Methods.get_decision)
    wait = _blocking(_Methods.wait)


class AsyncClientBase(_ClientSettings, abc.ABC):
    """`SyncClientBase` for the async clients: the same flows, driven with awaits.

    The arguments are `_ClientSettings`'s.
    """

    @abc.abstractmethod
    async def _ask(self, request: Request) -> Any:
        """Send one request to Charter; see `SyncClientBase._ask`."""

    async def _perform(self, op: Op) -> Any:
        if isinstance(op, Sleep):
            await asyncio.sleep(op.seconds)
            return None
        return await self._ask(_request(op))

    decide = _awaited(_Methods.decide)
    redeem = _awaited(_Methods.redeem)
    report_outcome = _awaited(_Methods.report_outcome)
    get_decision = _awaited(_Methods.get_decision)
    wait = _awaited(_Methods.wait)
