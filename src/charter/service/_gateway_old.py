"""The application service: decide, record, and keep the state decisions depend on.

This is the one place that ties the pure core to storage and the clock. It reads the
wall clock (or the clock it is given) and passes it in; it keeps each agent's budget usage
and the halts in force, rebuilt from the ledger when it opens, and records them beside
each decision so that replay sees exactly what the engine saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter import approvals as machine
from charter.approvals import Approval, ApprovalState, Reviewer, Step
from charter.canonical import content_hash
from charter.controls import BudgetSpending
from charter.errors import (
    Conflict,
    GrantRefused,
    IdempotencyConflict,
    LedgerError,
    NotFound,
    RequestInvalid,
    TooManyPending,
)
from charter.ledger import LedgerEntry, NewEvent, SignedCheckpoint, VerifyReport
from charter.ledger._replay import DECISION_KIND, ReplayReport, replay
from charter.model import (
    ActionRequest,
    AgentProfile,
    AgentState,
    Decision,
    Halt,
    Verdict,
    json_value,
)
from charter.policy import Bundle, WebhookSpec, decide, load_bundle, redact_request
from charter.service._access import KeyRing, Principal
from charter.service._audit import load_recorded_bundle, recorded_entries
from charter.service._desk import SETTLED_STATES, ApprovalDesk, approval_row
from charter.service._records import (
    ApprovalView,
    DecisionRecord,
    DecisionView,
    Redemption,
    conflict_message,
    payload_hash,
    state_of,
)
from charter.service._tickets import GrantTicket, grant_token, token_matches
from charter.store import (
    GroupCommitWriter,
    IndexChange,
    LedgerStore,
    LedgerWriter,
    ProcessCommitWriter,
    SetOnceConflict,
    checkpoint_store,
    open_store,
    verify_store,
)

__all__ = [
    "APPROVAL_REFUSED_KIND",
    "AUTONOMY_KIND",
    "DEPLOY_KIND",
    "HALT_KIND",
    "RESUME_KIND",
    "ApprovalView",
    "Charter",
    "DecisionRecord",
    "DecisionView",
    "GrantTicket",
    "Principal",
    "Redemption",
    "format_time",
    "load_recorded_bundle",
    "recorded_entries",
    "system_clock",
]

_log = logging.getLogger("charter.service")

DEPLOY_KIND = "policy.deployed"
HALT_KIND = "halt"
RESUME_KIND = "resume"
AUTONOMY_KIND = "autonomy.changed"
GRANT_REDEEMED_KIND = "grant.redeemed"
GRANT_REFUSED_KIND = "grant.refused"
_USED = ("grant_used", "the grant was already redeemed; it runs once")
OUTCOME_KIND = "outcome"
ACCESS_DENIED_KIND = "access.denied"
AGENT_KIND = "agent.updated"
APPROVAL_REFUSED_KIND = "approval.refused"


def system_clock() -> dt.datetime:
    """The wall clock in UTC; only edges call it, and pass the result inward."""
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, the ledger's timestamp form."""
    if moment.tzinfo is None:
        raise ValueError("times must carry a timezone; Charter never guesses one")
    utc = moment.astimezone(dt.UTC)
    if utc.year < 1000:  # `strftime` does not pad such years; keep its text exactly
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as `strftime`, at under half its cost (two calls per decision), and
    # cheaper than `isoformat`, which also formats an offset only to have it cut off.
    return _TIME_FORM % (
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
    )


_TIME_FORM = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


def _as_recorded(moment: dt.datetime) -> dt.datetime:
    """`moment` as the ledger records it: `fromisoformat(format_time(moment))`, unparsed.

    Both keep microseconds and give UTC, so converting is enough.
    """
    utc = moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment
    if moment.tzinfo is None or utc.year < 1000:  # the round trip's own error
        return dt.datetime.fromisoformat(format_time(moment))
    return utc


@dataclass(frozen=True, slots=True)
class _Pending:
    """A decision made and queued for the ledger, not yet durable."""

    request: ActionRequest
    decision_id: str
    at: str
    decision: Decision
    grant: GrantTicket | None
    future: Future[LedgerEntry] | asyncio.Future[LedgerEntry]
    approval: dict[str, Any] | None = None


def _keyed(
    request: ActionRequest | Mapping[str, Any], key: str | None
) -> ActionRequest | Mapping[str, Any]:
    """The request with `key` as its idempotency key (a key given beside it wins)."""
    if key is None:
        return request
    parsed = request if isinstance(request, ActionRequest) else ActionRequest.from_json(request)
    return dataclasses.replace(parsed, idempotency_key=key)


def _outcome_taken(decision_id: str) -> Conflict:
    """The refusal of a second outcome, whoever recorded the first."""
    return Conflict(f"decision `{decision_id}` already has an outcome")


def _refused_or(record: DecisionRecord) -> DecisionRecord:
    """The record, unless its approval was refused at the pending cap: then raise."""
    approval = record.approval
    if approval is not None and approval.get("code") == "too_many_pending":
        raise TooManyPending(str(approval["reason"]), record.id)
    return record


def _random_ids() -> Callable[[], str]:
    """Decision ids: 32 hex digits, time-ordered like a UUIDv7 (RFC 9562).

    The first 48 bits are the wall clock in milliseconds and the other 80 are random
    (from a generator seeded once by the OS: asking the OS for every id costs ~100 µs on
    some virtual machines). Ids must be unique, not secret (grants, which must be
    unguessable, use `secrets`). Ordered by time, each commit's new ids (and the grant
    ids made from them) land on the last pages of the ledger's id indexes instead of on
    a page each, which cut the disk writes of a commit several times.
    """
    rng = random.Random(os.urandom(32))
    return lambda: (
        f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}{rng.getrandbits(80):020x}"
    )


class Charter:
    """Charter embedded in one process: decisions recorded in a local ledger.

    Args:
        policy: a bundle folder, or a compiled bundle.
        db: the SQLite ledger file (created and migrated when missing), or an open store.
        clock: where `now` comes from; tests and simulations pass their own.
        ids: makes decision ids; random UUIDs unless given.
        grant_ttl: seconds a grant stays redeemable after it is issued.
        idempotency_ttl: seconds an idempotency key is kept; after that the same key
            decides anew (at least a day by default).
        max_pending: how many approvals one agent may have pending; beyond it a request
            that needs approval is refused (recorded) instead of queued.
        writer: where ledger appends are batched and committed: `"thread"` (a thread of
            this process, the default) or `"process"` (a child process, so its SQLite
            work never holds this process's GIL; what `charter serve` uses; needs a
            SQLite ledger in a file).
    """

    def __init__(
        self,
        policy: str | Path | Bundle,
        db: str | Path | LedgerStore = "charter.db",
        *,
        clock: Callable[[], dt.datetime] = system_clock,
        ids: Callable[[], str] | None = None,
        grant_ttl: int = 300,
        idempotency_ttl: int = 86_400,
        max_pending: int = 100,
        writer: Literal["thread", "process"] = "thread",
    ) -> None:
        if writer not in ("thread", "process"):
            raise ValueError(f"the writer `{writer}` must be `thread` or `process`")
        self.bundle = policy if isinstance(policy, Bundle) else load_bundle(policy)
        self.store: LedgerStore = db if not isinstance(db, str | Path) else open_store(db)
        self._clock = clock
        self._ids = ids or _random_ids()
        self._lock = threading.Lock()
        self._usage = BudgetSpending()
        self._halts: dict[tuple[str, str | None], Halt] = {}
        self._deployed: str | None = None
        self._autonomy: dict[str, int] = {}
        self._registry: dict[str, AgentProfile] = {}
        self.grant_ttl = grant_ttl
        self.idempotency_ttl = idempotency_ttl
        self.max_pending = max_pending
        self._timer: threading.Thread | None = None
        self._timer_stop = threading.Event()
        self.notifier: Any = None  # set by the server: approval notifications go out here
        self._inflight: dict[tuple[str, str], tuple[str, Future[DecisionRecord]]] = {}
        self._redeemed: set[str] = set()
        self._outcomes: set[str] = set()
        self.keys = KeyRing(self.store, clock)
        self._grant_secret = self.store.secret("grants")
        self._desk = ApprovalDesk(self.store)
        self._rebuild()
        try:
            self._writer: LedgerWriter = (
                ProcessCommitWriter(self.store)
                if writer == "process"
                else GroupCommitWriter(self.store)
            )
        except BaseException:
            if db is not self.store:  # opened here: closed here
                self.store.close()
            raise
        try:
            self._record_deploy(self.bundle)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Restore halts, budget usage and the deployed version from the ledger.

        Decisions older than the longest budget window of the live bundle can never count
        again; they are skipped without being decoded, so opening a large ledger is quick.
        """
        head = self.store.head().seq
        cutoff = ""
        if head:
            last = next(iter(self.store.entries(after=head - 1)))
            horizon = max((b.window_seconds for b in self.bundle.spec.budgets), default=0)
            cutoff = format_time(dt.datetime.fromisoformat(last.at) - dt.timedelta(seconds=horizon))
        for entry in self.store.entries():
            if entry.kind == DECISION_KIND:
                if entry.at < cutoff:  # RFC 3339 UTC in one format: text order is time order
                    continue
                payload = entry.payload_object()
                decision = payload["decision"]
                if decision["verdict"] == Verdict.ALLOW.value and payload.get("budgets"):
                    self._usage.add(
                        decision["agent"],
                        dt.datetime.fromisoformat(entry.at),
                        int(decision["risk"]),
                        tuple(payload["budgets"]),
                    )
            elif entry.kind == DEPLOY_KIND:
                self._deployed = entry.payload_object()["version"]
            elif entry.kind == HALT_KIND:
                h = entry.payload_object()
                self._halts[(h["scope"], h.get("target"))] = Halt(
                    h["scope"], h.get("target"), h.get("reason", "")
                )
            elif entry.kind == RESUME_KIND:
                h = entry.payload_object()
                self._halts.pop((h["scope"], h.get("target")), None)
            elif entry.kind == AUTONOMY_KIND:
                change = entry.payload_object()
                self._set_level(change["agent"], change["level"])
            elif entry.kind == AGENT_KIND:
                held = AgentState.from_json({"profile": entry.payload_object()["agent"]}).profile
                if held is not None:
                    self._registry[held.id] = held

    def _record_deploy(self, bundle: Bundle) -> None:
        self.store.put_bundle(bundle.version, bundle.canonical_content())
        if self._deployed != bundle.version:
            payload = {
                "version": bundle.version,
                "previous": self._deployed,
                "files": sorted(bundle.content["files"]),
            }
            self._submit(
                NewEvent(DEPLOY_KIND, format_time(self._clock()), payload), awaited=True
            ).result()
            self._deployed = bundle.version

    def deploy(self, bundle: Bundle) -> None:
        """Make `bundle` the live policy; the change is recorded in the ledger."""
        with self._lock:
            self.bundle = bundle
            self._record_deploy(bundle)

    def writer_problem(self) -> str | None:
        """Why the ledger writer cannot take appends now, or None when it can."""
        return self._writer.problem()

    def close(self) -> None:
        """Stop the timers, flush pending ledger writes and close the store."""
        self.stop_timers()
        self._writer.close()
        self.store.close()

    def __enter__(self) -> Charter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- deciding ----------------------------------------------------------------------

    def _submit(
        self, event: NewEvent, index: IndexChange | None = None, *, awaited: bool = False
    ) -> Future[LedgerEntry]:
        """Queue an entry; `awaited`: this thread waits for it before queuing another."""
        return self._writer.submit(event, index, awaited=awaited)

    def _awaited(self, event: NewEvent, index: IndexChange | None = None) -> Future[LedgerEntry]:
        """Queue an entry this thread waits for at once."""
        return self._writer.submit(event, index, awaited=True)

    def _prepare(
        self,
        request: ActionRequest,
        now: dt.datetime,
        key: str | None,
        *,
        modifies: str | None = None,
        asynchronous: bool = False,
        awaited: bool = True,
    ) -> _Pending:
        """Decide and queue the ledger entry; the caller holds the lock.

        An `asynchronous` caller (on an event loop) gets an asyncio future for the entry,
        which the writer resolves with one call onto the loop per commit.

        A decision that needs people opens its approval in the same transaction. With
        `modifies` (an approval id) this is a reviewer's modified request decided again:
        recorded for the audit, but it issues no grant, opens nothing and spends no budget.
        """
        bundle = self.bundle
        registered = self._registry.get(request.agent)
        profile = registered or bundle.agents.get(request.agent)
        plan = bundle.plan_for(request.agent, profile.role, request.action) if profile else None
        budgets = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        state = AgentState(
            profile=registered,
            autonomy=self._autonomy.get(request.agent),
            budgets=self._usage.state(request.agent, budgets, now) if budgets else {},
            halts=tuple(self._halts.values()),
        )
        decision = decide(request, bundle, state, now)
        verdict = decision.verdict
        at = format_time(now)
        stored, redacted = redact_request(request.to_json(), bundle)
        decision_id = self._ids()
        counted = [b for b, _ in budgets] if modifies is None else []
        payload: dict[str, Any] = {
            "decision_id": decision_id,
            "request": stored,
            "redacted": redacted,
            "state": state.to_json(),
            "budgets": counted,
            "provenance": {
                "agent": request.agent,
                "role": profile.role if profile else None,
                "owner": profile.owner if profile else None,
                "model_id": profile.model_id if profile else None,
                "model_version": profile.model_version if profile else None,
                "data_sources": [s.get("name") for s in request.context.get("data_sources", [])],
                "rationale": request.context.get("rationale"),
            },
            "decision": decision.to_json(),
        }
        if modifies is not None:
            payload["modifies"] = modifies
        index: dict[str, Any] = {
            "agent": request.agent,
            "action": request.action,
            "verdict": verdict.value,
        }
        if key is not None:
            digest = payload_hash(request)
            payload["idempotency"] = {"key": key, "payload_hash": digest}
            index.update(idempotency_key=key, payload_hash=digest)
        grant = None
        allowed = verdict is Verdict.ALLOW
        if allowed and modifies is None:
            grant = self._issue(decision_id, content_hash(request.args), now)
            payload["grant"] = grant.to_record()
            index.update(grant.index_values())
        if allowed and counted:
            # Recorded time must be what the engine saw: replay parses `at` back into `now`.
            now = dt.datetime.fromisoformat(at)
            self._usage.add(request.agent, now, decision.risk, tuple(counted))
        event = NewEvent(DECISION_KIND, at, payload)
        change = IndexChange(decision_id, index, insert=True)
        needs_people = not allowed and verdict in (Verdict.REQUIRE_APPROVAL, Verdict.ESCALATE)
        if not needs_people or modifies is not None:
            future = (
                self._writer.submit_async(event, change)
                if asynchronous
                else self._submit(event, change, awaited=awaited)
            )
            return _Pending(request, decision_id, at, decision, grant, future)
        return self._open(
            request, decision, decision_id, at, event, change, profile, asynchronous, awaited
        )

    def _issue(self, decision_id: str, args_hash: str, now: dt.datetime) -> GrantTicket:
        """A grant for a decision: single use, bound to the hash of the exact arguments."""
        grant_id = f"g_{decision_id}"
        expires = format_time(now + dt.timedelta(seconds=self.grant_ttl))
        return GrantTicket(grant_id, grant_token(self._grant_secret, grant_id), expires, args_hash)

    def _open(
        self,
        request: ActionRequest,
        decision: Decision,
        decision_id: str,
        at: str,
        event: NewEvent,
        change: IndexChange,
        profile: AgentProfile | None,
        asynchronous: bool = False,
        awaited: bool = True,
    ) -> _Pending:
        """Queue a decision that needs people with its approval opened, or refused.

        The two entries go in one transaction: an approval is never opened without its
        decision, and a decision that needs people never lacks its approval.
        """
        refusal: str | None = None
        if decision.route is None:
            refusal = "no escalation route applies: nobody could approve it"
        elif self._desk.pending_for(request.agent) >= self.max_pending:
            refusal = (
                f"agent `{request.agent}` already has {self.max_pending} approvals pending "
                "(the per-agent cap); decide or deny those first"
            )
        if refusal is not None:
            values = {**change.values, "approval_state": "refused"}
            refused = {
                "decision_id": decision_id,
                "code": "too_many_pending" if decision.route is not None else "no_route",
                "reason": refusal,
            }
            submit_many = (
                self._writer.submit_many_async
                if asynchronous
                else functools.partial(self._writer.submit_many, awaited=awaited)
            )
            futures: Sequence[Future[LedgerEntry] | asyncio.Future[LedgerEntry]] = submit_many(
                [
                    (event, dataclasses.replace(change, values=values)),
                    (NewEvent(APPROVAL_REFUSED_KIND, at, refused), None),
                ]
            )
            summary = {"id": None, "state": "refused", **refused}
            return _Pending(request, decision_id, at, decision, None, futures[0], summary)
        assert decision.route is not None
        step = machine.open_approval(
            decision_id=decision_id,
            agent=request.agent,
            action=request.action,
            kind="escalation" if decision.verdict is Verdict.ESCALATE else "approval",
            route=decision.route,
            risk=decision.risk,
            args=request.args,
            owner=profile.owner if profile and profile.owner else None,
            runbook=decision.runbook,
            at=at,
        )
        values = {**change.values, "approval_state": "pending"}
        submit_many = (
            self._writer.submit_many_async
            if asynchronous
            else functools.partial(self._writer.submit_many, awaited=awaited)
        )
        futures = submit_many(
            [
                (event, dataclasses.replace(change, values=values)),
                (
                    NewEvent(step.kind, at, step.payload),
                    IndexChange(decision_id, {}, approval=approval_row(step.approval)),
                ),
            ]
        )
        self._desk.put(step.approval)
        summary = {
            "id": step.approval.id,
            "state": "pending",
            "deadline": step.approval.deadline,
            "route": decision.route.id,
        }
        return _Pending(request, decision_id, at, decision, None, futures[0], summary)

    def decide(
        self,
        request: ActionRequest | Mapping[str, Any],
        *,
        now: dt.datetime | None = None,
        idempotency_key: str | None = None,
    ) -> DecisionRecord:
        """Decide one request and record it; returns once the entry is durable.

        With an idempotency key (here or in the request), the same key and request give
        back the first decision and its grant, without deciding again.

        Raises:
            RequestInvalid: the request is malformed; nothing is recorded.
            IdempotencyConflict: the key was used with a different request.
            TooManyPending: it needs approval and the agent has `max_pending` approvals
                pending already; the decision and the refusal are recorded.
        """
        return _refused_or(self.decide_many([_keyed(request, idempotency_key)], now=now)[0])

    def decide_many(
        self,
        requests: Sequence[ActionRequest | Mapping[str, Any]],
        *,
        now: dt.datetime | None = None,
    ) -> list[DecisionRecord]:
        """Decide several requests in order and record them in as few commits as possible.

        Every request (and its idempotency key) is checked before any is decided, so one
        bad request records nothing.
        """
        settle = self._begin(requests, now)
        waited: Any = None
        failure: BaseException | None = None
        while True:  # drive the settling generator, blocking on each future it names
            try:
                future = settle.throw(failure) if failure is not None else settle.send(waited)
            except StopIteration as done:
                return list(done.value)
            try:
                waited, failure = future.result(), None
            except BaseException as exc:  # handed back to the generator, which cleans up
                waited, failure = None, exc

    async def decide_async(
        self,
        request: ActionRequest | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> DecisionRecord:
        """`decide` for an event loop: decides at once, awaits durability without a thread.

        The decision itself is CPU work of tens of microseconds and runs on the caller's
        thread; waiting for the ledger commit is awaited, so one event loop can have many
        decisions in one group commit without a worker thread each.
        """
        keyed = _keyed(request, idempotency_key)
        parsed = keyed if isinstance(keyed, ActionRequest) else ActionRequest.from_json(keyed)
        if parsed.idempotency_key is None:
            # No earlier decision can answer it and no later request waits on it, so it
            # skips `_settle`'s generator and bookkeeping: ~5 µs of the loop's CPU each.
            with self._lock:
                slot = self._prepare(parsed, _as_recorded(self._clock()), None, asynchronous=True)
            try:
                if isinstance(slot.future, asyncio.Future):
                    entry = await slot.future  # the writer commits it even if cancelled
                else:
                    entry = await asyncio.shield(asyncio.wrap_future(slot.future))
            except BaseException:
                self._unopened(slot)
                raise
            return _refused_or(self._recorded(slot, entry))
        settle = self._begin([parsed], None, asynchronous=True)
        waited: Any = None
        failure: BaseException | None = None
        while True:
            try:
                future = settle.throw(failure) if failure is not None else settle.send(waited)
            except StopIteration as done:
                records: list[DecisionRecord] = done.value
                return _refused_or(records[0])
            try:
                if isinstance(future, asyncio.Future):
                    # The writer commits a queued entry even if this await is cancelled.
                    waited, failure = await future, None
                else:  # shielded: a caller that goes away must not cancel another's wait
                    waited, failure = await asyncio.shield(asyncio.wrap_future(future)), None
            except BaseException as exc:  # handed back to the generator, which cleans up
                waited, failure = None, exc

    def _begin(
        self,
        requests: Sequence[ActionRequest | Mapping[str, Any]],
        now: dt.datetime | None,
        *,
        asynchronous: bool = False,
    ) -> Generator[Future[Any] | asyncio.Future[Any], Any, list[DecisionRecord]]:
        """Decide under the lock, then settle: a generator that yields each future to await.

        Deciding is the same for blocking and async callers; only how they wait differs, so
        the waiting is left to the driver (`decide_many` blocks, `decide_async` awaits).
        """
        parsed = [
            r if isinstance(r, ActionRequest) else ActionRequest.from_json(r) for r in requests
        ]
        slots: list[_Pending | DecisionRecord | Future[DecisionRecord]] = []
        owned: list[tuple[tuple[str, str], Future[DecisionRecord], int]] = []
        with self._lock:
            seen: dict[tuple[str, str], str] = {}
            for request in parsed:  # refuse every conflict before deciding anything
                if request.idempotency_key is not None:
                    marker = (request.agent, request.idempotency_key)
                    digest = seen.setdefault(marker, payload_hash(request))
                    if digest != payload_hash(request):
                        raise IdempotencyConflict(conflict_message(request.idempotency_key))
                    self._earlier(request, now)
            for request in parsed:
                # Asked again per request: an earlier one in this batch may hold its key.
                found = self._earlier(request, now)
                if found is not None:
                    slots.append(found)
                    continue
                moment = now or self._clock()
                # Truncate to what the ledger keeps, so replay decides at the same instant.
                moment = _as_recorded(moment)
                pending = self._prepare(
                    request,
                    moment,
                    request.idempotency_key,
                    asynchronous=asynchronous,
                    awaited=len(parsed) == 1,  # a batch queues all, then waits
                )
                if request.idempotency_key is not None:
                    waiter: Future[DecisionRecord] = Future()
                    marker = (request.agent, request.idempotency_key)
                    self._inflight[marker] = (payload_hash(request), waiter)
                    owned.append((marker, waiter, len(slots)))
                slots.append(pending)
        return self._settle(slots, owned)

    def _settle(
        self,
        slots: list[_Pending | DecisionRecord | Future[DecisionRecord]],
        owned: list[tuple[tuple[str, str], Future[DecisionRecord], int]],
    ) -> Generator[Future[Any] | asyncio.Future[Any], Any, list[DecisionRecord]]:
        records: list[DecisionRecord] = []
        waiting = {position: (marker, waiter) for marker, waiter, position in owned}
        try:
            for position, slot in enumerate(slots):
                if isinstance(slot, _Pending):
                    try:
                        entry = yield slot.future
                    except BaseException:
                        self._unopened(slot)
                        raise
                    record = self._recorded(slot, entry)
                    if position in waiting:  # later requests (in any thread) wait on this one
                        marker, waiter = waiting.pop(position)
                        waiter.set_result(record)
                        with self._lock:
                            self._inflight.pop(marker, None)
                    records.append(record)
                elif isinstance(slot, DecisionRecord):
                    records.append(slot)
                else:
                    earlier = yield slot
                    records.append(dataclasses.replace(earlier, replayed=True))
        except BaseException as exc:
            for marker, waiter in waiting.values():
                waiter.set_exception(exc)
                with self._lock:
                    self._inflight.pop(marker, None)
            raise
        return records

    def _recorded(self, slot: _Pending, entry: LedgerEntry) -> DecisionRecord:
        """The record of a queued decision now durable; its approval, if any, is announced."""
        record = DecisionRecord(
            slot.decision_id,
            entry.seq,
            slot.at,
            slot.request,
            slot.decision,
            slot.grant,
            approval=slot.approval,
        )
        if slot.approval is not None:
            self._notify("approval.opened", slot.approval["id"])
        return record

    def _unopened(self, slot: _Pending) -> None:
        """Forget the approval of a decision that was never committed: nobody can act on it."""
        if slot.approval is not None and slot.approval["id"] is not None:
            with self._lock:
                self._desk.forget(slot.approval["id"])

    def _earlier(
        self, request: ActionRequest, now: dt.datetime | None = None
    ) -> DecisionRecord | Future[DecisionRecord] | None:
        """The earlier decision under the request's idempotency key, if there is one.

        A key used longer ago than `idempotency_ttl` is forgotten: the request is new.

        Raises:
            IdempotencyConflict: the key was used with a different request.
        """
        key = request.idempotency_key
        if key is None:
            return None
        digest = payload_hash(request)
        inflight = self._inflight.get((request.agent, key))
        if inflight is not None:
            if inflight[0] != digest:
                raise IdempotencyConflict(conflict_message(key))
            return inflight[1]
        row = self.store.decision_row(agent=request.agent, idempotency_key=key)
        if row is None:
            return None
        horizon = (now or self._clock()) - dt.timedelta(seconds=self.idempotency_ttl)
        if row["at"] < format_time(horizon):  # one RFC 3339 UTC form: text order is time order
            return None
        if row["payload_hash"] != digest:
            raise IdempotencyConflict(conflict_message(key))
        return self._record_of(row, request, replayed=True)

    def _record_of(
        self, row: Mapping[str, Any], request: ActionRequest | None, *, replayed: bool
    ) -> DecisionRecord:
        entry = self.store.entry(int(row["seq"]))
        if entry is None:  # the index and the ledger are written together
            raise LedgerError(f"decision `{row['id']}` is indexed but not in the ledger")
        payload = entry.payload_object()
        grant = None
        if row["grant_id"] is not None:
            grant = GrantTicket(
                row["grant_id"],
                grant_token(self._grant_secret, row["grant_id"]),
                row["grant_expires_at"],
                row["grant_args_hash"],
            )
        if request is None:
            stored = payload["request"]
            request = ActionRequest(
                stored["agent"], stored["action"], stored.get("args", {}), stored.get("context", {})
            )
        return DecisionRecord(
            row["id"],
            entry.seq,
            entry.at,
            request,
            Decision.from_json(payload["decision"]),
            grant,
            replayed=replayed,
            approval=self._approval_summary(row, entry),
        )

    def _approval_summary(
        self, row: Mapping[str, Any], entry: LedgerEntry
    ) -> dict[str, Any] | None:
        """What a decision's agent sees of its approval: state, deadline, approved args."""
        state = row.get("approval_state")
        if state is None:
            return None
        if state == "refused":
            refused = next(
                (
                    e.payload_object()
                    for e in self.store.entries(after=entry.seq, limit=1)
                    if e.kind == APPROVAL_REFUSED_KIND
                ),
                {},
            )
            return {"id": None, "state": "refused", **refused}
        approval = self._desk.get(f"apr_{row['id']}")
        if approval is None:
            return {"id": f"apr_{row['id']}", "state": state}
        return {
            "id": approval.id,
            "state": approval.state.value,
            "kind": approval.kind,
            "route": approval.route.id,
            "deadline": approval.deadline,
            "args": dict(approval.args),
            "args_hash": approval.args_hash,
            "modified": bool(approval.modifications),
            "resolution": dict(approval.resolution) if approval.resolution else None,
        }

    def get_decision(self, decision_id: str) -> DecisionView | None:
        """A recorded decision with its state now (allowed, redeemed, executed, ...)."""
        row = self.store.decision_row(decision_id=decision_id)
        if row is None:
            return None
        record = self._record_of(row, None, replayed=False)
        return DecisionView(record, state_of(row), row)

    # -- grants and outcomes -----------------------------------------------------------

    def redeem(
        self,
        grant_id: str,
        token: str,
        args: Mapping[str, Any],
        *,
        now: dt.datetime | None = None,
    ) -> Redemption:
        """Redeem a grant once, for exactly the arguments that were decided on.

        Raises:
            GrantRefused: unknown grant or wrong token, already used, expired, or other
                arguments; the refusal is recorded in the ledger.
        """
        future, refusal, decision_id, at = self._queue_redeem(grant_id, token, args, now, False)
        try:
            entry = future.result()
        except SetOnceConflict:  # another process redeemed it first
            self._submit(self._used_elsewhere(grant_id, decision_id, at), awaited=True).result()
            raise GrantRefused(*_USED) from None
        finally:
            # Committed: the index now says it. Failed: nothing was redeemed after all.
            if refusal is None:
                self._redeemed.discard(grant_id)
        if refusal is not None:
            raise GrantRefused(*refusal)
        return Redemption(grant_id, str(decision_id), entry.seq, at)

    async def redeem_async(
        self,
        grant_id: str,
        token: str,
        args: Mapping[str, Any],
        *,
        now: dt.datetime | None = None,
    ) -> Redemption:
        """`redeem` for an event loop: checks at once, awaits the commit without a thread.

        Raises:
            GrantRefused: as `redeem`.
        """
        future, refusal, decision_id, at = self._queue_redeem(grant_id, token, args, now, True)
        if refusal is None:
            # Forgotten once the commit settles (the index says it, or nothing was
            # redeemed), even if this caller is cancelled first: until then a second
            # redemption must still be refused.
            future.add_done_callback(lambda _: self._redeemed.discard(grant_id))
        try:
            entry = await asyncio.shield(future)
        except SetOnceConflict:  # another process redeemed it first
            await self._writer.submit_async(self._used_elsewhere(grant_id, decision_id, at))
            raise GrantRefused(*_USED) from None
        if refusal is not None:
            raise GrantRefused(*refusal)
        return Redemption(grant_id, str(decision_id), entry.seq, at)

    @staticmethod
    def _used_elsewhere(grant_id: str, decision_id: str | None, at: str) -> NewEvent:
        """The refusal of a redemption the database found already made."""
        payload = {"grant_id": grant_id, "decision_id": decision_id, "code": _USED[0]}
        return NewEvent(GRANT_REFUSED_KIND, at, payload)

    def _queue_redeem(
        self,
        grant_id: str,
        token: str,
        args: Mapping[str, Any],
        now: dt.datetime | None,
        asynchronous: bool,
    ) -> tuple[Any, tuple[str, str] | None, str | None, str]:
        """Check a redemption under the lock and queue its entry (redeemed or refused).

        Returns the entry's future (an asyncio one when `asynchronous`), the refusal
        (code, message) or None, the decision id and the time. A redemption stays in
        `_redeemed` until the caller sees its commit settle.
        """
        with self._lock:
            moment = now or self._clock()
            at = format_time(moment)
            row = self.store.decision_row(grant_id=grant_id)
            refusal: tuple[str, str] | None = None
            if row is None or not token_matches(self._grant_secret, grant_id, token):
                refusal = ("grant_unknown", "no grant with this id and token")
            elif row["redeemed_seq"] is not None or grant_id in self._redeemed:
                refusal = _USED
            elif at > row["grant_expires_at"]:
                refusal = ("grant_expired", f"the grant expired at {row['grant_expires_at']}")
            else:
                try:
                    presented = content_hash(json_value(dict(args), "args"))
                except (RequestInvalid, ValueError):
                    presented = ""
                if presented != row["grant_args_hash"]:
                    refusal = (
                        "args_mismatch",
                        "the arguments differ from the ones decided on; decide again",
                    )
            decision_id = row["id"] if row is not None else None
            submit = self._writer.submit_async if asynchronous else self._awaited
            if refusal is not None:
                payload = {"grant_id": grant_id, "decision_id": decision_id, "code": refusal[0]}
                future: Any = submit(NewEvent(GRANT_REFUSED_KIND, at, payload))
            else:
                self._redeemed.add(grant_id)
                payload = {"grant_id": grant_id, "decision_id": decision_id}
                approved = (
                    self._desk.get(f"apr_{decision_id}")
                    if row is not None and row.get("approval_state") == "approved"
                    else None
                )
                future = submit(
                    NewEvent(GRANT_REDEEMED_KIND, at, payload),
                    IndexChange(
                        str(decision_id),
                        {},
                        seq_column="redeemed_seq",
                        # the agent has its approved arguments now: keep the ledger's form only
                        approval=approval_row(self._scrubbed(approved)) if approved else None,
                    ),
                )
        return future, refusal, decision_id, at

    def record_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> dict[str, Any]:
        """Record what happened when the action ran; once per decision.

        Raises:
            NotFound: no such decision.
            Conflict: an outcome is already recorded for it.
        """
        future, payload = self._queue_outcome(
            decision_id, success, error, duration_ms, result_digest, False
        )
        try:
            entry = future.result()
        except SetOnceConflict:  # another process recorded one first
            raise _outcome_taken(decision_id) from None
        finally:  # committed (the index says it) or failed (nothing recorded): forget it
            self._outcomes.discard(decision_id)
        return {"seq": entry.seq, "at": entry.at, **payload}

    async def record_outcome_async(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> dict[str, Any]:
        """`record_outcome` for an event loop: awaits the commit without a thread.

        Raises:
            NotFound: no such decision.
            Conflict: an outcome is already recorded for it.
        """
        future, payload = self._queue_outcome(
            decision_id, success, error, duration_ms, result_digest, True
        )
        # Forgotten once the commit settles, even if this caller is cancelled first.
        future.add_done_callback(lambda _: self._outcomes.discard(decision_id))
        try:
            entry = await asyncio.shield(future)
        except SetOnceConflict:  # another process recorded one first
            raise _outcome_taken(decision_id) from None
        return {"seq": entry.seq, "at": entry.at, **payload}

    def _queue_outcome(
        self,
        decision_id: str,
        success: bool,
        error: str | None,
        duration_ms: float | None,
        result_digest: str | None,
        asynchronous: bool,
    ) -> tuple[Any, dict[str, Any]]:
        """Check an outcome under the lock and queue its entry: its future and payload."""
        with self._lock:
            row = self.store.decision_row(decision_id=decision_id)
            if row is None:
                raise NotFound(f"no decision `{decision_id}`")
            if row["outcome_seq"] is not None or decision_id in self._outcomes:
                raise _outcome_taken(decision_id)
            payload: dict[str, Any] = {
                "decision_id": decision_id,
                "success": bool(success),
                "error": error,
                "duration_ms": duration_ms,
                "result_digest": result_digest,
            }
            submit = self._writer.submit_async if asynchronous else self._awaited
            self._outcomes.add(decision_id)
            future: Any = submit(
                NewEvent(OUTCOME_KIND, format_time(self._clock()), payload),
                IndexChange(
                    decision_id, {"outcome_success": bool(success)}, seq_column="outcome_seq"
                ),
            )
        return future, payload

    # -- approvals ---------------------------------------------------------------------

    @staticmethod
    def _reviewer(principal: Principal) -> Reviewer:
        return Reviewer(principal.identity, principal.groups, principal.key_id, principal.role)

    def _pending_approval(self, approval_id: str) -> Approval:
        approval = self._desk.get(approval_id)
        if approval is None:
            raise NotFound(f"no approval `{approval_id}`")
        return approval

    def _scrubbed(self, approval: Approval) -> Approval:
        """The approval with the bundle's data rules applied to every argument it holds.

        Approvals keep the arguments in full while people may act on them and until the
        agent has redeemed the grant (it needs the approved values); after that the
        approvals table keeps what the ledger keeps, no more.
        """

        def ledger_form(args: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
            stored, changed = redact_request(
                {"agent": approval.agent, "action": approval.action, "args": dict(args)},
                self.bundle,
            )
            return dict(stored.get("args", {})), {c["field"] for c in changed}

        args, changed = ledger_form(approval.args)
        original, changed_too = ledger_form(approval.original_args)
        hidden = {f.removeprefix("args.") for f in changed | changed_too}
        modifications = tuple(
            {
                **m,
                "diff": [
                    {"field": d["field"], "op": d["op"], "redacted": True}
                    if d["field"] in hidden
                    else d
                    for d in m.get("diff", [])
                ],
            }
            for m in approval.modifications
        )
        return dataclasses.replace(
            approval, args=args, original_args=original, modifications=modifications
        )

    def _apply(self, step: Step, at: str) -> Future[LedgerEntry]:
        """Queue a step's ledger event with the rows it changes; the caller holds the lock.

        An approval that completes issues its grant in the same transaction, bound to the
        hash of the arguments approved (a reviewer's modified ones, if any).
        """
        approval = step.approval
        values: dict[str, Any] = {}
        payload = dict(step.payload)
        if step.settled:
            values["approval_state"] = approval.state.value
        if approval.state is ApprovalState.APPROVED:
            grant = self._issue(approval.decision_id, approval.args_hash, self._clock())
            payload["grant"] = grant.to_record()
            values.update(grant.index_values())
        # Denied or expired: nobody will run it, so only the ledger's form is kept.
        stored = (
            self._scrubbed(approval) if step.settled and not values.get("grant_id") else approval
        )
        future = self._submit(
            NewEvent(step.kind, at, payload),
            IndexChange(approval.decision_id, values, approval=approval_row(stored)),
        )
        self._desk.put(stored)
        return future

    def _finish(self, steps: Sequence[tuple[Step, Future[LedgerEntry]]]) -> list[ApprovalView]:
        """Wait for steps to be durable, tell who waits, and answer the approvals.

        A step whose commit failed is taken back (the desk reloads the stored state) and
        its error raised after the others have settled.
        """
        failure: BaseException | None = None
        views: list[ApprovalView] = []
        for step, future in steps:
            try:
                future.result()
            except BaseException as exc:
                with self._lock:
                    self._desk.reload(step.approval.id)
                failure = failure or exc
                continue
            if step.settled:
                self._desk.settled(step.approval.decision_id)
            if step.kind == "approval.escalated":
                self._notify(step.kind, step.approval.id)
            view = self.get_approval(step.approval.id)
            assert view is not None  # just committed
            views.append(view)
        if failure is not None:
            raise failure
        return views

    def _notify(self, kind: str, approval_id: str | None) -> None:
        """Hand an approval event to the notifier, if one is set; never raises.

        The arguments go out as the ledger keeps them (data rules applied): a webhook
        receiver is outside Charter, and a reviewer opens the card for the rest.
        """
        if self.notifier is None or approval_id is None:
            return
        try:
            approval = self._desk.get(approval_id)
            if approval is None:
                return
            body = approval.to_json()
            for name in ("args", "original_args"):
                shown, _ = redact_request(
                    {"agent": approval.agent, "action": approval.action, "args": body[name]},
                    self.bundle,
                )
                body[name] = shown.get("args", {})
            self.notifier.notify(approval.route.id, kind, body)
        except Exception:  # a notification must never fail a decision or a step
            _log.exception("could not queue the %s notification of %s", kind, approval_id)

    def webhooks(self, route: str) -> tuple[WebhookSpec, ...]:
        """The webhooks of a route in the live bundle (read per call: deploys apply)."""
        return self.bundle.webhooks(route)

    def record_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Append an event to the ledger without waiting for it (webhook deliveries)."""
        future = self._submit(NewEvent(kind, format_time(self._clock()), dict(payload)))

        def failed(done: Future[LedgerEntry]) -> None:
            if done.exception() is not None:
                _log.error("recording %s failed: %s", kind, done.exception())

        future.add_done_callback(failed)

    def _view(self, approval: Approval) -> ApprovalView:
        row = self.store.decision_row(decision_id=approval.decision_id)
        entry = self.store.entry(int(row["seq"])) if row is not None else None
        payload = entry.payload_object() if entry is not None else {}
        decision = payload.get("decision", {})
        profile = dict(payload.get("provenance", {}))
        profile["autonomy"] = decision.get("autonomy_level")
        runbook = approval.runbook
        text = None
        if runbook is not None:
            text = self.bundle.runbooks.get(runbook)
            if text is None:  # deployed since: the recorded bundle still has it
                with contextlib.suppress(LedgerError, KeyError):
                    recorded = load_recorded_bundle(self.store, decision["policy_version"])
                    text = recorded.runbooks.get(runbook) if recorded else None
        context = payload.get("request", {}).get("context", {})
        return ApprovalView(approval.to_json(), decision, context, profile, text)

    def get_approval(self, approval_id: str) -> ApprovalView | None:
        """An approval with its decision, the agent's context and its runbook."""
        approval = self._desk.get(approval_id)
        return None if approval is None else self._view(approval)

    def approvals(
        self,
        *,
        state: str | None = "pending",
        group: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ApprovalView]:
        """Approvals by deadline, then highest risk first, filtered as asked."""
        rows = self.store.approval_rows(
            state=state, group=group, agent=agent, action=action, limit=limit, offset=offset
        )
        out = []
        for row in rows:
            approval = self._desk.get(row["id"])  # the newest state, even mid-commit
            if approval is not None:
                out.append(self._view(approval))
        return out

    def count_approvals(
        self,
        *,
        state: str | None = "pending",
        group: str | None = None,
        agent: str | None = None,
        action: str | None = None,
    ) -> int:
        """How many approvals match the filters."""
        return self.store.count_approvals(state=state, group=group, agent=agent, action=action)

    def claim(self, approval_id: str, reviewer: Principal) -> ApprovalView:
        """Take an approval on, so other reviewers see someone is on it; recorded."""
        with self._lock:
            at = format_time(self._clock())
            step = machine.claim(self._pending_approval(approval_id), self._reviewer(reviewer), at)
            future = self._apply(step, at)
        return self._finish([(step, future)])[0]

    def approve(self, approval_id: str, reviewer: Principal, *, note: str = "") -> ApprovalView:
        """Approve an approval's current arguments; the quorum completing issues the grant.

        Raises:
            NotFound: no such approval.
            Forbidden: the key cannot review, or its groups are not the route's.
            Conflict: the approval is settled, or this person has already approved it.
        """
        with self._lock:
            at = format_time(self._clock())
            approval = self._pending_approval(approval_id)
            step = machine.vote(approval, self._reviewer(reviewer), at, note)
            future = self._apply(step, at)
        return self._finish([(step, future)])[0]

    def deny(self, approval_id: str, reviewer: Principal, *, reason: str) -> ApprovalView:
        """Refuse an approval with a reason the agent receives.

        Raises:
            NotFound, Forbidden, Conflict: as for `approve`.
            RequestInvalid: no reason.
        """
        with self._lock:
            at = format_time(self._clock())
            approval = self._pending_approval(approval_id)
            step = machine.deny(approval, self._reviewer(reviewer), at, reason)
            future = self._apply(step, at)
        return self._finish([(step, future)])[0]

    def modify(
        self,
        approval_id: str,
        reviewer: Principal,
        args: Mapping[str, Any],
        *,
        note: str = "",
    ) -> ApprovalView:
        """Replace the arguments with a reviewer's, decided again under the live policy.

        The modified request is checked against the action's contract and decided again
        first; a modification the policy would deny is refused and nothing changes.
        Otherwise the re-decision is recorded, the approval now binds the new
        arguments, and the reviewer's modification counts as their approval.

        Raises:
            NotFound, Forbidden, Conflict: as for `approve`.
            RequestInvalid: the arguments are not a JSON object, break the contract, are
                unchanged, or the policy denies the modified request (`modification_denied`).
        """
        if not isinstance(args, Mapping):
            raise RequestInvalid("args", "the modified arguments must be a JSON object")
        new_args = json_value(dict(args), "args")
        with self._lock:
            moment = dt.datetime.fromisoformat(format_time(self._clock()))
            at = format_time(moment)
            approval = self._pending_approval(approval_id)
            who = self._reviewer(reviewer)
            machine.claim(approval, who, at)  # the reviewer checks, before deciding anything
            if not machine.diff_args(approval.args, new_args):
                raise RequestInvalid("args", "the modified arguments are the ones already asked")
            view = self._view(approval)
            request = ActionRequest(approval.agent, approval.action, new_args, dict(view.context))
            self._refuse_if_denied(request, moment)
            pending = self._prepare(request, moment, None, modifies=approval.id)
            step = machine.modify(
                approval, who, new_args, at, redecision_id=pending.decision_id, note=note
            )
            future = self._apply(step, at)
        pending.future.result()
        return self._finish([(step, future)])[0]

    def _refuse_if_denied(self, request: ActionRequest, now: dt.datetime) -> None:
        """Refuse a modification the live policy would deny, recording nothing."""
        profile = self.get_agent(request.agent)
        plan = (
            self.bundle.plan_for(request.agent, profile.role, request.action) if profile else None
        )
        budgets = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        state = AgentState(
            profile=self._registry.get(request.agent),
            autonomy=self._autonomy.get(request.agent),
            budgets=self._usage.state(request.agent, budgets, now),
            halts=tuple(self._halts.values()),
        )
        decision = decide(request, self.bundle, state, now)
        if decision.verdict is not Verdict.DENY:
            return
        contract = [r for r in decision.reasons if r.code == "contract"]
        if contract:
            raise RequestInvalid("args", contract[0].message)
        why = "; ".join(r.message for r in decision.reasons if r.code != "risk_factor")
        raise RequestInvalid("args", f"the policy denies the modified request: {why}")

    def similar_approvals(self, approval_id: str) -> list[ApprovalView]:
        """Pending approvals of the same agent, action and argument shape as this one."""
        approval = self._pending_approval(approval_id)
        rows = self.store.approval_rows(state="pending", shape=approval.shape, limit=1000)
        return [
            self._view(a)
            for a in (self._desk.get(r["id"]) for r in rows)
            if a is not None and a.pending
        ]

    def decide_batch(
        self,
        approval_ids: Sequence[str],
        reviewer: Principal,
        *,
        approve: bool,
        reason: str = "",
    ) -> list[ApprovalView]:
        """Approve or deny several similar approvals at once: all of them, or none.

        Every approval must be pending, of one shape (same agent, action and argument
        keys and types), and actionable by the reviewer; otherwise nothing is done.
        """
        ids = list(dict.fromkeys(approval_ids))
        if not ids:
            raise RequestInvalid("ids", "name at least one approval")
        with self._lock:
            at = format_time(self._clock())
            who = self._reviewer(reviewer)
            approvals = [self._pending_approval(i) for i in ids]
            shapes = {a.shape for a in approvals}
            if len(shapes) > 1:
                raise RequestInvalid(
                    "ids", "a batch must be of one agent, action and argument shape"
                )
            steps = [
                machine.vote(a, who, at, reason) if approve else machine.deny(a, who, at, reason)
                for a in approvals
            ]  # every step is checked before any is applied
            applied = [(step, self._apply(step, at)) for step in steps]
        return self._finish(applied)

    def fire_due(self, now: dt.datetime | None = None) -> list[ApprovalView]:
        """Fire every deadline that has passed: next tier, or expired (refused).

        The server's timer thread calls this; after a restart the first call fires
        everything that fell due while Charter was down, once each.
        """
        with self._lock:
            at = format_time(now or self._clock())
            applied = []
            due = {a.id: a for a in self._desk.due(at)}
            # Approvals another process opened (the command line on the same ledger) are
            # not in this one's memory: the store's deadline index finds them.
            for row in self.store.approval_rows(state="pending", due_by=at, limit=1000):
                held = self._desk.get(row["id"]) if row["id"] not in due else None
                if held is not None and held.pending and held.deadline <= at:
                    due[held.id] = held
            for approval in sorted(due.values(), key=lambda a: a.deadline):
                step = machine.expire(approval, at, self.bundle.routes)
                applied.append((step, self._apply(step, at)))
        return self._finish(applied) if applied else []

    def start_timers(self, interval: float = 0.5) -> None:
        """Run approval deadlines in a background thread until `stop_timers` or `close`."""
        if self._timer is not None:
            return
        self._timer_stop.clear()

        def run() -> None:
            while not self._timer_stop.wait(interval):
                try:
                    self.fire_due()
                except Exception:  # a failing store must not kill the timers
                    _log.exception("firing approval deadlines failed; retrying")

        self._timer = threading.Thread(target=run, name="charter-approval-timers", daemon=True)
        self._timer.start()

    def stop_timers(self) -> None:
        """Stop the timer thread, if running."""
        if self._timer is None:
            return
        self._timer_stop.set()
        self._timer.join()
        self._timer = None

    def watch(self, decision_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (in a Charter thread) once the decision's approval settles.

        Returns a function that cancels the watch. Check the decision's state after
        registering: it may have settled before.
        """
        return self._desk.watch(decision_id, callback)

    def wait_decision(self, decision_id: str, timeout: float) -> DecisionView | None:
        """The decision once settled, or as it stands after `timeout` seconds.

        Woken at once when this process settles it; read again every second too, for an
        approval settled by another process on the same ledger.

        Returns None when there is no such decision.
        """
        settled = threading.Event()
        cancel = self.watch(decision_id, settled.set)
        deadline = time.monotonic() + timeout
        try:
            view = self.get_decision(decision_id)
            while view is not None and view.state not in SETTLED_STATES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                settled.wait(min(1.0, left))
                view = self.get_decision(decision_id)
        finally:
            cancel()
        return view

    def _views(self, rows: Sequence[Mapping[str, Any]]) -> list[DecisionView]:
        return [
            DecisionView(self._record_of(row, None, replayed=False), state_of(row), row)
            for row in rows
        ]

    def recent_decisions(
        self, agent: str, action: str, *, limit: int = 5, before_seq: int | None = None
    ) -> list[DecisionView]:
        """The agent's latest decisions on this action, newest first, with outcomes."""
        rows = self.store.decision_rows(
            agent=agent, action=action, before_seq=before_seq, limit=limit
        )
        return self._views(rows)

    def search_decisions(
        self,
        *,
        agent: str | None = None,
        action: str | None = None,
        verdict: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[DecisionView]:
        """Decisions matching every filter given, newest first (`before_seq` pages)."""
        rows = self.store.decision_rows(
            agent=agent,
            action=action,
            verdict=verdict,
            since=since,
            until=until,
            before_seq=before_seq,
            limit=limit,
        )
        return self._views(rows)

    def autonomy_preview(self, approval_id: str) -> list[dict[str, Any]]:
        """What the live policy would decide for this request at each autonomy level."""
        approval = self._pending_approval(approval_id)
        view = self._view(approval)
        request = ActionRequest(approval.agent, approval.action, approval.args, dict(view.context))
        recorded = self.store.decision_row(decision_id=approval.decision_id)
        entry = self.store.entry(int(recorded["seq"])) if recorded else None
        state = AgentState.from_json(entry.payload_object()["state"]) if entry else AgentState()
        now = dt.datetime.fromisoformat(approval.opened_at)
        out = []
        for level, max_risk in self.bundle.levels.items():
            decision = decide(request, self.bundle, dataclasses.replace(state, autonomy=level), now)
            out.append(
                {
                    "level": level,
                    "max_risk": max_risk,
                    "verdict": decision.verdict.value,
                    "current": level == view.profile.get("autonomy"),
                }
            )
        return out

    # -- keys --------------------------------------------------------------------------

    def create_key(
        self,
        role: str,
        *,
        agent: str | None = None,
        label: str = "",
        groups: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Create an API key; returns (key id, secret). See `KeyRing.create`."""
        return self.keys.create(role, agent=agent, label=label, groups=groups)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret belongs to, or None. See `KeyRing.authenticate`."""
        return self.keys.authenticate(secret)

    def principal(self, key_id: str) -> Principal | None:
        """The principal of an unrevoked key by its id. See `KeyRing.principal`."""
        return self.keys.principal(key_id)

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key, without its hash."""
        return self.keys.list()

    def has_keys(self) -> bool:
        """Whether any unrevoked key exists (a server with none refuses every request)."""
        return self.keys.any_active()

    def revoke_key(self, key_id: str, *, by: str = "") -> None:
        """Revoke a key now; recorded in the ledger. See `KeyRing.revoke`."""
        self.keys.revoke(key_id, by=by)

    def record_access_denied(self, principal: Principal, reason: str, **details: Any) -> None:
        """Record that a principal tried something its key does not allow."""
        payload = {
            "key_id": principal.key_id,
            "role": principal.role,
            "agent": principal.agent,
            "reason": reason,
            **details,
        }
        self._submit(
            NewEvent(ACCESS_DENIED_KIND, format_time(self._clock()), payload), awaited=True
        ).result()

    def ledger_page(self, after: int = 0, limit: int = 100) -> list[LedgerEntry]:
        """Up to `limit` entries after `after`, in order."""
        return list(self.store.entries(after=after, limit=limit))

    # -- the agent registry ------------------------------------------------------------

    def get_agent(self, agent_id: str) -> AgentProfile | None:
        """The agent as decisions see it: the registry's entry, else the bundle's."""
        return self._registry.get(agent_id) or self.bundle.agents.get(agent_id)

    def agents(self) -> list[AgentProfile]:
        """Every known agent, registry entries in place of the bundle's, by id."""
        merged = {**self.bundle.agents, **self._registry}
        return [merged[k] for k in sorted(merged)]

    def put_agent(self, profile: AgentProfile, *, by: str) -> AgentProfile:
        """Register or update an agent; recorded, and used by every later decision.

        Raises:
            RequestInvalid: the role or autonomy level is not defined by the live bundle.
        """
        if not profile.id or len(profile.id) > 256:
            raise RequestInvalid("id", "an agent id is 1 to 256 characters")
        if profile.role not in self.bundle.roles:
            known = ", ".join(sorted(self.bundle.roles))
            raise RequestInvalid("role", f"role `{profile.role}` is not defined ({known})")
        if profile.autonomy not in self.bundle.levels:
            known = ", ".join(str(v) for v in self.bundle.levels)
            raise RequestInvalid(
                "autonomy", f"autonomy level {profile.autonomy} is not defined ({known})"
            )
        with self._lock:
            payload: dict[str, Any] = {"agent": profile.to_json(), "by": by}
            self._submit(
                NewEvent(AGENT_KIND, format_time(self._clock()), payload), awaited=True
            ).result()
            self._registry[profile.id] = profile
        return profile

    # -- autonomy ----------------------------------------------------------------------

    def _set_level(self, agent: str, level: int | None) -> None:
        if level is None:
            self._autonomy.pop(agent, None)
        else:
            self._autonomy[agent] = level

    def set_autonomy(self, agent: str, level: int | None, *, reason: str, by: str) -> None:
        """Override an agent's autonomy level (None restores the bundle's); recorded.

        Raises:
            RequestInvalid: the agent or level is not defined in the live bundle.
        """
        if self.get_agent(agent) is None:
            raise RequestInvalid("agent", f"agent `{agent}` is not defined")
        if level is not None and level not in self.bundle.levels:
            known = ", ".join(str(v) for v in self.bundle.levels)
            raise RequestInvalid("level", f"autonomy level {level} is not defined ({known})")
        with self._lock:
            payload = {"agent": agent, "level": level, "reason": reason, "by": by}
            self._submit(
                NewEvent(AUTONOMY_KIND, format_time(self._clock()), payload), awaited=True
            ).result()
            self._set_level(agent, level)

    def autonomy(self, agent: str) -> int | None:
        """The agent's autonomy level in force: an override, else the bundle's."""
        if agent in self._autonomy:
            return self._autonomy[agent]
        profile = self.get_agent(agent)
        return profile.autonomy if profile else None

    # -- halts -------------------------------------------------------------------------

    def halt(self, scope: str = "all", target: str | None = None, *, reason: str, by: str) -> None:
        """Stop every request that `scope`/`target` covers until `resume` is called."""
        if scope not in ("all", "agent", "action") or (scope != "all") != (target is not None):
            raise RequestInvalid(
                "scope", "a halt covers `all`, or an `agent` or `action` named by `target`"
            )
        with self._lock:
            payload = {"scope": scope, "target": target, "reason": reason, "by": by}
            self._submit(
                NewEvent(HALT_KIND, format_time(self._clock()), payload), awaited=True
            ).result()
            self._halts[(scope, target)] = Halt(scope, target, reason)

    def resume(self, scope: str = "all", target: str | None = None, *, by: str) -> None:
        """Lift a halt; recorded in the ledger."""
        with self._lock:
            payload = {"scope": scope, "target": target, "by": by}
            self._submit(
                NewEvent(RESUME_KIND, format_time(self._clock()), payload), awaited=True
            ).result()
            self._halts.pop((scope, target), None)

    @property
    def halts(self) -> tuple[Halt, ...]:
        """The halts in force."""
        return tuple(self._halts.values())

    # -- audit -------------------------------------------------------------------------

    def verify(
        self, public_key: Ed25519PublicKey | None = None, *, strict: bool = False
    ) -> VerifyReport:
        """Verify the whole ledger's hash chain, and its latest checkpoint if any.

        Args:
            public_key: the checkpoint signer's key; without it a checkpoint's signature is
                not checked, only its size and roots.
            strict: also check each payload is canonical JSON (catches a buggy writer;
                a forger can write canonical JSON too, so it adds no tamper evidence).
        """
        return verify_store(self.store, public_key, check_canonical=strict)

    def checkpoint(self, private_key: Ed25519PrivateKey) -> SignedCheckpoint:
        """Sign and record a checkpoint of the ledger as it is now."""
        with self._lock:
            return checkpoint_store(self.store, private_key, at=format_time(self._clock()))

    def replay(self, against: Bundle | None = None) -> ReplayReport:
        """Replay every recorded decision: verify the record, or preview `against`."""
        return replay(
            recorded_entries(self.store), lambda v: load_recorded_bundle(self.store, v), against
        )
