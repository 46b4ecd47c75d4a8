"""People in the loop: claim, approve, deny, modify, deadlines, and waiting for them.

Each step is the pure state machine's (`charter.approvals`) answer, applied here: its
ledger event and the rows it changes commit together, the desk (the approvals in memory)
takes the new state, and whoever waits on the decision is told once it is durable. A
modification is decided again by `Deciding`, which this module is given: deciding opens
approvals and approvals re-decide, and the shared session keeps that from being a
circle of imports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from charter import approvals as machine
from charter.approvals import Approval, ApprovalState, Reviewer, Step
from charter.errors import Conflict, RequestInvalid
from charter.ledger import LedgerEntry, NewEvent, events
from charter.model import ActionRequest, json_value
from charter.service._access import Principal
from charter.service._clock import format_time
from charter.service._deciding import Deciding
from charter.service._desk import SETTLED_STATES, approval_row
from charter.service._queries import Queries
from charter.service._records import ApprovalView, DecisionView
from charter.service._session import Session
from charter.service._ticker import Ticker
from charter.store import IndexChange, SetOnceConflict

__all__ = ["Approvals"]


def _reviewer(principal: Principal) -> Reviewer:
    return Reviewer(principal.identity, principal.groups, principal.key_id, principal.role)


class Approvals:
    """Reviewers' steps on approvals, the deadline timers, and waiting for a settlement."""

    def __init__(self, session: Session, queries: Queries, deciding: Deciding) -> None:
        self._s = session
        self._queries = queries
        self._deciding = deciding
        self._timers = Ticker("charter-approval-timers", self.fire_due)

    # -- steps -------------------------------------------------------------------------

    def _step(
        self, approval_id: str, reviewer: Principal, act: Callable[[Approval, Reviewer, str], Step]
    ) -> ApprovalView:
        """Apply one reviewer's step, under the lock, and answer once it is durable."""
        with self._s.lock:
            at = self._s.stamp()
            step = act(self._queries.pending(approval_id), _reviewer(reviewer), at)
            future = self._apply(step, at)
        return self._finish([(step, future)])[0]

    def claim(self, approval_id: str, reviewer: Principal) -> ApprovalView:
        """Take an approval on, so other reviewers see someone is on it; recorded."""
        return self._step(approval_id, reviewer, machine.claim)

    def approve(self, approval_id: str, reviewer: Principal, *, note: str = "") -> ApprovalView:
        """Approve an approval's current arguments; the quorum completing issues the grant.

        Raises:
            NotFound: no such approval.
            Forbidden: the key cannot review, or its groups are not the route's.
            Conflict: the approval is settled, this person has already approved it, or a
                halt covers it (`halted`).
        """

        def vote(approval: Approval, who: Reviewer, at: str) -> Step:
            self._not_halted(approval)
            return machine.vote(approval, who, at, note)

        return self._step(approval_id, reviewer, vote)

    def _not_halted(self, approval: Approval) -> None:
        """Refuse to approve what a halt covers: a halt freezes pending approvals too.

        Denying stays open (it lets nothing run), and the approval waits, pending, for
        the halt to be lifted or its deadline.

        Raises:
            Conflict: `halted`, naming the halt.
        """
        halt = self._s.halt_over(approval.agent, approval.action)
        if halt is not None:
            raise Conflict(
                f"`{approval.action}` by `{approval.agent}` is halted ({halt.reason}):"
                " it cannot be approved until the halt is lifted",
                code="halted",
            )

    def deny(self, approval_id: str, reviewer: Principal, *, reason: str) -> ApprovalView:
        """Refuse an approval with a reason the agent receives.

        Raises:
            NotFound, Forbidden, Conflict: as for `approve`.
            RequestInvalid: no reason.
        """
        return self._step(approval_id, reviewer, lambda a, r, at: machine.deny(a, r, at, reason))

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
        if not isinstance(args, Mapping):
            raise RequestInvalid("args", "the modified arguments must be a JSON object")
        new_args = json_value(dict(args), "args")
        s = self._s
        with s.lock:
            moment = dt.datetime.fromisoformat(s.stamp())
            at = format_time(moment)
            approval = self._queries.pending(approval_id)
            who = _reviewer(reviewer)
            machine.claim(approval, who, at)  # the reviewer checks, before deciding anything
            if not machine.diff_args(approval.args, new_args):
                raise RequestInvalid("args", "the modified arguments are the ones already asked")
            view = self._queries.view(approval)
            request = ActionRequest(approval.agent, approval.action, new_args, dict(view.context))
            self._deciding.refuse_if_denied(request, moment)
            pending = self._deciding.prepare(request, moment, None, modifies=approval.id)
            step = machine.modify(
                approval, who, new_args, at, redecision_id=pending.decision_id, note=note
            )
            future = self._apply(step, at)
        assert isinstance(pending.future, Future)  # queued for this thread, not a loop
        try:
            pending.future.result()
        finally:  # the step is settled (taken back if it failed) whatever the re-decision did
            views = self._finish([(step, future)])
        return views[0]

    def decide_batch(
        self, approval_ids: Sequence[str], reviewer: Principal, *, approve: bool, reason: str = ""
    ) -> list[ApprovalView]:
        """Approve or deny several similar approvals at once: all of them, or none.

        Every approval must be pending, of one shape (same agent, action and argument
        keys and types), and actionable by the reviewer; otherwise nothing is done.
        """
        ids = list(dict.fromkeys(approval_ids))
        if not ids:
            raise RequestInvalid("ids", "name at least one approval")
        with self._s.lock:
            at = self._s.stamp()
            who = _reviewer(reviewer)
            approvals = [self._queries.pending(i) for i in ids]
            if len({a.shape for a in approvals}) > 1:
                raise RequestInvalid(
                    "ids", "a batch must be of one agent, action and argument shape"
                )
            if approve:
                for approval in approvals:
                    self._not_halted(approval)
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
        s = self._s
        with s.lock:
            at = format_time(now or s.clock())
            applied = []
            due = {a.id: a for a in s.desk.due(at)}
            # Approvals another process opened (the command line on the same ledger) are
            # not in this one's memory: the store's deadline index finds them.
            for row in s.store.approval_rows(state="pending", due_by=at, limit=1000):
                held = s.desk.get(row["id"]) if row["id"] not in due else None
                if held is not None and held.pending and held.deadline <= at:
                    due[held.id] = held
            for approval in sorted(due.values(), key=lambda a: a.deadline):
                step = machine.expire(approval, at, s.bundle.routes)
                applied.append((step, self._apply(step, at)))
        return self._finish(applied, timer=True) if applied else []

    def scrubbed(self, approval: Approval) -> Approval:
        """The approval with the bundle's data rules applied to every argument it holds.

        Approvals keep the arguments in full while people may act on them and until the
        agent has redeemed the grant (it needs the approved values); after that the
        approvals table keeps what the ledger keeps, no more.
        """
        stored = self._s.stored_args
        args, changed = stored(approval.agent, approval.action, approval.args)
        original, changed_too = stored(approval.agent, approval.action, approval.original_args)
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
        s = self._s
        approval = step.approval
        values: dict[str, Any] = {}
        payload = dict(step.payload)
        if step.settled:
            values["approval_state"] = approval.state.value
        if approval.state is ApprovalState.APPROVED:
            grant = s.issue(approval.decision_id, approval.args_hash, s.clock())
            payload["grant"] = grant.to_record()
            values.update(grant.index_values())
        # Denied or expired: nobody will run it, so only the ledger's form is kept.
        kept = self.scrubbed(approval) if step.settled and not values.get("grant_id") else approval
        # The step replaces the row only if it is still the one the step started from: of
        # two replicas (or a timer and a reviewer) acting on one approval, one wins.
        started_from = s.desk.get(approval.id)
        prior = None if started_from is None else approval_row(started_from)["body"]
        future = s.writer.submit(
            NewEvent(step.kind, at, payload),
            IndexChange(
                approval.decision_id, values, approval=approval_row(kept), approval_prior=prior
            ),
        )
        s.desk.put(kept)
        s.stepping[approval.id] += 1
        return future

    def _finish(
        self, steps: Sequence[tuple[Step, Future[LedgerEntry]]], *, timer: bool = False
    ) -> list[ApprovalView]:
        """Wait for steps to be durable, tell who waits, and answer the approvals.

        A step whose commit failed is taken back (the desk reloads the stored state) and
        its error raised after the others have settled. A step another process's step
        beat is a `Conflict` for a reviewer, and nothing for the `timer`: the deadline
        was fired, or the approval settled, elsewhere.
        """
        s = self._s
        failure: BaseException | None = None
        views: list[ApprovalView] = []
        for step, future in steps:
            try:
                future.result()
            except BaseException as exc:
                with s.lock:
                    s.desk.reload(step.approval.id)
                    self._stepped(step.approval.id)
                if isinstance(exc, SetOnceConflict):
                    if timer:
                        continue
                    exc = Conflict(
                        f"approval {step.approval.id} was changed by another step while this"
                        " one was recorded (another reviewer's or replica's); read it again"
                    )
                failure = failure or exc
                continue
            with s.lock:
                self._stepped(step.approval.id)
            if step.settled:
                s.desk.settled(step.approval.decision_id)
            if step.kind == events.APPROVAL_ESCALATED:
                s.notify(step.kind, step.approval.id)
            view = self._queries.get_approval(step.approval.id)
            assert view is not None  # just committed
            views.append(view)
        if failure is not None:
            raise failure
        return views

    def _stepped(self, approval_id: str) -> None:
        """One queued step of the approval is settled; the caller holds the lock."""
        stepping = self._s.stepping
        stepping[approval_id] -= 1
        if stepping[approval_id] <= 0:
            del stepping[approval_id]

    # -- timers and waiting ------------------------------------------------------------

    def start_timers(self, interval: float = 0.5) -> None:
        """Run approval deadlines in a background thread until `stop_timers` or `close`."""
        self._timers.start(interval)

    def stop_timers(self) -> None:
        """Stop the timer thread, if running."""
        self._timers.stop()

    def watch(self, decision_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (in a Charter thread) once the decision's approval settles.

        Returns a function that cancels the watch. Check the decision's state after
        registering: it may have settled before.
        """
        return self._s.desk.watch(decision_id, callback)

    def wait_decision(self, decision_id: str, timeout: float) -> DecisionView | None:
        """The decision once settled, or as it stands after `timeout` seconds.

        Woken at once when this process settles it; read again every second too, for an
        approval settled by another process on the same ledger. None: no such decision.
        """
        settled = threading.Event()
        cancel = self.watch(decision_id, settled.set)
        deadline = time.monotonic() + timeout
        try:
            view = self._queries.get_decision(decision_id)
            while view is not None and view.state not in SETTLED_STATES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                settled.wait(min(1.0, left))
                view = self._queries.get_decision(decision_id)
        finally:
            cancel()
        return view
