"""`Charter`: the public face of the service, delegating to one collaborator per job.

The jobs and where they live: deciding (`_deciding`), grants and outcomes (`_grants`),
approvals and their timers (`_approvals`), reading (`_queries`), the fleet's controls
(`_fleet`), keys (`KeyRing`) and audit (`_audit`). They share one `Session`; this class
only opens it, wires them together and closes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from charter.controls import ServiceState
from charter.ledger import SignedCheckpoint, VerifyReport
from charter.ledger._replay import ReplayReport
from charter.model import ActionRequest, Halt
from charter.policy import Bundle, WebhookSpec, load_bundle
from charter.service._access import KeyRing
from charter.service._approvals import Approvals
from charter.service._audit import replay_store
from charter.service._breakers import Breakers
from charter.service._clock import format_time, random_ids, system_clock
from charter.service._deciding import Deciding, keyed, refused_or
from charter.service._desk import ApprovalDesk
from charter.service._drive import run, run_async
from charter.service._fleet import Fleet
from charter.service._follow import Follower
from charter.service._grants import Grants
from charter.service._monitors import Monitors
from charter.service._queries import Queries
from charter.service._records import DecisionRecord, Redemption
from charter.service._session import Session, Settings, Shared, delegate
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


def _opening_state(store: LedgerStore, bundle: Bundle, head: int) -> ServiceState:
    """The state the ledger's history leaves through `head`, folded from its entries.

    Decisions older than the longest budget window of the live bundle can never count
    again: the fold skips them undecoded, so opening a large ledger is quick. What lands
    after `head` meanwhile is the follower's to fold (decisions counted once).
    """
    cutoff = ""
    if head:
        last = next(iter(store.entries(after=head - 1)))
        horizon = max((b.window_seconds for b in bundle.spec.budgets), default=0)
        cutoff = format_time(dt.datetime.fromisoformat(last.at) - dt.timedelta(seconds=horizon))
    return ServiceState.fold(store.entries(limit=head), budget_cutoff=cutoff)


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
            # The fold stops here and the follower starts here: what other processes
            # append meanwhile is read once.
            folded_through = store.head().seq
            state = _opening_state(store, bundle, folded_through)
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
        self._breakers = Breakers(s)
        self._grants = Grants(s, self._approvals, self._breakers)
        self._fleet = Fleet(s)
        self._follower = Follower(s, folded_through)
        self._watching: Monitors | None = None
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
        if self._watching is not None:
            self._watching.stop()
        self.stop_timers()
        self._follower.stop()
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
        keyed_request = keyed(request, idempotency_key)
        return refused_or(self._deciding.decide_many([keyed_request], now=now)[0])

    decide_many = delegate("_deciding", Deciding.decide_many)

    async def decide_async(
        self, request: ActionRequest | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> DecisionRecord:
        """`decide` for an event loop: decides at once, awaits durability without a thread.

        The decision itself is CPU work of tens of microseconds and runs on the caller's
        thread; waiting for the ledger commit is awaited, so one event loop can have many
        decisions in one group commit without a worker thread each.
        """
        return await self._deciding.decide_async(keyed(request, idempotency_key))

    # -- grants and outcomes: one flow each, driven blocking or awaited ------------------

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

    # -- approvals -----------------------------------------------------------------------

    claim = delegate("_approvals", Approvals.claim)
    approve = delegate("_approvals", Approvals.approve)
    deny = delegate("_approvals", Approvals.deny)
    modify = delegate("_approvals", Approvals.modify)
    decide_batch = delegate("_approvals", Approvals.decide_batch)
    fire_due = delegate("_approvals", Approvals.fire_due)
    fire_overdue = delegate("_breakers", Breakers.fire_overdue)
    circuits = delegate("_breakers", Breakers.circuits)

    # -- monitors ----------------------------------------------------------------------

    @property
    def monitors(self) -> Monitors:
        """The rolling figures, alerts and autonomy controller (built on first use).

        Building it folds the monitors' horizon of the ledger once; a process that never
        asks for figures never pays for it.
        """
        if self._watching is None:
            self._watching = Monitors(self._session)
        return self._watching

    def start_monitors(self, interval: float = 1.0, *, lead: bool = True) -> None:
        """Fold the ledger into the figures every `interval` seconds, in a thread.

        With `lead`, the alert and autonomy rules are judged too whenever this process
        leads (what `charter serve` runs).
        """
        self.monitors.start(interval, lead=lead)

    def start_timers(self, interval: float = 0.5) -> None:
        """Run approval deadlines and overdue outcomes in background threads.

        They run until `stop_timers` or `close`.
        """
        self._approvals.start_timers(interval)
        self._breakers.start_timers(interval)

    def stop_timers(self) -> None:
        """Stop the timer threads, if running."""
        self._approvals.stop_timers()
        self._breakers.stop_timers()

    #: Fold what other processes append (halts, autonomy, agents, key revocations), once.
    catch_up = delegate("_follower", Follower.catch_up)
    #: Follow the ledger in a background thread (what `charter serve` runs).
    start_following = delegate("_follower", Follower.start)
    stop_following = delegate("_follower", Follower.stop)
    watch = delegate("_approvals", Approvals.watch)
    wait_decision = delegate("_approvals", Approvals.wait_decision)
    record_event = delegate("_fleet", Fleet.record_event)

    def webhooks(self, route: str) -> tuple[WebhookSpec, ...]:
        """The webhooks of a route in the live bundle (read per call: deploys apply)."""
        return self.bundle.webhooks(route)

    # -- reading ---------------------------------------------------------------------------

    get_decision = delegate("_queries", Queries.get_decision)
    recent_decisions = delegate("_queries", Queries.recent_decisions)
    search_decisions = delegate("_queries", Queries.search_decisions)
    get_approval = delegate("_queries", Queries.get_approval)
    approvals = delegate("_queries", Queries.approvals)
    count_approvals = delegate("_queries", Queries.count_approvals)
    similar_approvals = delegate("_queries", Queries.similar_approvals)
    autonomy_preview = delegate("_queries", Queries.autonomy_preview)
    ledger_page = delegate("_queries", Queries.ledger_page)

    # -- keys --------------------------------------------------------------------------------

    create_key = delegate("keys", KeyRing.create)
    authenticate = delegate("keys", KeyRing.authenticate)
    principal = delegate("keys", KeyRing.principal)
    list_keys = delegate("keys", KeyRing.list)
    has_keys = delegate("keys", KeyRing.any_active)
    revoke_key = delegate("keys", KeyRing.revoke)
    record_access_denied = delegate("_fleet", Fleet.record_access_denied)

    # -- the fleet ---------------------------------------------------------------------------

    get_agent = delegate("_fleet", Fleet.get_agent)
    agents = delegate("_fleet", Fleet.agents)
    put_agent = delegate("_fleet", Fleet.put_agent)
    set_autonomy = delegate("_fleet", Fleet.set_autonomy)
    autonomy = delegate("_fleet", Fleet.autonomy)
    halt = delegate("_fleet", Fleet.halt)
    resume = delegate("_fleet", Fleet.resume)

    @property
    def halts(self) -> tuple[Halt, ...]:
        """The halts in force."""
        return self._fleet.halts

    # -- audit -------------------------------------------------------------------------------

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
        """Replay every recorded decision: verify the record, or preview `against`.

        Verifying also checks each decision's recorded state against the ledger before it
        (the report's `state`; see `check_recorded_state`).
        """
        return replay_store(self.store, against)
