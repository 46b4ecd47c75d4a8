"""The embedded `charter.Charter` behind the clients' interface.

`EmbeddedClient(charter)` answers exactly what `Client` would from a server holding the
same ledger, so `@governed` code and its tests run in-process without a server.
`AsyncEmbeddedClient` runs each call in a worker thread: the embedded service blocks
until the ledger entry is durable, which must not stall the event loop. Waiting for
people is different: it may take hours, so it holds no thread at all; the gateway wakes
the event loop when the approval settles (`Charter.watch`).

A failing ledger (`LedgerError`) becomes `CharterUnavailable`, as the server answers it
with a 503: the decision could not be made durable, so nothing may act on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from charter.errors import LedgerError, TooManyPending
from charter.sdk._base import AsyncClientBase, SyncClientBase
from charter.sdk._errors import CharterUnavailable, PendingLimitReached
from charter.sdk._flow import Backoff, Fetch
from charter.sdk._types import ApprovalInfo, DecisionResult, DecisionStatus, Grant

if TYPE_CHECKING:
    from charter.service import Charter, DecisionRecord, DecisionView

__all__ = ["AsyncEmbeddedClient", "EmbeddedClient"]

P = ParamSpec("P")
T = TypeVar("T")


def _ledger_guard(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except LedgerError as exc:
            raise CharterUnavailable(f"the ledger cannot be written: {exc.message}") from exc

    return guarded


def _result_of(record: DecisionRecord) -> DecisionResult:
    ticket = record.grant
    grant = Grant(ticket.id, ticket.token, ticket.expires_at, ticket.args_hash) if ticket else None
    summary = record.approval
    approval = ApprovalInfo.from_json(summary) if summary is not None else None
    return DecisionResult(
        record.id, record.decision, grant, record.replayed, record.seq, record.at, approval
    )


def _status_of(view: DecisionView | None) -> DecisionStatus | None:
    # The embedded client acts as the decision's own agent, which an agent key reads with
    # the grant's token (it needs it to redeem a grant an approval issued).
    return DecisionStatus.from_json(view.to_json(with_token=True)) if view is not None else None


class EmbeddedClient(SyncClientBase):
    """`Client`'s interface over a `charter.Charter` in this process.

    Args:
        charter: the open embedded service; the client does not close it.
        fail_open: as for `Client`; only a failing ledger makes it matter here.
        backoff: unused (waiting blocks on the gateway's own signal); kept so that
            every client takes the same arguments.
        approval_wait: as for `Client`.
    """

    def __init__(
        self,
        charter: Charter,
        *,
        fail_open: bool = False,
        backoff: Backoff | None = None,
        approval_wait: float = 0.0,
    ) -> None:
        super().__init__(fail_open=fail_open, backoff=backoff, approval_wait=approval_wait)
        self.charter = charter

    def __repr__(self) -> str:
        return f"EmbeddedClient(fail_open={self.fail_open})"

    @_ledger_guard
    def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> DecisionResult:
        """Decide and record one request; see `Client.decide`."""
        request = {
            "agent": agent,
            "action": action,
            "args": dict(args),
            "context": dict(context or {}),
        }
        try:
            return _result_of(self.charter.decide(request, idempotency_key=idempotency_key))
        except TooManyPending as exc:
            status = _status_of(self.charter.get_decision(exc.decision_id))
            found = status.result if status is not None else None
            raise PendingLimitReached(found, exc.message, decision_id=exc.decision_id) from None

    @_ledger_guard
    def redeem(self, grant: Grant, args: Mapping[str, Any]) -> None:
        """Spend `grant` on exactly `args`; see `Client.redeem`."""
        self.charter.redeem(grant.id, grant.token, args)

    @_ledger_guard
    def report_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> None:
        """Record how the action went; see `Client.report_outcome`."""
        self.charter.record_outcome(
            decision_id,
            success=success,
            error=error,
            duration_ms=duration_ms,
            result_digest=result_digest,
        )

    @_ledger_guard
    def get_decision(self, decision_id: str) -> DecisionStatus | None:
        """A decision and its state now, in the shape the HTTP API answers it."""
        return _status_of(self.charter.get_decision(decision_id))

    @_ledger_guard
    def _fetch(self, op: Fetch) -> DecisionStatus | None:
        """Block until the gateway says the approval settled, or `op.hold` seconds."""
        if op.hold <= 0:
            return self.get_decision(op.decision_id)
        return _status_of(self.charter.wait_decision(op.decision_id, op.hold))


class AsyncEmbeddedClient(AsyncClientBase):
    """`AsyncClient`'s interface over a `charter.Charter`, each call in a worker thread.

    Args:
        charter: the open embedded service; the client does not close it.
        fail_open: as for `AsyncClient`; only a failing ledger makes it matter here.
        backoff: unused (waiting awaits the gateway's own signal); kept so that every
            client takes the same arguments.
        approval_wait: as for `AsyncClient`.
    """

    def __init__(
        self,
        charter: Charter,
        *,
        fail_open: bool = False,
        backoff: Backoff | None = None,
        approval_wait: float = 0.0,
    ) -> None:
        super().__init__(fail_open=fail_open, backoff=backoff, approval_wait=approval_wait)
        self._sync = EmbeddedClient(charter)
        self.charter = charter

    def __repr__(self) -> str:
        return f"AsyncEmbeddedClient(fail_open={self.fail_open})"

    async def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> DecisionResult:
        """Decide and record one request; see `Client.decide`."""
        return await asyncio.to_thread(
            self._sync.decide,
            agent,
            action,
            args,
            context=context,
            idempotency_key=idempotency_key,
        )

    async def redeem(self, grant: Grant, args: Mapping[str, Any]) -> None:
        """Spend `grant` on exactly `args`; see `Client.redeem`."""
        await asyncio.to_thread(self._sync.redeem, grant, args)

    async def report_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> None:
        """Record how the action went; see `Client.report_outcome`."""
        await asyncio.to_thread(
            self._sync.report_outcome,
            decision_id,
            success=success,
            error=error,
            duration_ms=duration_ms,
            result_digest=result_digest,
        )

    async def get_decision(self, decision_id: str) -> DecisionStatus | None:
        """A decision and its state now, in the shape the HTTP API answers it."""
        return await asyncio.to_thread(self._sync.get_decision, decision_id)

    async def _fetch(self, op: Fetch) -> DecisionStatus | None:
        """Await the approval settling, or `op.hold` seconds, without holding a thread.

        The gateway calls back in its own thread; the callback only wakes this event
        loop. The decision is read again after registering: it may have settled before.
        """
        if op.hold <= 0:
            return await self.get_decision(op.decision_id)
        loop = asyncio.get_running_loop()
        settled = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(settled.set)

        cancel = self.charter.watch(op.decision_id, wake)
        try:
            status = await self.get_decision(op.decision_id)
            if status is None or not status.waiting:
                return status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), op.hold)
        finally:
            cancel()
        return await self.get_decision(op.decision_id)
