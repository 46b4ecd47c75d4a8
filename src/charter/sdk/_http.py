"""Clients of Charter's HTTP API, over `httpx2`: `Client` blocks, `AsyncClient` awaits.

Both build their requests and read their answers through `_protocol`; the only thing
here is sending. A request that cannot be sent or answered (refused connection, timeout,
5xx) raises `CharterUnavailable`, which `@governed` treats as "do not act" unless the
client fails open.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2

from charter.__about__ import __version__
from charter.errors import CharterError
from charter.sdk._base import AsyncClientBase, SyncClientBase
from charter.sdk._errors import CharterUnavailable, PendingLimitReached
from charter.sdk._flow import Backoff, Fetch
from charter.sdk._protocol import (
    HOT_PATHS,
    Exchange,
    decide_exchange,
    outcome_exchange,
    redeem_exchange,
    status_exchange,
)
from charter.sdk._types import DecisionResult, DecisionStatus, Grant

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")

#: Seconds to wait for Charter before treating it as unavailable: deciding is quick, and
#: an agent blocked on a slow control plane is worse than one told "not now".
DEFAULT_TIMEOUT = 10.0


def _headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"charter-sdk/{__version__}",
    }


def _timeout(base: float, exchange: Exchange[Any]) -> httpx2.Timeout | Any:
    """The request's timeout: a held long poll may take its hold on top of the usual."""
    if exchange.hold <= 0:
        return httpx2.USE_CLIENT_DEFAULT
    return httpx2.Timeout(base, read=base + exchange.hold)


def _hot_urls(base: httpx2.URL) -> dict[str, httpx2.URL]:
    """The absolute URLs of the paths every governed action takes, under `base`.

    Given a relative path, httpx2 parses it and merges it into the base URL on every
    request, about 50 µs a call; these few fixed paths are merged once, the way httpx2
    does it (the base's path, then the path without its leading slash). Any other path
    (one that carries an id) still goes through httpx2's own merging and quoting.
    """
    return {
        path: base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode("ascii"))
        for path in HOT_PATHS
    }


def _unreachable(base_url: str, exc: httpx2.RequestError) -> CharterUnavailable:
    what = type(exc).__name__
    detail = str(exc) or "no detail"
    return CharterUnavailable(f"charter at {base_url} could not be asked ({what}: {detail})")


class Client(SyncClientBase):
    """A blocking client of a Charter server.

    Args:
        base_url: where the server listens, such as `http://127.0.0.1:8470`.
        api_key: an agent's API key (`charter keys create --role agent --agent ID`).
        timeout: seconds before a request counts as unanswered.
        fail_open: let governed actions run when the server cannot be reached (counted
            in `stats.failed_open` and logged); by default they raise `CharterUnavailable`.
        transport: an `httpx2` transport, such as one that calls an app in-process.
        backoff: how `wait` spaces its polls when the server cannot hold them.
        approval_wait: seconds a governed call waits for people by default when its
            decision needs them; 0 (the default) raises `ApprovalRequired` at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fail_open: bool = False,
        transport: httpx2.BaseTransport | None = None,
        backoff: Backoff | None = None,
        approval_wait: float = 0.0,
    ) -> None:
        super().__init__(fail_open=fail_open, backoff=backoff, approval_wait=approval_wait)
        self.base_url = base_url
        self._timeout = timeout
        self._http = httpx2.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._urls = _hot_urls(self._http.base_url)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, fail_open={self.fail_open})"

    def _send(self, exchange: Exchange[T]) -> T:
        try:
            response = self._http.request(
                exchange.method,
                self._urls.get(exchange.path, exchange.path),
                content=exchange.body,
                headers=exchange.headers,
                timeout=_timeout(self._timeout, exchange),
            )
        except httpx2.RequestError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return exchange.read(response.status_code, response.content)

    def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> DecisionResult:
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
            CharterUnavailable: the server could not be asked.
            PendingLimitReached: it needs approval and the agent has as many pending as
                it may (429); recorded, not to be retried.
            RequestInvalid: the request is malformed; nothing was decided.
            IdempotencyConflict: the key was used with a different request.
            CharterError: any other refusal (authentication, permission), by its code.
        """
        try:
            return self._send(decide_exchange(agent, action, args, context or {}, idempotency_key))
        except PendingLimitReached as refused:
            named = refused.decision_id
            if refused.decision is None and named is not None:
                # The refused decision is recorded; read it so the error carries it whole,
                # as the embedded client's does. Reading it is best effort.
                try:
                    status = self.get_decision(named)
                except CharterError:
                    raise refused from None
                if status is not None:
                    raise PendingLimitReached(status.result, refused.refusal) from None
            raise

    def redeem(self, grant: Grant, args: Mapping[str, Any]) -> None:
        """Spend `grant` on exactly `args`, right before acting; it works once.

        Raises:
            GrantRefused: unknown, used, expired, or the arguments changed (`code` says).
            CharterUnavailable: the server could not be asked.
        """
        self._send(redeem_exchange(grant, args))

    def report_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> None:
        """Record how the action went; once per decision.

        Raises:
            NotFound: no such decision.
            Conflict: an outcome is already recorded for it.
            CharterUnavailable: the server could not be asked.
        """
        self._send(
            outcome_exchange(
                decision_id,
                success=success,
                error=error,
                duration_ms=duration_ms,
                result_digest=result_digest,
            )
        )

    def get_decision(self, decision_id: str) -> DecisionStatus | None:
        """A decision and its state now; None when there is no such decision.

        Raises:
            CharterUnavailable: the server could not be asked.
        """
        return self._send(status_exchange(decision_id))

    def _fetch(self, op: Fetch) -> DecisionStatus | None:
        """One long poll: the server holds it until the approval settles or `op.hold`."""
        return self._send(status_exchange(op.decision_id, op.hold))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(AsyncClientBase):
    """An async client of a Charter server; `Client`'s methods, awaited.

    Args:
        base_url: where the server listens, such as `http://127.0.0.1:8470`.
        api_key: an agent's API key (`charter keys create --role agent --agent ID`).
        timeout: seconds before a request counts as unanswered.
        fail_open: let governed actions run when the server cannot be reached (counted
            in `stats.failed_open` and logged); by default they raise `CharterUnavailable`.
        transport: an `httpx2` async transport, such as `httpx2.ASGITransport(app)`.
        backoff: how `wait` spaces its polls when the server cannot hold them.
        approval_wait: seconds a governed call waits for people by default when its
            decision needs them; 0 (the default) raises `ApprovalRequired` at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fail_open: bool = False,
        transport: httpx2.AsyncBaseTransport | None = None,
        backoff: Backoff | None = None,
        approval_wait: float = 0.0,
    ) -> None:
        super().__init__(fail_open=fail_open, backoff=backoff, approval_wait=approval_wait)
        self.base_url = base_url
        self._timeout = timeout
        self._http = httpx2.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._urls = _hot_urls(self._http.base_url)

    def __repr__(self) -> str:
        return f"AsyncClient({self.base_url!r}, fail_open={self.fail_open})"

    async def _send(self, exchange: Exchange[T]) -> T:
        try:
            response = await self._http.request(
                exchange.method,
                self._urls.get(exchange.path, exchange.path),
                content=exchange.body,
                headers=exchange.headers,
                timeout=_timeout(self._timeout, exchange),
            )
        except httpx2.RequestError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return exchange.read(response.status_code, response.content)

    async def decide(
        self,
        agent: str,
        action: str,
        args: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> DecisionResult:
        """Ask Charter whether `agent` may take `action` with `args`; see `Client.decide`."""
        exchange = decide_exchange(agent, action, args, context or {}, idempotency_key)
        try:
            return await self._send(exchange)
        except PendingLimitReached as refused:
            named = refused.decision_id
            if refused.decision is None and named is not None:  # see `Client.decide`
                try:
                    status = await self.get_decision(named)
                except CharterError:
                    raise refused from None
                if status is not None:
                    raise PendingLimitReached(status.result, refused.refusal) from None
            raise

    async def redeem(self, grant: Grant, args: Mapping[str, Any]) -> None:
        """Spend `grant` on exactly `args`; see `Client.redeem`."""
        await self._send(redeem_exchange(grant, args))

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
        await self._send(
            outcome_exchange(
                decision_id,
                success=success,
                error=error,
                duration_ms=duration_ms,
                result_digest=result_digest,
            )
        )

    async def get_decision(self, decision_id: str) -> DecisionStatus | None:
        """A decision and its state now; None when there is no such decision."""
        return await self._send(status_exchange(decision_id))

    async def _fetch(self, op: Fetch) -> DecisionStatus | None:
        """One long poll: the server holds it until the approval settles or `op.hold`."""
        return await self._send(status_exchange(op.decision_id, op.hold))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
