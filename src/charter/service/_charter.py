"""`Charter`: the public face of the service, delegating to one collaborator per job.

The jobs and where they live: deciding (`_deciding`), grants and outcomes (`_grants`),
approvals and their timers (`_approvals`), reading (`_queries`), the fleet's controls
(`_fleet`), keys (`KeyRing`) and audit (`_audit`). They share one `Session`; this class
only opens it, wires them together and closes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter.controls import ServiceState
from charter.ledger import LedgerEntry, SignedCheckpoint, VerifyReport
from charter.ledger._replay import ReplayReport, replay
from charter.model import ActionRequest, AgentProfile, Halt
from charter.policy import Bundle, WebhookSpec, load_bundle
from charter.service._access import KeyRing, Principal
from charter.service._approvals import Approvals
from charter.service._audit import load_recorded_bundle, recorded_entries
from charter.service._clock import format_time, random_ids, system_clock
from charter.service._deciding import Deciding, keyed, refused_or
from charter.service._desk import ApprovalDesk
from charter.service._drive import run, run_async
from charter.service._fleet import Fleet
from charter.service._grants import Grants
from charter.service._queries import Queries
from charter.service._records import ApprovalView, DecisionRecord, DecisionView, Redemption
from charter.service._session import Session, Settings, Shared
from charter.store import (
    GroupCommitWriter,
    LedgerStore,
    LedgerWriter,
    ProcessCommitWriter,
    checkpoint_store,
    open_store,
    verify_store,
)

__all__ = ["Charter"]


def _opening_state(store: LedgerStore, bundle: Bundle) -> ServiceState:
    """The state the ledger's history leaves, folded from its entries.

    Decisions older than the longest budget window of the live bundle can never count
    again: the fold skips them undecoded, so opening a large ledger is quick.
    """
    head = store.head().seq
    cutoff = ""
    if head:
        last = next(iter(store.entries(after=head - 1)))
        horizon = max((b.window_seconds for b in bundle.spec.budgets), default=0)
        cutoff = format_time(dt.datetime.fromisoformat(last.at) - dt.timedelta(seconds=horizon))
    return ServiceState.fold(store.entries(), budget_cutoff=cutoff)


class Charter:
    """Charter embedded in one process: decisions recorded in a local ledger.

    Args:
        policy: a bundle folder, or a compiled bundle.
        db: the SQLite ledger file (created and migrated when missing), or an open store.
        clock: where `now` comes from; tests and simulations pass their own.
        ids: makes decision ids; random, time-ordered ids unless given.
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
        bundle = policy if isinstance(policy, Bundle) else load_bundle(policy)
        store: LedgerStore = db if not isinstance(db, str | Path) else open_store(db)
        try:
            keys, secret, desk = KeyRing(store, clock), store.secret("grants"), ApprovalDesk(store)
            state = _opening_state(store, bundle)
            committer: LedgerWriter = (
                ProcessCommitWriter(store) if writer == "process" else GroupCommitWriter(store)
            )
        except BaseException:
            if db is not store:  # opened here: closed here
                store.close()
            raise
        s = self._session = Session(
            store=store,
            writer=committer,
            clock=clock,
            ids=ids or random_ids(),
            bundle=bundle,
            state=state,
            desk=desk,
            keys=keys,
            grant_secret=secret,
            settings=Settings(grant_ttl, idempotency_ttl, max_pending),
        )
        self._queries = Queries(s)
        self._deciding = Deciding(s, self._queries)
        self._approvals = Approvals(s, self._queries, self._deciding)
        self._grants = Grants(s, self._approvals)
        self._fleet = Fleet(s)
        try:
            self._fleet.deploy(bundle)
        except BaseException:
            self.close()
            raise

    # -- what embedding code reads and sets --------------------------------------------

    #: The live policy bundle.
    bundle: Shared[Bundle] = Shared()
    #: The ledger store.
    store: Shared[LedgerStore] = Shared()
    #: The API keys.
    keys: Shared[KeyRing] = Shared()
    #: Where approval notifications go (the server sets a `WebhookNotifier`).
    notifier: Shared[Any] = Shared(writable=True)
    #: Seconds a grant stays redeemable.
    grant_ttl: Shared[int] = Shared(settings=True, writable=True)
    #: Seconds an idempotency key is kept.
    idempotency_ttl: Shared[int] = Shared(settings=True, writable=True)
    #: How many approvals one agent may have pending.
    max_pending: Shared[int] = Shared(settings=True, writable=True)

    @property
    def _writer(self) -> LedgerWriter:  # tests reach the writer to stop or kill it
        return self._session.writer

    # -- lifecycle ---------------------------------------------------------------------

    def deploy(self, bundle: Bundle) -> None:
        """Make `bundle` the live policy; the change is recorded in the ledger."""
        with self._session.lock:
            self._fleet.deploy(bundle)

    def writer_problem(self) -> str | None:
        """Why the ledger writer cannot take appends now, or None when it can."""
        return self._session.writer.problem()

    def close(self) -> None:
        """Stop the timers, flush pending ledger writes and close the store."""
        self._approvals.stop_timers()
        self._session.writer.close()
        self._session.store.close()

    def __enter__(self) -> Charter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- deciding ----------------------------------------------------------------------

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
        return refused_or(self._deciding.decide_many([keyed(request, idempotency_key)], now)[0])

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
        return self._deciding.decide_many(requests, now)

    async def decide_async(
        self, request: ActionRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> DecisionRecord:
        """`decide` for an event loop: decides at once, awaits durability without a thread.

        The decision itself is CPU work of tens of microseconds and runs on the caller's
        thread; waiting for the ledger commit is awaited, so one event loop can have many
        decisions in one group commit without a worker thread each.
        """
        return await self._deciding.decide_async(keyed(request, idempotency_key))

    # -- grants and outcomes -----------------------------------------------------------

    def redeem(
        self, grant_id: str, token: str, args: Mapping[str, Any], *, now: dt.datetime | None = None
    ) -> Redemption:
        """Redeem a grant once, for exactly the arguments that were decided on.

        Raises:
            GrantRefused: unknown grant or wrong token, already used, expired, or other
                arguments; the refusal is recorded in the ledger.
        """
        return run(self._grants.redeem(grant_id, token, args, now, asynchronous=False))

    async def redeem_async(
        self, grant_id: str, token: str, args: Mapping[str, Any], *, now: dt.datetime | None = None
    ) -> Redemption:
        """`redeem` for an event loop: checks at once, awaits the commit without a thread."""
        return await run_async(self._grants.redeem(grant_id, token, args, now, asynchronous=True))

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
        flow = self._grants.record_outcome(
            decision_id,
            success=success,
            error=error,
            duration_ms=duration_ms,
            result_digest=result_digest,
            asynchronous=False,
        )
        return run(flow)

    async def record_outcome_async(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None = None,
        duration_ms: float | None = None,
        result_digest: str | None = None,
    ) -> dict[str, Any]:
        """`record_outcome` for an event loop: awaits the commit without a thread."""
        flow = self._grants.record_outcome(
            decision_id,
            success=success,
            error=error,
            duration_ms=duration_ms,
            result_digest=result_digest,
            asynchronous=True,
        )
        return await run_async(flow)

    # -- approvals ---------------------------------------------------------------------

    def get_approval(self, approval_id: str) -> ApprovalView | None:
        """An approval with its decision, the agent's context and its runbook."""
        return self._queries.get_approval(approval_id)

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
        return self._queries.approvals(
            state=state, group=group, agent=agent, action=action, limit=limit, offset=offset
        )

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
        return self._approvals.claim(approval_id, reviewer)

    def approve(self, approval_id: str, reviewer: Principal, *, note: str = "") -> ApprovalView:
        """Approve an approval's current arguments; the quorum completing issues the grant.

        Raises:
            NotFound: no such approval.
            Forbidden: the key cannot review, or its groups are not the route's.
            Conflict: the approval is settled, or this person has already approved it.
        """
        return self._approvals.approve(approval_id, reviewer, note)

    def deny(self, approval_id: str, reviewer: Principal, *, reason: str) -> ApprovalView:
        """Refuse an approval with a reason the agent receives.

        Raises:
            NotFound, Forbidden, Conflict: as for `approve`.
            RequestInvalid: no reason.
        """
        return self._approvals.deny(approval_id, reviewer, reason)

    def modify(
        self, approval_id: str, reviewer: Principal, args: Mapping[str, Any], *, note: str = ""
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
        return self._approvals.modify(approval_id, reviewer, args, note)

    def similar_approvals(self, approval_id: str) -> list[ApprovalView]:
        """Pending approvals of the same agent, action and argument shape as this one."""
        return self._queries.similar(approval_id)

    def decide_batch(
        self, approval_ids: Sequence[str], reviewer: Principal, *, approve: bool, reason: str = ""
    ) -> list[ApprovalView]:
        """Approve or deny several similar approvals at once: all of them, or none.

        Every approval must be pending, of one shape (same agent, action and argument
        keys and types), and actionable by the reviewer; otherwise nothing is done.
        """
        return self._approvals.decide_batch(approval_ids, reviewer, approve=approve, reason=reason)

    def fire_due(self, now: dt.datetime | None = None) -> list[ApprovalView]:
        """Fire every deadline that has passed: next tier, or expired (refused).

        The server's timer thread calls this; after a restart the first call fires
        everything that fell due while Charter was down, once each.
        """
        return self._approvals.fire_due(now)

    def start_timers(self, interval: float = 0.5) -> None:
        """Run approval deadlines in a background thread until `stop_timers` or `close`."""
        self._approvals.start_timers(interval)

    def stop_timers(self) -> None:
        """Stop the timer thread, if running."""
        self._approvals.stop_timers()

    def watch(self, decision_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (in a Charter thread) once the decision's approval settles.

        Returns a function that cancels the watch. Check the decision's state after
        registering: it may have settled before.
        """
        return self._session.desk.watch(decision_id, callback)

    def wait_decision(self, decision_id: str, timeout: float) -> DecisionView | None:
        """The decision once settled, or as it stands after `timeout` seconds.

        Woken at once when this process settles it; read again every second too, for an
        approval settled by another process on the same ledger. None: no such decision.
        """
        return self._approvals.wait_decision(decision_id, timeout)

    def autonomy_preview(self, approval_id: str) -> list[dict[str, Any]]:
        """What the live policy would decide for this request at each autonomy level."""
        return self._queries.autonomy_preview(approval_id)

    def webhooks(self, route: str) -> tuple[WebhookSpec, ...]:
        """The webhooks of a route in the live bundle (read per call: deploys apply)."""
        return self.bundle.webhooks(route)

    def record_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Append an event to the ledger without waiting for it (webhook deliveries)."""
        self._fleet.record_event(kind, payload)

    # -- reading -----------------------------------------------------------------------

    def get_decision(self, decision_id: str) -> DecisionView | None:
        """A recorded decision with its state now (allowed, redeemed, executed, ...)."""
        return self._queries.get_decision(decision_id)

    def recent_decisions(
        self, agent: str, action: str, *, limit: int = 5, before_seq: int | None = None
    ) -> list[DecisionView]:
        """The agent's latest decisions on this action, newest first, with outcomes."""
        return self._queries.decisions(
            agent=agent, action=action, before_seq=before_seq, limit=limit
        )

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
        return self._queries.decisions(
            agent=agent,
            action=action,
            verdict=verdict,
            since=since,
            until=until,
            before_seq=before_seq,
            limit=limit,
        )

    def ledger_page(self, after: int = 0, limit: int = 100) -> list[LedgerEntry]:
        """Up to `limit` entries after `after`, in order."""
        return self._queries.ledger_page(after, limit)

    # -- keys --------------------------------------------------------------------------

    def create_key(
        self, role: str, *, agent: str | None = None, label: str = "", groups: Sequence[str] = ()
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
        self._fleet.record_access_denied(principal, reason, details)

    # -- the fleet ---------------------------------------------------------------------

    def get_agent(self, agent_id: str) -> AgentProfile | None:
        """The agent as decisions see it: the registry's entry, else the bundle's."""
        return self._fleet.get_agent(agent_id)

    def agents(self) -> list[AgentProfile]:
        """Every known agent, registry entries in place of the bundle's, by id."""
        return self._fleet.agents()

    def put_agent(self, profile: AgentProfile, *, by: str) -> AgentProfile:
        """Register or update an agent; recorded, and used by every later decision.

        Raises:
            RequestInvalid: the role or autonomy level is not defined by the live bundle.
        """
        return self._fleet.put_agent(profile, by)

    def set_autonomy(self, agent: str, level: int | None, *, reason: str, by: str) -> None:
        """Override an agent's autonomy level (None restores the bundle's); recorded.

        Raises:
            RequestInvalid: the agent or level is not defined in the live bundle.
        """
        self._fleet.set_autonomy(agent, level, reason, by)

    def autonomy(self, agent: str) -> int | None:
        """The agent's autonomy level in force: an override, else the bundle's."""
        return self._fleet.autonomy(agent)

    def halt(self, scope: str = "all", target: str | None = None, *, reason: str, by: str) -> None:
        """Stop every request that `scope`/`target` covers until `resume` is called."""
        self._fleet.halt(scope, target, reason, by)

    def resume(self, scope: str = "all", target: str | None = None, *, by: str) -> None:
        """Lift a halt; recorded in the ledger."""
        self._fleet.resume(scope, target, by)

    @property
    def halts(self) -> tuple[Halt, ...]:
        """The halts in force."""
        return self._fleet.halts

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
        with self._session.lock:
            return checkpoint_store(self.store, private_key, at=self._session.stamp())

    def replay(self, against: Bundle | None = None) -> ReplayReport:
        """Replay every recorded decision: verify the record, or preview `against`."""
        store = self.store
        return replay(recorded_entries(store), lambda v: load_recorded_bundle(store, v), against)
