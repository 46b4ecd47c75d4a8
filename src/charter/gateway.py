"""The application service: decide, record, and keep the state decisions depend on.

This is the one place that ties the pure core to storage and the clock. It reads the
wall clock (or the clock it is given) and passes it in; it keeps each agent's budget usage
and the halts in force, rebuilt from the ledger when it opens, and records them beside
each decision so that replay sees exactly what the engine saw.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import random
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter.access import KeyRing, Principal
from charter.audit import load_recorded_bundle, recorded_entries
from charter.canonical import content_hash
from charter.errors import (
    Conflict,
    GrantRefused,
    IdempotencyConflict,
    LedgerError,
    NotFound,
    RequestInvalid,
)
from charter.grants import GrantTicket, grant_token, token_matches
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
from charter.policy import Bundle, decide, load_bundle, redact_request
from charter.records import (
    DecisionRecord,
    DecisionView,
    Redemption,
    conflict_message,
    payload_hash,
    state_of,
)
from charter.store import (
    GroupCommitWriter,
    IndexChange,
    LedgerStore,
    checkpoint_store,
    open_store,
    verify_store,
)
from charter.usage import BudgetSpending

__all__ = [
    "AUTONOMY_KIND",
    "DEPLOY_KIND",
    "HALT_KIND",
    "RESUME_KIND",
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

DEPLOY_KIND = "policy.deployed"
HALT_KIND = "halt"
RESUME_KIND = "resume"
AUTONOMY_KIND = "autonomy.changed"
GRANT_REDEEMED_KIND = "grant.redeemed"
GRANT_REFUSED_KIND = "grant.refused"
OUTCOME_KIND = "outcome"
ACCESS_DENIED_KIND = "access.denied"
AGENT_KIND = "agent.updated"


def system_clock() -> dt.datetime:
    """The wall clock in UTC; only edges call it, and pass the result inward."""
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, the ledger's timestamp form."""
    if moment.tzinfo is None:
        raise ValueError("times must carry a timezone; Charter never guesses one")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class _Pending:
    """A decision made and queued for the ledger, not yet durable."""

    request: ActionRequest
    decision_id: str
    at: str
    decision: Decision
    grant: GrantTicket | None
    future: Future[LedgerEntry]


def _keyed(
    request: ActionRequest | Mapping[str, Any], key: str | None
) -> ActionRequest | Mapping[str, Any]:
    """The request with `key` as its idempotency key (a key given beside it wins)."""
    if key is None:
        return request
    parsed = request if isinstance(request, ActionRequest) else ActionRequest.from_json(request)
    return dataclasses.replace(parsed, idempotency_key=key)


def _random_ids() -> Callable[[], str]:
    """Decision ids: 128 random bits each, from a generator seeded once by the OS.

    Asking the OS for every id costs ~100 µs on some virtual machines; ids must be
    unique, not secret (grants, which must be unguessable, use `secrets`).
    """
    rng = random.Random(os.urandom(32))
    return lambda: f"{rng.getrandbits(128):032x}"


class Charter:
    """Charter embedded in one process: decisions recorded in a local ledger.

    Args:
        policy: a bundle folder, or a compiled bundle.
        db: the SQLite ledger file (created and migrated when missing), or an open store.
        clock: where `now` comes from; tests and simulations pass their own.
        ids: makes decision ids; random UUIDs unless given.
    """

    def __init__(
        self,
        policy: str | Path | Bundle,
        db: str | Path | LedgerStore = "charter.db",
        *,
        clock: Callable[[], dt.datetime] = system_clock,
        ids: Callable[[], str] | None = None,
        grant_ttl: int = 300,
    ) -> None:
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
        self._inflight: dict[tuple[str, str], tuple[str, Future[DecisionRecord]]] = {}
        self._redeemed: set[str] = set()
        self._outcomes: set[str] = set()
        self.keys = KeyRing(self.store, clock)
        self._grant_secret = self.store.secret("grants")
        self._rebuild()
        self._writer = GroupCommitWriter(self.store)
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
            self._submit(NewEvent(DEPLOY_KIND, format_time(self._clock()), payload)).result()
            self._deployed = bundle.version

    def deploy(self, bundle: Bundle) -> None:
        """Make `bundle` the live policy; the change is recorded in the ledger."""
        with self._lock:
            self.bundle = bundle
            self._record_deploy(bundle)

    def close(self) -> None:
        """Flush pending ledger writes and close the store."""
        self._writer.close()
        self.store.close()

    def __enter__(self) -> Charter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- deciding ----------------------------------------------------------------------

    def _submit(self, event: NewEvent, index: IndexChange | None = None) -> Future[LedgerEntry]:
        return self._writer.submit(event, index)

    def _prepare(self, request: ActionRequest, now: dt.datetime, key: str | None) -> _Pending:
        """Decide and queue the ledger entry; the caller holds the lock."""
        bundle = self.bundle
        registered = self._registry.get(request.agent)
        profile = registered or bundle.agents.get(request.agent)
        plan = bundle.plan_for(request.agent, profile.role, request.action) if profile else None
        budgets = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        state = AgentState(
            profile=registered,
            autonomy=self._autonomy.get(request.agent),
            budgets=self._usage.state(request.agent, budgets, now),
            halts=tuple(self._halts.values()),
        )
        decision = decide(request, bundle, state, now)
        at = format_time(now)
        stored, redacted = redact_request(request.to_json(), bundle)
        decision_id = self._ids()
        payload: dict[str, Any] = {
            "decision_id": decision_id,
            "request": stored,
            "redacted": redacted,
            "state": state.to_json(),
            "budgets": [b for b, _ in budgets],
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
        index: dict[str, Any] = {
            "agent": request.agent,
            "action": request.action,
            "verdict": decision.verdict.value,
        }
        if key is not None:
            digest = payload_hash(request)
            payload["idempotency"] = {"key": key, "payload_hash": digest}
            index.update(idempotency_key=key, payload_hash=digest)
        grant = None
        if decision.verdict is Verdict.ALLOW:
            grant_id = f"g_{decision_id}"
            expires = format_time(now + dt.timedelta(seconds=self.grant_ttl))
            grant = GrantTicket(
                grant_id,
                grant_token(self._grant_secret, grant_id),
                expires,
                content_hash(request.args),
            )
            payload["grant"] = {"id": grant_id, "expires_at": expires, "args_hash": grant.args_hash}
            index.update(
                grant_id=grant_id, grant_args_hash=grant.args_hash, grant_expires_at=expires
            )
        # Recorded time must be what the engine saw: replay parses `at` back into `now`.
        now = dt.datetime.fromisoformat(at)
        if decision.verdict is Verdict.ALLOW and budgets:
            self._usage.add(request.agent, now, decision.risk, tuple(b for b, _ in budgets))
        future = self._submit(
            NewEvent(DECISION_KIND, at, payload), IndexChange(decision_id, index, insert=True)
        )
        return _Pending(request, decision_id, at, decision, grant, future)

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
        """
        return self.decide_many([_keyed(request, idempotency_key)], now=now)[0]

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
        settle = self._begin([_keyed(request, idempotency_key)], None)
        waited: Any = None
        failure: BaseException | None = None
        while True:
            try:
                future = settle.throw(failure) if failure is not None else settle.send(waited)
            except StopIteration as done:
                records: list[DecisionRecord] = done.value
                return records[0]
            try:
                # Shielded: a caller that goes away must not cancel a write already queued.
                waited, failure = await asyncio.shield(asyncio.wrap_future(future)), None
            except BaseException as exc:  # handed back to the generator, which cleans up
                waited, failure = None, exc

    def _begin(
        self,
        requests: Sequence[ActionRequest | Mapping[str, Any]],
        now: dt.datetime | None,
    ) -> Generator[Future[Any], Any, list[DecisionRecord]]:
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
                    self._earlier(request)
            for request in parsed:
                # Asked again per request: an earlier one in this batch may hold its key.
                found = self._earlier(request)
                if found is not None:
                    slots.append(found)
                    continue
                moment = now or self._clock()
                # Truncate to what the ledger keeps, so replay decides at the same instant.
                moment = dt.datetime.fromisoformat(format_time(moment))
                pending = self._prepare(request, moment, request.idempotency_key)
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
    ) -> Generator[Future[Any], Any, list[DecisionRecord]]:
        records: list[DecisionRecord] = []
        waiting = {position: (marker, waiter) for marker, waiter, position in owned}
        try:
            for position, slot in enumerate(slots):
                if isinstance(slot, _Pending):
                    entry = yield slot.future
                    record = DecisionRecord(
                        slot.decision_id,
                        entry.seq,
                        slot.at,
                        slot.request,
                        slot.decision,
                        slot.grant,
                    )
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

    def _earlier(self, request: ActionRequest) -> DecisionRecord | Future[DecisionRecord] | None:
        """The earlier decision under the request's idempotency key, if there is one.

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
        )

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
        with self._lock:
            moment = now or self._clock()
            at = format_time(moment)
            row = self.store.decision_row(grant_id=grant_id)
            refusal: tuple[str, str] | None = None
            if row is None or not token_matches(self._grant_secret, grant_id, token):
                refusal = ("grant_unknown", "no grant with this id and token")
            elif row["redeemed_seq"] is not None or grant_id in self._redeemed:
                refusal = ("grant_used", "the grant was already redeemed; it runs once")
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
            if refusal is not None:
                payload = {"grant_id": grant_id, "decision_id": decision_id, "code": refusal[0]}
                future = self._submit(NewEvent(GRANT_REFUSED_KIND, at, payload))
            else:
                self._redeemed.add(grant_id)
                payload = {"grant_id": grant_id, "decision_id": decision_id}
                future = self._submit(
                    NewEvent(GRANT_REDEEMED_KIND, at, payload),
                    IndexChange(str(decision_id), {}, seq_column="redeemed_seq"),
                )
        try:
            entry = future.result()
        finally:
            # Committed: the index now says it. Failed: nothing was redeemed after all.
            if refusal is None:
                self._redeemed.discard(grant_id)
        if refusal is not None:
            raise GrantRefused(*refusal)
        return Redemption(grant_id, str(decision_id), entry.seq, at)

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
        with self._lock:
            row = self.store.decision_row(decision_id=decision_id)
            if row is None:
                raise NotFound(f"no decision `{decision_id}`")
            if row["outcome_seq"] is not None or decision_id in self._outcomes:
                raise Conflict(f"decision `{decision_id}` already has an outcome")
            payload: dict[str, Any] = {
                "decision_id": decision_id,
                "success": bool(success),
                "error": error,
                "duration_ms": duration_ms,
                "result_digest": result_digest,
            }
            self._outcomes.add(decision_id)
            future = self._submit(
                NewEvent(OUTCOME_KIND, format_time(self._clock()), payload),
                IndexChange(
                    decision_id, {"outcome_success": bool(success)}, seq_column="outcome_seq"
                ),
            )
        try:
            entry = future.result()
        finally:  # committed (the index says it) or failed (nothing recorded): forget it
            self._outcomes.discard(decision_id)
        return {"seq": entry.seq, "at": entry.at, **payload}

    # -- keys --------------------------------------------------------------------------

    def create_key(
        self, role: str, *, agent: str | None = None, label: str = ""
    ) -> tuple[str, str]:
        """Create an API key; returns (key id, secret). See `KeyRing.create`."""
        return self.keys.create(role, agent=agent, label=label)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal a secret belongs to, or None. See `KeyRing.authenticate`."""
        return self.keys.authenticate(secret)

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
        self._submit(NewEvent(ACCESS_DENIED_KIND, format_time(self._clock()), payload)).result()

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
            self._submit(NewEvent(AGENT_KIND, format_time(self._clock()), payload)).result()
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
            self._submit(NewEvent(AUTONOMY_KIND, format_time(self._clock()), payload)).result()
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
            self._submit(NewEvent(HALT_KIND, format_time(self._clock()), payload)).result()
            self._halts[(scope, target)] = Halt(scope, target, reason)

    def resume(self, scope: str = "all", target: str | None = None, *, by: str) -> None:
        """Lift a halt; recorded in the ledger."""
        with self._lock:
            payload = {"scope": scope, "target": target, "by": by}
            self._submit(NewEvent(RESUME_KIND, format_time(self._clock()), payload)).result()
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
