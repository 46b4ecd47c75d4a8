"""Deciding: idempotency, in-flight dedup, the decision entry and the approval it opens.

One request's way: parse (once, at the edge), look for an earlier decision under its
idempotency key (in flight in this process, or in the index), decide under the lock with
the state the ledger's fold holds, queue the entry (with the approval it opens, in the
same transaction), and return once it is durable. Blocking and async callers share all of
it; only how they wait differs (`charter.service._drive`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from charter import approvals as machine
from charter.canonical import content_hash
from charter.errors import IdempotencyConflict, RequestInvalid, TooManyPending
from charter.ledger import LedgerEntry, NewEvent, events
from charter.model import ActionRequest, AgentProfile, Decision, Verdict, check_idempotency_key
from charter.policy import decide, redact_request
from charter.service._clock import as_recorded, format_time
from charter.service._desk import approval_row
from charter.service._drive import Flow, run, run_async
from charter.service._queries import Queries
from charter.service._records import DecisionRecord, conflict_message, payload_hash
from charter.service._session import AnyFuture, Session
from charter.service._tickets import GrantTicket
from charter.store import IndexChange, SetOnceConflict

__all__ = ["Deciding"]


@dataclass(frozen=True, slots=True)
class _Pending:
    """A decision made and queued for the ledger, not yet durable."""

    request: ActionRequest
    decision_id: str
    at: str
    decision: Decision
    grant: GrantTicket | None
    future: AnyFuture
    approval: dict[str, Any] | None = None
    #: The budgets its allow was counted against (given back if it is never recorded).
    spent: tuple[str, ...] = ()


_Slot = _Pending | DecisionRecord | Future[DecisionRecord]
_Owned = list[tuple[tuple[str, str], Future[DecisionRecord], int]]


def keyed(
    request: ActionRequest | Mapping[str, Any], key: str | None
) -> ActionRequest | Mapping[str, Any]:
    """The request with `key` as its idempotency key (a key given beside it wins).

    Raises:
        RequestInvalid: `key` is not 1 to `MAX_ID` printable characters.
    """
    if key is None:
        return request
    check_idempotency_key(key)
    parsed = request if isinstance(request, ActionRequest) else ActionRequest.from_json(request)
    if parsed.idempotency_key == key:
        return parsed
    return dataclasses.replace(parsed, idempotency_key=key)


def refused_or(record: DecisionRecord) -> DecisionRecord:
    """The record, unless its approval was refused at the pending cap: then raise."""
    approval = record.approval
    if approval is not None and approval.get("code") == "too_many_pending":
        raise TooManyPending(str(approval["reason"]), record.id)
    return record


def _provenance(request: ActionRequest, profile: AgentProfile | None) -> dict[str, Any]:
    """Who asked, as the decision entry records it."""
    return {
        "agent": request.agent,
        "role": profile.role if profile else None,
        "owner": profile.owner if profile else None,
        "model_id": profile.model_id if profile else None,
        "model_version": profile.model_version if profile else None,
        "data_sources": [s.get("name") for s in request.context.get("data_sources", [])],
        "rationale": request.context.get("rationale"),
    }


class Deciding:
    """Decides requests and records them; the one writer of decision entries."""

    def __init__(self, session: Session, queries: Queries) -> None:
        self._s = session
        self._queries = queries
        self._inflight: dict[tuple[str, str], tuple[str, Future[DecisionRecord]]] = {}

    # -- the entry points --------------------------------------------------------------

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
        return run(self._begin(requests, now))

    async def decide_async(self, request: ActionRequest | Mapping[str, Any]) -> DecisionRecord:
        """Decide at once and await durability without a thread; see `Charter`."""
        parsed = request if isinstance(request, ActionRequest) else ActionRequest.from_json(request)
        if parsed.idempotency_key is None:
            # No earlier decision can answer it and no later request waits on it, so it
            # skips the settling flow and its bookkeeping: ~5 µs of the loop's CPU each.
            with self._s.lock:
                slot = self.prepare(parsed, as_recorded(self._s.clock()), None, asynchronous=True)
            try:
                if isinstance(slot.future, asyncio.Future):
                    entry = await slot.future  # the writer commits it even if cancelled
                else:
                    entry = await asyncio.shield(asyncio.wrap_future(slot.future))
            except BaseException:
                self._unopened(slot)
                raise
            return refused_or(self._recorded(slot, entry))
        records = await run_async(self._begin([parsed], None, asynchronous=True))
        return refused_or(records[0])

    # -- deciding under the lock -------------------------------------------------------

    def prepare(
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
        s = self._s
        bundle, state = s.bundle, s.state
        profile = state.profile(request.agent, bundle.agents)
        plan = bundle.plan_for(request.agent, profile.role, request.action) if profile else None
        budgets = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        seen = state.agent_state(
            request.agent,
            budgets,
            now,
            action=request.action,
            breakers=plan.breakers if plan else (),
        )
        decision = decide(request, bundle, seen, now)
        verdict = decision.verdict
        at = format_time(now)
        stored, redacted = redact_request(request.to_json(), bundle)
        decision_id = s.ids()
        counted = [b for b, _ in budgets] if modifies is None else []
        index: dict[str, Any] = {
            "agent": request.agent,
            "action": request.action,
            "verdict": verdict.value,
        }
        idempotency = None
        if key is not None:
            idempotency = (key, payload_hash(request))
            index.update(idempotency_key=key, payload_hash=idempotency[1])
        grant = None
        allowed = verdict is Verdict.ALLOW
        if allowed and modifies is None:
            grant = s.issue(decision_id, content_hash(request.args), now)
            index.update(grant.index_values())
        if allowed and counted:
            # Recorded time must be what the engine saw: replay parses `at` back into `now`.
            state.spend(request.agent, dt.datetime.fromisoformat(at), decision.risk, counted)
            s.own_spending.add(decision_id)
        if allowed and seen.breakers and modifies is None:
            # a half-open breaker's trial: counted now, so the next decision sees one fewer
            state.breakers.note_trials(decision_id, decision.to_json(), seen.to_json())
            s.own_spending.add(decision_id)
        event = events.decision(
            at,
            decision_id,
            request=stored,
            redacted=redacted,
            state=seen.to_json(),
            budgets=counted,
            provenance=_provenance(request, profile),
            verdict=decision.to_json(),
            modifies=modifies,
            idempotency=idempotency,
            grant=grant.to_record() if grant is not None else None,
        )
        # Checked again where the row is written, under the ledger's sequencer: another
        # process may be deciding under the same key right now.
        since = None
        if key is not None:
            since = format_time(now - dt.timedelta(seconds=s.settings.idempotency_ttl))
        change = IndexChange(decision_id, index, insert=True, key_since=since)
        needs_people = not allowed and verdict in (Verdict.REQUIRE_APPROVAL, Verdict.ESCALATE)
        if not needs_people or modifies is not None:
            future = (
                s.writer.submit_async(event, change)
                if asynchronous
                else s.writer.submit(event, change, awaited=awaited)
            )
            spent = tuple(counted) if allowed else ()
            return _Pending(request, decision_id, at, decision, grant, future, spent=spent)
        return self._open(request, decision, event, change, profile, asynchronous, awaited)

    def _open(
        self,
        request: ActionRequest,
        decision: Decision,
        event: NewEvent,
        change: IndexChange,
        profile: AgentProfile | None,
        asynchronous: bool,
        awaited: bool,
    ) -> _Pending:
        """Queue a decision that needs people with its approval opened, or refused.

        The two entries go in one transaction: an approval is never opened without its
        decision, and a decision that needs people never lacks its approval.
        """
        s = self._s
        decision_id, at = change.decision_id, event.at
        refusal: str | None = None
        if decision.route is None:
            refusal = "no escalation route applies: nobody could approve it"
        elif s.desk.pending_for(request.agent) >= s.settings.max_pending:
            refusal = (
                f"agent `{request.agent}` already has {s.settings.max_pending} approvals "
                "pending (the per-agent cap); decide or deny those first"
            )
        if refusal is not None:
            code = "too_many_pending" if decision.route is not None else "no_route"
            refused = events.approval_refused(at, decision_id, code, refusal)
            values = {**change.values, "approval_state": "refused"}
            futures = s.submit_many(
                [(event, dataclasses.replace(change, values=values)), (refused, None)],
                asynchronous=asynchronous,
                awaited=awaited,
            )
            summary = {"id": None, "state": "refused", **refused.payload}
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
        opened = IndexChange(decision_id, {}, approval=approval_row(step.approval))
        futures = s.submit_many(
            [
                (event, dataclasses.replace(change, values=values)),
                (NewEvent(step.kind, at, step.payload), opened),
            ],
            asynchronous=asynchronous,
            awaited=awaited,
        )
        s.desk.put(step.approval)
        summary = {
            "id": step.approval.id,
            "state": "pending",
            "deadline": step.approval.deadline,
            "route": decision.route.id,
        }
        return _Pending(request, decision_id, at, decision, None, futures[0], summary)

    def refuse_if_denied(self, request: ActionRequest, now: dt.datetime) -> None:
        """Refuse a modification the live policy would deny, recording nothing."""
        s = self._s
        profile = s.state.profile(request.agent, s.bundle.agents)
        plan = s.bundle.plan_for(request.agent, profile.role, request.action) if profile else None
        budgets = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        seen = s.state.agent_state(
            request.agent,
            budgets,
            now,
            action=request.action,
            breakers=plan.breakers if plan else (),
        )
        decision = decide(request, s.bundle, seen, now)
        if decision.verdict is not Verdict.DENY:
            return
        contract = [r for r in decision.reasons if r.code == "contract"]
        if contract:
            raise RequestInvalid("args", contract[0].message)
        why = "; ".join(r.message for r in decision.reasons if r.code != "risk_factor")
        raise RequestInvalid("args", f"the policy denies the modified request: {why}")

    # -- idempotency and settling ------------------------------------------------------

    def _begin(
        self,
        requests: Sequence[ActionRequest | Mapping[str, Any]],
        now: dt.datetime | None,
        *,
        asynchronous: bool = False,
    ) -> Flow[list[DecisionRecord]]:
        """Decide under the lock, then settle: a flow that yields each future to await."""
        s = self._s
        parsed = [
            r if isinstance(r, ActionRequest) else ActionRequest.from_json(r) for r in requests
        ]
        slots: list[_Slot] = []
        owned: _Owned = []
        with s.lock:
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
                # Truncate to what the ledger keeps, so replay decides at the same instant.
                moment = as_recorded(now or s.clock())
                pending = self.prepare(
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

    def _settle(self, slots: list[_Slot], owned: _Owned) -> Flow[list[DecisionRecord]]:
        records: list[DecisionRecord] = []
        waiting = {position: (marker, waiter) for marker, waiter, position in owned}
        try:
            for position, slot in enumerate(slots):
                if isinstance(slot, _Pending):
                    try:
                        entry = yield slot.future
                    except SetOnceConflict as refused:
                        self._unopened(slot)
                        record = self._winner(slot, refused)
                    except BaseException:
                        self._unopened(slot)
                        raise
                    else:
                        record = self._recorded(slot, entry)
                    if position in waiting:  # later requests (in any thread) wait on this one
                        marker, waiter = waiting.pop(position)
                        waiter.set_result(record)
                        with self._s.lock:
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
                with self._s.lock:
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
            self._s.notify(events.APPROVAL_OPENED, slot.approval["id"])
        return record

    def _winner(self, slot: _Pending, refused: SetOnceConflict) -> DecisionRecord:
        """The decision another process recorded first under this one's idempotency key.

        Raises:
            IdempotencyConflict: the winner was a different request under the same key.
            SetOnceConflict: `refused`, when no other decision holds the key.
        """
        request, key = slot.request, slot.request.idempotency_key
        if key is None:
            raise refused
        row = self._s.store.decision_row(agent=request.agent, idempotency_key=key)
        if row is None:
            raise refused
        if row["payload_hash"] != payload_hash(request):
            raise IdempotencyConflict(conflict_message(key))
        return self._queries.record_of(row, request, replayed=True)

    def _unopened(self, slot: _Pending) -> None:
        """Undo what a decision that was never committed did in memory.

        Nobody can act on its approval, and its allow spent no budget: the state must
        stay what the ledger's fold gives, or the next decision would record (and replay
        would find) more spending than the ledger holds.
        """
        s = self._s
        with s.lock:
            if slot.approval is not None and slot.approval["id"] is not None:
                s.desk.forget(slot.approval["id"])
            if slot.spent:
                moment = dt.datetime.fromisoformat(slot.at)
                s.state.unspend(slot.request.agent, moment, slot.decision.risk, slot.spent)
                s.own_spending.discard(slot.decision_id)

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
        s = self._s
        digest = payload_hash(request)
        inflight = self._inflight.get((request.agent, key))
        if inflight is not None:
            if inflight[0] != digest:
                raise IdempotencyConflict(conflict_message(key))
            return inflight[1]
        row = s.store.decision_row(agent=request.agent, idempotency_key=key)
        if row is None:
            return None
        horizon = (now or s.clock()) - dt.timedelta(seconds=s.settings.idempotency_ttl)
        if row["at"] < format_time(horizon):  # one RFC 3339 UTC form: text order is time order
            return None
        if row["payload_hash"] != digest:
            raise IdempotencyConflict(conflict_message(key))
        return self._queries.record_of(row, request, replayed=True)
