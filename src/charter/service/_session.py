"""The one object the service's collaborators share: lock, writer, clock, ids, stores.

Deciding, grants, approvals, queries and the fleet controls are separate modules that
each receive this session; none holds a reference to another's internals, and the live
bundle and the folded state are read from here at the moment they are needed (a deploy
or a halt applies to the next call).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from charter.controls import ServiceState
from charter.ledger import LedgerEntry, NewEvent
from charter.model import Halt
from charter.policy import Bundle, redact_request
from charter.service._access import KeyRing
from charter.service._clock import format_time
from charter.service._desk import ApprovalDesk
from charter.service._tickets import GrantTicket, grant_token
from charter.store import IndexChange, LedgerStore, LedgerWriter

__all__ = ["Session", "Settings", "Shared", "delegate"]

T = TypeVar("T")
C = TypeVar("C")
R = TypeVar("R")
P = ParamSpec("P")

_log = logging.getLogger("charter.service")

#: Either kind of future the writer hands out: a thread's, or an event loop's.
AnyFuture = Future[LedgerEntry] | asyncio.Future[LedgerEntry]


@dataclass(slots=True)
class Settings:
    """The service's limits, set at construction and adjustable by the embedding code."""

    grant_ttl: int = 300
    idempotency_ttl: int = 86_400
    max_pending: int = 100


@dataclass(eq=False, slots=True)
class Session:
    """The shared state of one running service.

    `lock` serialises every change of `state`, `desk` and the in-memory sets of what is
    being committed; ledger commits happen outside it (the writer batches them), and a
    change of `state` is applied when its entry is queued under the lock or once it is
    durable, as each writer documents.
    """

    store: LedgerStore
    writer: LedgerWriter
    clock: Callable[[], dt.datetime]
    ids: Callable[[], str]
    bundle: Bundle
    state: ServiceState
    desk: ApprovalDesk
    keys: KeyRing
    grant_secret: bytes
    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Where approval notifications go (set by the server); None sends none.
    notifier: Any = None
    #: Decisions made here that spent budget or were a breaker's trial, until the
    #: follower reads them back: they are counted already, so the follower skips them
    #: (it counts other processes' decisions).
    own_spending: set[str] = field(default_factory=set)
    #: Outcomes (and overdue ones) recorded here that name a breaker, by decision id,
    #: until the follower reads them back: counted already, so it skips them.
    own_outcomes: set[str] = field(default_factory=set)
    #: Approvals with a step of this process queued and not yet settled: the follower
    #: leaves them be (reloading the stored row would take the queued step back).
    stepping: Counter[str] = field(default_factory=Counter)

    def stamp(self) -> str:
        """Now, in the ledger's time form."""
        return format_time(self.clock())

    def submit(
        self, event: NewEvent, index: IndexChange | None = None, *, asynchronous: bool = False
    ) -> AnyFuture:
        """Queue an entry this caller waits for at once: a loop's future when `asynchronous`."""
        if asynchronous:
            return self.writer.submit_async(event, index)
        return self.writer.submit(event, index, awaited=True)

    def submit_many(
        self,
        pairs: list[tuple[NewEvent, IndexChange | None]],
        *,
        asynchronous: bool = False,
        awaited: bool = True,
    ) -> Sequence[AnyFuture]:
        """Queue entries that commit together, in order."""
        if asynchronous:
            return self.writer.submit_many_async(list(pairs))
        return self.writer.submit_many(list(pairs), awaited=awaited)

    def record(self, event: NewEvent) -> LedgerEntry:
        """Commit a state-bearing event and fold it into `state`; the caller holds the lock.

        The state changes only once the entry is durable: a failed commit changes nothing.
        """
        entry = self.writer.submit(event, None, awaited=True).result()
        self.state = self.state.apply_event(event, entry.seq)
        return entry

    def halt_over(self, agent: str, action: str) -> Halt | None:
        """The first halt in force that stops `agent` doing `action`, or None.

        A role's halt is matched against the agent's profile as decisions see it (the
        registry's, else the live bundle's).
        """
        halts = self.state.halts
        if not halts:
            return None
        profile = self.state.profile(agent, self.bundle.agents)
        role = profile.role if profile is not None else None
        return next((h for h in halts.values() if h.applies_to(agent, action, role)), None)

    def issue(self, decision_id: str, args_hash: str, now: dt.datetime) -> GrantTicket:
        """A grant for a decision: single use, bound to the hash of the exact arguments."""
        grant_id = f"g_{decision_id}"
        expires = format_time(now + dt.timedelta(seconds=self.settings.grant_ttl))
        return GrantTicket(grant_id, grant_token(self.grant_secret, grant_id), expires, args_hash)

    def ticket(self, grant_id: str, expires_at: str, args_hash: str) -> GrantTicket:
        """The grant an index row names, with its token derived again."""
        return GrantTicket(
            grant_id, grant_token(self.grant_secret, grant_id), expires_at, args_hash
        )

    def stored_args(self, agent: str, action: str, args: Any) -> tuple[dict[str, Any], set[str]]:
        """Arguments as the ledger keeps them (data rules applied), and the fields changed."""
        stored, changed = redact_request(
            {"agent": agent, "action": action, "args": dict(args)}, self.bundle
        )
        return dict(stored.get("args", {})), {c["field"] for c in changed}

    def notify(self, kind: str, approval_id: str | None) -> None:
        """Hand an approval event to the notifier, if one is set; never raises.

        The arguments go out as the ledger keeps them (data rules applied): a webhook
        receiver is outside Charter, and a reviewer opens the card for the rest.
        """
        if self.notifier is None or approval_id is None:
            return
        try:
            approval = self.desk.get(approval_id)
            if approval is None:
                return
            body = approval.to_json()
            for name in ("args", "original_args"):
                body[name], _ = self.stored_args(approval.agent, approval.action, body[name])
            self.notifier.notify(approval.route.id, kind, body)
        except Exception:  # a notification must never fail a decision or a step
            _log.exception("could not queue the %s notification of %s", kind, approval_id)


class Shared(Generic[T]):
    """An attribute of `Charter` that is a field of its session (or the session's settings).

    Embedding code reads `charter.bundle` or sets `charter.max_pending` as before; the
    value lives where every collaborator reads it.
    """

    def __init__(self, *, settings: bool = False, writable: bool = False) -> None:
        self._in_settings = settings
        self._writable = writable
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def _home(self, obj: Any) -> Any:
        session = obj._session
        return session.settings if self._in_settings else session

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Shared[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | Shared[T]:
        if obj is None:
            return self
        value: T = getattr(self._home(obj), self._name)
        return value

    def __set__(self, obj: object, value: T) -> None:
        if not self._writable:
            raise AttributeError(f"`{self._name}` is read-only")
        setattr(self._home(obj), self._name, value)


def delegate(attr: str, method: Callable[Concatenate[C, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A `Charter` method that is `method` of the collaborator in attribute `attr`.

    The facade's methods keep their collaborator's signature and docstring (for `help`
    and for type checkers) without a body written twice.
    """

    @functools.wraps(method)
    def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(getattr(self, attr), *args, **kwargs)

    return call
