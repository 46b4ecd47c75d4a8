"""Outgoing webhooks: tell people an approval is waiting, without ever slowing a decision.

A route's `notify:` list (see docs/policy.md) names where to send word of its approvals. The
gateway calls `WebhookNotifier.notify` when an approval opens or moves to the next route;
the call only puts deliveries on a queue and returns. Background threads send them, signed,
retry the ones that may succeed later, and report every attempt through the `record`
callback, which the gateway writes to the ledger as `approval.notified` / `approval.notify_failed`.

Nothing here can fail a decision: a receiver that is down, slow or wrong costs a recorded
failure, never an exception in the caller, and a full queue drops the delivery (recorded too).

Signing (receivers check it with `verify_signature`): the body is signed with HMAC-SHA256
over `f"{timestamp}.{body}"` and sent as

    X-Charter-Signature: t=<unix seconds>,v1=<hex digest>
    X-Charter-Delivery:  <delivery id, the same on every retry: receivers dedupe on it>
    X-Charter-Event:     <event kind, e.g. approval.opened>

The timestamp is inside the signed text so that a captured request cannot be replayed later
than the receiver's tolerance. The key comes from the environment variable the route names,
read at each attempt (so it can be rotated without a restart); without it nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import random as _random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote, urlsplit, urlunsplit

import httpx2

from charter.__about__ import __version__
from charter.ledger import events
from charter.service._alert_messages import json_alert, slack_alert, slack_escape

__all__ = [
    "APPROVAL_ESCALATED",
    "APPROVAL_OPENED",
    "DELIVERED",
    "FAILED",
    "RetryPolicy",
    "Webhook",
    "WebhookNotifier",
    "approval_link",
    "json_message",
    "sign",
    "slack_message",
    "verify_signature",
]

_log = logging.getLogger("charter.notify")

#: Event kinds the gateway sends; any other text is passed through as the event's name.
APPROVAL_OPENED = events.APPROVAL_OPENED
APPROVAL_ESCALATED = events.APPROVAL_ESCALATED

#: Record kinds passed to the `record` callback.
DELIVERED = events.APPROVAL_NOTIFIED
FAILED = events.APPROVAL_NOTIFY_FAILED

SIGNATURE_HEADER = "X-Charter-Signature"
DELIVERY_HEADER = "X-Charter-Delivery"
EVENT_HEADER = "X-Charter-Event"

#: Statuses worth trying again: the receiver is overloaded, restarting, or asked us to wait.
#: Any other 4xx means the request itself is wrong, and sending it again will not fix it.
_RETRY_STATUSES = frozenset({408, 429})

#: Slack refuses a section text over 3000 characters and a field over 2000; stay well below.


class Webhook(Protocol):
    """Where one delivery goes; `charter.policy.WebhookSpec` is one."""

    @property
    def url(self) -> str:
        """The receiver's address (http or https)."""
        ...

    @property
    def format(self) -> str:
        """`json` (the generic form) or `slack` (a Slack-compatible message)."""
        ...

    @property
    def secret_env(self) -> str:
        """The environment variable holding the HMAC key."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart a delivery is tried.

    Attempt `n` that fails in a way worth retrying waits `first * 2**(n-1)` seconds, scaled
    by a random factor in [0.5, 1.5) so that many deliveries failing together do not retry
    together, and never more than `most`. A `Retry-After` from the receiver replaces that
    wait, up to `retry_after_most`.
    """

    max_attempts: int = 5
    first: float = 1.0
    most: float = 60.0
    retry_after_most: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("`max_attempts` must be at least 1")
        if self.first < 0 or self.most < 0 or self.retry_after_most < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, attempt: int, unit: float) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based); `unit` is in [0, 1)."""
        nominal = self.first * 2.0 ** min(attempt - 1, 32)
        return min(self.most, nominal * (0.5 + unit))


# -- signing ----------------------------------------------------------------------------


def _digest(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The `X-Charter-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str,
    body: bytes | str,
    now: float,
    tolerance: float = 300,
) -> bool:
    """Whether `header` is a valid `X-Charter-Signature` of `body`, made within `tolerance`.

    For receivers. `body` must be the raw request body exactly as received (re-encoding
    parsed JSON changes the bytes); `now` is the receiver's clock in unix seconds. A
    timestamp further than `tolerance` seconds from `now`, either way, is refused: that is
    what stops a captured request from being replayed. Several `v1=` entries are accepted,
    any one matching.

    The caller must still dedupe on `X-Charter-Delivery`: a retried delivery is signed again
    and is valid again.
    """
    raw = body.encode() if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, raw)
    # Compare every candidate in constant time; never short-circuit on a partial match.
    return any(hmac.compare_digest(expected, c) for c in candidates)


# -- messages ---------------------------------------------------------------------------


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_message(
    event: str,
    route_id: str,
    approval: Mapping[str, Any],
    *,
    delivery_id: str,
    sent_at: str,
) -> dict[str, Any]:
    """The generic JSON body: `{event, route, approval, sent_at, delivery_id}`.

    `approval` is passed through as given (the gateway's `ApprovalView.to_json()`); `route`
    is the route this delivery was sent for, which after an escalation is the new one.
    """
    return {
        "event": event,
        "route": route_id,
        "approval": dict(approval),
        "sent_at": sent_at,
        "delivery_id": delivery_id,
    }


def approval_link(base_url: str | None, approval_id: str) -> str | None:
    """The reviewer UI's page for an approval, or None without a base URL."""
    if not base_url or not approval_id:
        return None
    return f"{base_url.rstrip('/')}/ui/approvals/{quote(approval_id, safe='')}"


def slack_message(
    event: str,
    route_id: str,
    approval: Mapping[str, Any],
    *,
    base_url: str | None = None,
) -> dict[str, Any]:
    """A Slack-compatible body (`text` plus `blocks`) for an incoming-webhook URL.

    It names the agent, action, risk, route and deadline, the first reasons, and links to
    the approval in the reviewer UI when `base_url` is given. `text` is the plain fallback
    Slack shows in notifications.
    """
    agent = approval.get("agent", "?")
    action = approval.get("action", "?")
    if event == APPROVAL_ESCALATED:
        title = f"Escalated to route {route_id}"
    elif approval.get("kind") == "escalation":
        title = "Escalation: a person must take over"
    elif event == APPROVAL_OPENED:
        title = "Approval needed"
    else:
        title = f"Approval update ({event})"
    link = approval_link(base_url, str(approval.get("id", "")))
    text = (
        f"{slack_escape(title)}: {slack_escape(action, 200)} by {slack_escape(agent, 200)}, "
        f"risk {slack_escape(approval.get('risk', '?'), 20)}"
    )
    if link:
        text += f" <{link}|review>"
    fields = [
        ("Agent", agent),
        ("Action", action),
        ("Risk", approval.get("risk", "?")),
        ("Route", route_id),
        ("Deadline", approval.get("deadline", "?")),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*{slack_escape(title)}*: `{slack_escape(action, 200)}` "
                f"by `{slack_escape(agent, 200)}`",
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{slack_escape(value, 200)}"}
                for name, value in fields
            ],
        },
    ]
    reasons = [r.get("message") for r in approval.get("reasons") or () if isinstance(r, Mapping)]
    shown = [f"• {slack_escape(m, 300)}" for m in reasons[:3] if m]
    if shown:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(shown)}})
    if link:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open in Charter>"}}
        )
    return {"text": text, "blocks": blocks}


# -- delivery ---------------------------------------------------------------------------


def _public_url(url: str) -> str:
    """The URL as recorded: no credentials, query string or fragment, where tokens go."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(unreadable url)"
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds a `Retry-After` header asks for (a number, or an HTTP date), if readable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(slots=True)
class _Delivery:
    """One message to one webhook, across all its attempts."""

    id: str
    route: str
    url: str
    format: str
    secret_env: str
    event: str
    approval: dict[str, Any]
    attempt: int = 0
    #: An alert's `alert.fired` / `alert.resolved` payload, for an alert's delivery.
    alert: dict[str, Any] | None = None
    runbook: str | None = None

    @property
    def failed(self) -> str:
        """The kind a failed attempt of this delivery is recorded as."""
        return events.ALERT_NOTIFY_FAILED if self.alert is not None else FAILED

    @property
    def delivered(self) -> str:
        """The kind a delivered attempt is recorded as."""
        return events.ALERT_NOTIFIED if self.alert is not None else DELIVERED

    def payload(self, **extra: Any) -> dict[str, Any]:
        if self.alert is not None:
            return {
                "delivery_id": self.id,
                "alert": str(self.alert.get("alert", "")),
                "agent": self.alert.get("agent"),
                "url": _public_url(self.url),
                "format": self.format,
                "event": self.event,
                "attempt": self.attempt,
                **extra,
            }
        return {
            "delivery_id": self.id,
            "route": self.route,
            "url": _public_url(self.url),
            "format": self.format,
            "event": self.event,
            "approval_id": str(self.approval.get("id", "")),
            "attempt": self.attempt,
            **extra,
        }


def _new_id() -> str:
    return f"dlv_{secrets.token_hex(12)}"


class WebhookNotifier:
    """Sends approval notifications to each route's webhooks from background threads.

    Args:
        webhooks: the webhooks of a route id, asked at each `notify` (pass
            `lambda r: charter.bundle.webhooks(r)` so a newly deployed bundle applies).
        record: called with (`approval.notified` | `approval.notify_failed`, payload) once per
            attempt, and once per delivery dropped before any attempt; it runs in a worker
            thread (several at once with `workers` > 1), so it must be thread-safe, and
            never in the caller of `notify` (except for drops after `close`).
            The payload holds `delivery_id`, `route`, `url` (without its query string),
            `format`, `event`, `approval_id`, `attempt` (0 when none was made), and either
            `status`, or `error` (a stable code) with `detail`, `final` and, when another
            attempt is scheduled, `retry_in_ms`; a failed attempt that got an answer also
            has its `status`.
        base_url: where the reviewer UI is served, for links in Slack messages.
        retry: attempts and backoff.
        timeout: seconds per attempt (connecting, sending and waiting for the answer
            each); short, because a slow receiver holds up the worker sending to it.
        queue_size: deliveries that may wait at once; beyond it `notify` drops them.
        workers: threads sending in parallel, so that one hanging receiver does not
            hold up every other.
        environ: where signing keys are read (default `os.environ`, read at each attempt).
        clock: the wall clock, for signature timestamps and `sent_at`; it must return an
            aware datetime (a `Charter`'s clock, or `charter.testing.FakeClock`).
        monotonic: seconds for scheduling retries.
        sleep: waits between retries when given (tests pass a fake that moves `monotonic`
            on); by default workers wait on a condition that `notify` and `close` wake.
        random: a source of floats in [0, 1) for the backoff's jitter.
        new_id: makes delivery ids.
        transport: an `httpx2` transport, for tests or proxies.
    """

    def __init__(
        self,
        webhooks: Callable[[str], Iterable[Webhook]],
        record: Callable[[str, dict[str, Any]], None],
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
        queue_size: int = 1000,
        workers: int = 2,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        random: Callable[[], float] = _random.random,
        new_id: Callable[[], str] = _new_id,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("`workers` and `queue_size` must be at least 1")
        self._webhooks = webhooks
        self._record = record
        self._base_url = base_url
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._queue_size = queue_size
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._monotonic = monotonic
        self._sleep = sleep
        self._random = random
        self._new_id = new_id
        self._transport = transport
        self._cond = threading.Condition()
        # (due on `monotonic`, sequence, delivery): the sequence keeps equal times in order.
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        # Records made while enqueueing; a worker writes them, so `notify` never calls out
        # (the caller may hold the very lock the recorder needs). Bounded like the queue:
        # past that, the oldest records of drops are lost, and only `stats` counts them.
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque(maxlen=queue_size)
        self._busy = 0
        self._closing = False
        self._abandon = False
        self._closed = False
        self._counts = {"delivered": 0, "failed": 0, "dropped": 0}
        self._threads = [
            threading.Thread(target=self._run, name=f"charter-webhooks-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the caller's side ---------------------------------------------------------------

    def notify(self, route_id: str, event: str, approval: Mapping[str, Any]) -> int:
        """Queue one delivery per webhook of `route_id`; return how many were queued.

        Returns at once and never raises: whatever goes wrong is logged or recorded as
        `approval.notify_failed`. `approval` is copied now, so later changes to it are not sent.
        """
        try:
            return self._enqueue(route_id, event, approval)
        except Exception:  # a notification must never fail the decision that caused it
            _log.exception("could not queue webhooks of route %s for %s", route_id, event)
            return 0

    def notify_alert(
        self,
        hooks: Iterable[Webhook],
        event: str,
        alert: Mapping[str, Any],
        *,
        runbook: str | None = None,
    ) -> int:
        """Queue one delivery of an alert's change (`alert.fired`, `alert.resolved`) per hook.

        `runbook` is the Markdown of the alert's runbook, sent with it. Returns how many
        were queued; never raises, like `notify`.
        """
        try:
            return self._enqueue(
                str(alert.get("alert", "")), event, {}, tuple(hooks), alert, runbook
            )
        except Exception:  # telling people must never stop what caused it
            _log.exception("could not queue webhooks of alert %s", alert.get("alert"))
            return 0

    def _enqueue(
        self,
        route_id: str,
        event: str,
        approval: Mapping[str, Any],
        given: tuple[Webhook, ...] | None = None,
        alert: Mapping[str, Any] | None = None,
        runbook: str | None = None,
    ) -> int:
        hooks = tuple(self._webhooks(route_id)) if given is None else given
        if not hooks:
            return 0
        if alert is not None:
            approval = alert
        error: tuple[str, str] | None = None
        snapshot: dict[str, Any] = {}
        try:
            # A JSON round trip copies the approval deeply and proves it can be sent.
            snapshot = json.loads(json.dumps(dict(approval), default=str, allow_nan=False))
        except (TypeError, ValueError) as exc:
            error = ("encode_error", f"the approval cannot be sent as JSON: {exc}")
        # What is sent when the snapshot failed: the id alone (the failure is recorded).
        key = "alert" if alert is not None else "id"
        fallback = snapshot or {key: str(approval.get(key, ""))}
        queued = 0
        late: list[tuple[str, dict[str, Any]]] = []
        with self._cond:
            for hook in hooks:
                delivery = _Delivery(
                    id=self._new_id(),
                    route=route_id,
                    url=hook.url,
                    format=hook.format,
                    secret_env=hook.secret_env,
                    event=event,
                    approval=fallback if alert is None else {},
                    alert=fallback if alert is not None else None,
                    runbook=runbook,
                )
                reason = error
                if reason is None and self._closing:
                    reason = ("closed", "the notifier is closed")
                elif reason is None and len(self._heap) >= self._queue_size:
                    reason = ("queue_full", f"{self._queue_size} deliveries already wait")
                if reason is None:
                    heapq.heappush(self._heap, (self._monotonic(), next(self._seq), delivery))
                    queued += 1
                    continue
                self._counts["dropped"] += 1
                entry = (
                    delivery.failed,
                    delivery.payload(error=reason[0], detail=reason[1], final=True),
                )
                if self._closed:
                    late.append(entry)  # no worker is left to write it
                else:
                    self._outbox.append(entry)
            self._cond.notify_all()
        for kind, payload in late:
            self._write(kind, payload)
        return queued

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking deliveries, send what is queued within `timeout` seconds, then stop.

        Deliveries still waiting at the deadline (a retry not yet due, say) are abandoned,
        each recorded as failed with error `closed`; a request already on the wire is left
        to finish in its daemon thread. Returns whether everything was sent or settled.
        Calling it again does nothing more.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            drained = not self._heap and self._busy == 0 and not self._outbox
            self._abandon = True
            self._closed = True
            left = [d for _, _, d in self._heap]
            self._heap.clear()
            entries = list(self._outbox)
            self._outbox.clear()
            self._counts["failed"] += len(left)
            self._cond.notify_all()
        for delivery in left:
            entries.append(
                (
                    delivery.failed,
                    delivery.payload(
                        error="closed",
                        detail="the notifier closed before this delivery was sent",
                        final=True,
                    ),
                )
            )
        for kind, payload in entries:
            self._write(kind, payload)
        return drained

    def stats(self) -> dict[str, int]:
        """Counts for metrics: `queued`, `in_flight`, `delivered`, `failed`, `dropped`."""
        with self._cond:
            return {"queued": len(self._heap), "in_flight": self._busy, **self._counts}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the workers' side ---------------------------------------------------------------

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        try:
            self._record(kind, payload)
        except Exception:  # a broken recorder must not kill the worker or the caller
            _log.exception("could not record %s for delivery %s", kind, payload["delivery_id"])

    def _next(self) -> _Delivery | tuple[str, dict[str, Any]] | None:
        """The next record to write or delivery to attempt; None when the worker should stop."""
        with self._cond:
            while True:
                if self._abandon:
                    return None
                if self._outbox:
                    return self._outbox.popleft()
                wait: float | None = None
                if self._heap:
                    now = self._monotonic()
                    due = self._heap[0][0]
                    if due <= now:
                        self._busy += 1
                        return heapq.heappop(self._heap)[2]
                    wait = due - now
                elif self._closing:
                    return None
                if wait is None or self._sleep is None:
                    self._cond.wait(wait)
                else:
                    self._cond.release()
                    try:
                        self._sleep(wait)
                    finally:
                        self._cond.acquire()

    def _run(self) -> None:
        client = httpx2.Client(
            timeout=self._timeout,
            follow_redirects=False,  # a redirect could carry a signed body somewhere else
            transport=self._transport,
            headers={"User-Agent": f"charter-webhooks/{__version__}"},
        )
        try:
            while (job := self._next()) is not None:
                if isinstance(job, tuple):
                    self._write(*job)
                    continue
                try:
                    self._attempt(client, job)
                except Exception:  # keep the worker alive whatever one delivery does
                    _log.exception("webhook delivery %s failed unexpectedly", job.id)
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
        finally:
            client.close()

    def _body(self, delivery: _Delivery, sent_at: str) -> bytes:
        if delivery.alert is not None:
            message = (
                slack_alert(delivery.event, delivery.alert, delivery.runbook, self._base_url)
                if delivery.format == "slack"
                else json_alert(
                    delivery.event,
                    delivery.alert,
                    delivery.runbook,
                    delivery_id=delivery.id,
                    sent_at=sent_at,
                    base_url=self._base_url,
                )
            )
            return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
        if delivery.format == "slack":
            message = slack_message(
                delivery.event, delivery.route, delivery.approval, base_url=self._base_url
            )
        else:
            message = json_message(
                delivery.event,
                delivery.route,
                delivery.approval,
                delivery_id=delivery.id,
                sent_at=sent_at,
            )
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()

    def _attempt(self, client: httpx2.Client, delivery: _Delivery) -> None:
        delivery.attempt += 1
        secret = self._environ.get(delivery.secret_env)
        if not secret:
            # Never send unsigned: a receiver that checks would refuse it, one that does
            # not would be trusting a message anybody could forge.
            self._fail(
                delivery,
                "missing_secret",
                f"environment variable `{delivery.secret_env}` holding the signing key is "
                "not set; nothing was sent",
                retry_in=None,
            )
            return
        now = self._clock()
        body = self._body(delivery, _stamp(now))
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, timestamp),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: delivery.event,
        }
        status: int | None = None
        retry_after: float | None = None
        error, detail, retryable = "", "", False
        try:
            # Streamed and never read: the receiver's answer body is of no use to us, and
            # a large one should not cost memory.
            with client.stream("POST", delivery.url, content=body, headers=headers) as response:
                status = response.status_code
                retry_after = _retry_after(response.headers.get("Retry-After"), now)
        except httpx2.UnsupportedProtocol as exc:  # not an http(s) URL: no retry can fix it
            error, detail, retryable = "request_error", str(exc), False
        except httpx2.TimeoutException as exc:
            error, detail, retryable = "timeout", str(exc) or "timed out", True
        except httpx2.ConnectError as exc:
            error, detail, retryable = "connect_error", str(exc) or "connection failed", True
        except httpx2.TransportError as exc:
            error, detail, retryable = "transport_error", f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # an unusable URL and the like: trying again cannot help
            error, detail, retryable = "request_error", f"{type(exc).__name__}: {exc}", False
        if status is not None:
            if 200 <= status < 300:
                with self._cond:
                    self._counts["delivered"] += 1
                self._write(delivery.delivered, delivery.payload(status=status))
                return
            error, detail = "http_status", f"the receiver answered {status}"
            retryable = status >= 500 or status in _RETRY_STATUSES
        retry_in: float | None = None
        if retryable and delivery.attempt < self._retry.max_attempts:
            if retry_after is not None:
                retry_in = min(retry_after, self._retry.retry_after_most)
            else:
                retry_in = self._retry.delay(delivery.attempt, self._random())
        self._fail(delivery, error, detail, retry_in=retry_in, status=status)

    def _fail(
        self,
        delivery: _Delivery,
        error: str,
        detail: str,
        *,
        retry_in: float | None,
        status: int | None = None,
    ) -> None:
        # An error's text may quote the URL; the record keeps only its public part.
        detail = detail.replace(delivery.url, _public_url(delivery.url))
        extra: dict[str, Any] = {"error": error, "detail": detail}
        if status is not None:
            extra["status"] = status
        with self._cond:
            if self._abandon:
                retry_in = None
            self._counts["failed"] += 1
        extra["final"] = retry_in is None
        if retry_in is not None:
            extra["retry_in_ms"] = round(retry_in * 1000)
        # Recorded before the retry is queued, so that records follow the attempts' order.
        self._write(delivery.failed, delivery.payload(**extra))
        if retry_in is None:
            return
        with self._cond:
            abandoned = self._abandon
            if not abandoned:
                due = self._monotonic() + retry_in
                heapq.heappush(self._heap, (due, next(self._seq), delivery))
                self._cond.notify_all()
        if abandoned:  # close() gave up between the record above and now: say it is over
            self._write(
                delivery.failed,
                delivery.payload(
                    error="closed",
                    detail="the notifier closed before this delivery could be retried",
                    final=True,
                ),
            )
