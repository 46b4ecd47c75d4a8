"""The embedded `charter.Charter` behind the clients' interface.

`EmbeddedClient(charter)` answers exactly what `Client` would from a server holding the
same ledger, so `@governed` code and its tests run in-process without a server.
`AsyncEmbeddedClient` runs each call in a worker thread: the embedded service blocks
until the ledger entry is durable, which must not stall the event loop. Waiting for
people is different: it may take hours, so it holds no thread at all; the gateway wakes
the event loop when the approval settles (`Charter.watch`).

A failing ledger (`LedgerError`) becomes `CharterUnavailable`, as the server answers it
with a 503: the decision could not be made durable, so nothing may act on it. A store
that is away (`StoreUnavailable`) is `denied` as well, as the server's 503 says `deny`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from charter.errors import LedgerError, StoreUnavailable, TooManyPending
from charter.sdk._base import AsyncClientBase, SyncClientBase, _ClientSettings
from charter.sdk._errors import CharterUnavailable, PendingLimitReached
from charter.sdk._flow import Backoff, Decide, Fetch, Redeem, Report, Request
from charter.sdk._types import ApprovalInfo, DecisionResult, DecisionStatus, Grant

if TYPE_CHECKING:
    from charter.service import Charter, DecisionRecord, DecisionView

__all__ = ["AsyncEmbeddedClient", "EmbeddedClient"]


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


def _answer(charter: Charter, request: Request) -> Any:
    """Ask the embedded service what `request` asks, as the HTTP API would answer it.

    A `Fetch` with a `hold` blocks until the gateway says the approval settled, or that
    many seconds.
    """
    try:
        if isinstance(request, Decide):
            asked = {
                "agent": request.agent,
                "action": request.action,
                "args": dict(request.args),
                "context": dict(request.context),
            }
            return _result_of(charter.decide(asked, idempotency_key=request.idempotency_key))
        if isinstance(request, Redeem):
            return charter.redeem(request.grant.id, request.grant.token, request.args)
        if isinstance(request, Report):
            return charter.record_outcome(
                request.decision_id,
                success=request.success,
                error=request.error,
                duration_ms=request.duration_ms,
                result_digest=request.result_digest,
            )
        if request.hold > 0:
            return _status_of(charter.wait_decision(request.decision_id, request.hold))
        return _status_of(charter.get_decision(request.decision_id))
    except TooManyPending as exc:
        # As the server answers it (429 naming the decision); `decide_flow` reads it.
        raise PendingLimitReached(None, exc.message, decision_id=exc.decision_id) from None
    except StoreUnavailable as exc:
        message = f"the ledger cannot be written: {exc.message}"
        raise CharterUnavailable(message, denied=isinstance(request, Decide)) from exc
    except LedgerError as exc:
        raise CharterUnavailable(f"the ledger cannot be written: {exc.message}") from exc


class _EmbeddedSettings(_ClientSettings):
    """What both embedded clients hold: the service. The arguments are `EmbeddedClient`'s."""

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
        return f"{type(self).__name__}(fail_open={self.fail_open})"


class EmbeddedClient(_EmbeddedSettings, SyncClientBase):
    """`Client`'s interface over a `charter.Charter` in this process.

    Args:
        charter: the open embedded service; the client does not close it.
        fail_open: as for `Client`; only a failing ledger makes it matter here.
        backoff: unused (waiting blocks on the gateway's own signal); kept so that
            every client takes the same arguments.
        approval_wait: as for `Client`.
    """

    def _ask(self, request: Request) -> Any:
        return _answer(self.charter, request)


class AsyncEmbeddedClient(_EmbeddedSettings, AsyncClientBase):
    """`AsyncClient`'s interface over a `charter.Charter`, each call in a worker thread.

    It takes `EmbeddedClient`'s arguments. Waiting awaits the gateway's own signal and
    holds no thread.
    """

    async def _ask(self, request: Request) -> Any:
        if isinstance(request, Fetch) and request.hold > 0:
            return await self._watch(request)
        return await asyncio.to_thread(_answer, self.charter, request)

    async def _watch(self, op: Fetch) -> DecisionStatus | None:
        """Await the approval settling, or `op.hold` seconds, without holding a thread.

        The gateway calls back in its own thread; the callback only wakes this event
        loop. The decision is read again after registering: it may have settled before.
        """
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
