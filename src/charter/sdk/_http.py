"""Clients of Charter's HTTP API, over `httpx2`: `Client` blocks, `AsyncClient` awaits.

Both build their requests and read their answers through `_protocol`, and inherit their
methods from `_base`; the only thing here is sending. A request that cannot be sent or
answered (refused connection, timeout, 5xx) raises `CharterUnavailable`, which
`@governed` treats as "do not act" unless the client fails open.

Each request carries the agent's trace (W3C `traceparent`): its current OpenTelemetry
span's, if it has one; otherwise, for a redeem, an outcome or a read, the decision's own
trace, which the server named in the decision's answer (`traceresponse`). Request,
decision, approval, grant and outcome are then one trace, traced by the agent or not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

import httpx2

from charter.__about__ import __version__
from charter.sdk._base import AsyncClientBase, SyncClientBase, _ClientSettings
from charter.sdk._errors import CharterUnavailable
from charter.sdk._flow import Backoff, Decide, Fetch, Redeem, Request
from charter.sdk._protocol import HOT_PATHS, Exchange, exchange_for
from charter.sdk._types import DecisionResult, DecisionStatus
from charter.telemetry._context import TraceParent, current_traceparent

__all__ = ["AsyncClient", "Client"]

#: The connection pool, and the transport it may be given.
Pool = TypeVar("Pool", httpx2.Client, httpx2.AsyncClient)
Transport = TypeVar("Transport", httpx2.BaseTransport, httpx2.AsyncBaseTransport)

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


class _Unreachable:
    """Around a request: one that cannot be sent or answered means Charter is unavailable.

    A class rather than `contextlib.contextmanager`: it wraps every request, and this
    costs a fraction of a generator-based one.
    """

    __slots__ = ("base_url",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, httpx2.RequestError):
            what = type(exc).__name__
            detail = str(exc) or "no detail"
            raise CharterUnavailable(
                f"charter at {self.base_url} could not be asked ({what}: {detail})"
            ) from exc


class _Traces:
    """The trace of each decision this client saw lately, by decision id and grant id.

    Bounded (the oldest are forgotten first): it only spares a redeem or an outcome
    soon after its decision from starting a trace of its own.
    """

    __slots__ = ("_by", "_limit", "_lock")

    def __init__(self, limit: int = 4096) -> None:
        self._by: dict[str, str] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def note(self, answer: object, header: str | None) -> None:
        """Remember the trace a decision's answer named (its `traceresponse`)."""
        if header is None:
            return
        found = TraceParent.parse(header)
        if found is None:
            return
        result = answer.result if isinstance(answer, DecisionStatus) else answer
        if not isinstance(result, DecisionResult):
            return
        keys = [result.id] if result.grant is None else [result.id, result.grant.id]
        with self._lock:
            for key in keys:
                self._by.pop(key, None)
                self._by[key] = found.header()
            while len(self._by) > self._limit:
                del self._by[next(iter(self._by))]

    def parent(self, request: Request) -> tuple[str, str | None] | None:
        """The `traceparent` (and `tracestate`) `request` continues, if any."""
        current = current_traceparent()
        if current is not None or isinstance(request, Decide):
            return current
        key = request.grant.id if isinstance(request, Redeem) else request.decision_id
        with self._lock:
            header = self._by.get(key)
        return None if header is None else (header, None)


def _traced(exchange: Exchange[Any], parent: tuple[str, str | None] | None) -> Any:
    """The exchange's headers, with the trace it continues."""
    if parent is None:
        return exchange.headers
    header, state = parent
    headers = {**exchange.headers, "traceparent": header}
    if state:
        headers["tracestate"] = state
    return headers


class _HttpSettings(_ClientSettings, Generic[Pool, Transport]):
    """What both HTTP clients hold: the server's address, the key, a connection pool.

    The arguments are `Client`'s.
    """

    #: Makes the connection pool: `httpx2.Client` or `httpx2.AsyncClient`.
    _pool: Callable[..., Pool]

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        fail_open: bool = False,
        transport: Transport | None = None,
        backoff: Backoff | None = None,
        approval_wait: float = 0.0,
    ) -> None:
        super().__init__(fail_open=fail_open, backoff=backoff, approval_wait=approval_wait)
        self.base_url = base_url
        self._timeout = timeout
        self._http: Pool = self._pool(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._urls = _hot_urls(self._http.base_url)
        self._asking = _Unreachable(base_url)
        self._traces = _Traces()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, fail_open={self.fail_open})"

    def _exchange(self, request: Request) -> tuple[Exchange[Any], dict[str, Any]]:
        """The exchange for `request`, and the arguments that send it with the pool."""
        exchange = exchange_for(request)
        sending = {
            "method": exchange.method,
            "url": self._urls.get(exchange.path, exchange.path),
            "content": exchange.body,
            "headers": _traced(exchange, self._traces.parent(request)),
            "timeout": _timeout(self._timeout, exchange),
        }
        return exchange, sending

    def _read(self, request: Request, exchange: Exchange[Any], response: Any) -> Any:
        """The answer, read; a decision's trace is remembered for its next requests."""
        answer = exchange.read(response.status_code, response.content)
        if isinstance(request, Decide | Fetch):
            self._traces.note(answer, response.headers.get("traceresponse"))
        return answer


class Client(_HttpSettings[httpx2.Client, httpx2.BaseTransport], SyncClientBase):
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

    _pool = httpx2.Client

    def _ask(self, request: Request) -> Any:
        exchange, sending = self._exchange(request)
        with self._asking:
            response = self._http.request(**sending)
        return self._read(request, exchange, response)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_HttpSettings[httpx2.AsyncClient, httpx2.AsyncBaseTransport], AsyncClientBase):
    """An async client of a Charter server; `Client`'s methods, awaited.

    It takes `Client`'s arguments; its `transport` is an `httpx2.AsyncBaseTransport`,
    such as `httpx2.ASGITransport(app)`.
    """

    _pool = httpx2.AsyncClient

    async def _ask(self, request: Request) -> Any:
        exchange, sending = self._exchange(request)
        with self._asking:
            response = await self._http.request(**sending)
        return self._read(request, exchange, response)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
