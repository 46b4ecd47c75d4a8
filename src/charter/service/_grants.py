"""Grants and outcomes: redeem a grant once, record what happened once.

Each is written once, as a flow (`charter.service._drive`): it checks under the lock,
queues its entry, yields the entry's future and answers from the commit. Blocking and
async callers drive the same flow.

Once is enforced twice: in memory (a redemption or outcome being committed is refused a
second time at once) and by the database (`SetOnceConflict`: another process on the
same ledger was first), where the refusal is recorded too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from charter.canonical import content_hash
from charter.errors import Conflict, GrantRefused, NotFound, RequestInvalid
from charter.ledger import LedgerEntry, events
from charter.model import json_value
from charter.service._approvals import Approvals
from charter.service._breakers import Breakers
from charter.service._clock import format_time
from charter.service._desk import approval_row
from charter.service._drive import Flow
from charter.service._records import Redemption
from charter.service._session import AnyFuture, Session
from charter.service._tickets import token_matches
from charter.store import IndexChange, SetOnceConflict

__all__ = ["Grants"]

_USED = ("grant_used", "the grant was already redeemed; it runs once")


def _outcome_taken(decision_id: str) -> Conflict:
    """The refusal of a second outcome, whoever recorded the first."""
    return Conflict(f"decision `{decision_id}` already has an outcome")


class Grants:
    """Redemptions of grants and outcomes of decisions."""

    def __init__(self, session: Session, approvals: Approvals, breakers: Breakers) -> None:
        self._s = session
        self._approvals = approvals
        self._breakers = breakers
        self._redeemed: set[str] = set()
        self._outcomes: set[str] = set()

    def redeem(
        self,
        grant_id: str,
        token: str,
        args: Mapping[str, Any],
        now: dt.datetime | None,
        *,
        asynchronous: bool,
    ) -> Flow[Redemption]:
        """The flow of one redemption; see `Charter.redeem`."""
        s = self._s
        future, refusal, decision_id, at, owed = self._queue_redeem(
            grant_id, token, args, now, asynchronous
        )
        if refusal is None:
            # Forgotten once the commit settles (the index says it, or nothing was
            # redeemed), even if an async caller is cancelled first: until then a second
            # redemption must still be refused.
            future.add_done_callback(lambda _: self._redeemed.discard(grant_id))
        try:
            entry: LedgerEntry = yield future
        except SetOnceConflict:  # another process redeemed it first
            used = events.grant_refused(at, grant_id, decision_id, _USED[0])
            yield s.submit(used, asynchronous=asynchronous)
            raise GrantRefused(*_USED) from None
        finally:
            if refusal is None and future.done():  # settled: a retry must not wait for the callback
                self._redeemed.discard(grant_id)
        if refusal is not None:
            raise GrantRefused(*refusal)
        if owed is not None:  # its outcome is due by a time: overdue after it
            with s.lock:
                s.state.breakers.expect(str(decision_id), *owed)
        return Redemption(grant_id, str(decision_id), entry.seq, at)

    def _queue_redeem(
        self,
        grant_id: str,
        token: str,
        args: Mapping[str, Any],
        now: dt.datetime | None,
        asynchronous: bool,
    ) -> tuple[AnyFuture, tuple[str, str] | None, str | None, str, tuple[str, str, str] | None]:
        """Check a redemption under the lock and queue its entry (redeemed or refused).

        Returns the entry's future, the refusal (code, message) or None, the decision id,
        the time, and (agent, action, due) when the action's outcome is due by a time. A
        redemption stays in `_redeemed` until its commit settles.
        """
        s = self._s
        with s.lock:
            at = format_time(now or s.clock())
            row = s.store.decision_row(grant_id=grant_id)
            refusal: tuple[str, str] | None = None
            if row is None or not token_matches(s.grant_secret, grant_id, token):
                refusal = ("grant_unknown", "no grant with this id and token")
            elif row["redeemed_seq"] is not None or grant_id in self._redeemed:
                refusal = _USED
            elif at > row["grant_expires_at"]:
                refusal = ("grant_expired", f"the grant expired at {row['grant_expires_at']}")
            elif halt := s.halt_over(row["agent"], row["action"]):
                # A halt stops what was allowed before it, too: the grant stays unused and
                # redeems once the halt is lifted (if it has not expired by then).
                refusal = (
                    "halted",
                    f"`{row['action']}` by `{row['agent']}` is halted ({halt.reason});"
                    " the grant redeems once the halt is lifted",
                )
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
                refused = events.grant_refused(at, grant_id, decision_id, refusal[0])
                future = s.submit(refused, asynchronous=asynchronous)
                return future, refusal, decision_id, at, None
            self._redeemed.add(grant_id)
            assert row is not None
            assert decision_id is not None
            approved = (
                s.desk.get(f"apr_{decision_id}")
                if row.get("approval_state") == "approved"
                else None
            )
            agent, action = row["agent"], row["action"]
            timeout = self._breakers.timeout(agent, action)
            due = None
            if timeout is not None:
                due = format_time(dt.datetime.fromisoformat(at) + dt.timedelta(seconds=timeout))
            change = IndexChange(
                decision_id,
                {},
                seq_column="redeemed_seq",
                # the agent has its approved arguments now: keep the ledger's form only
                approval=approval_row(self._approvals.scrubbed(approved)) if approved else None,
            )
            redeemed = events.grant_redeemed(
                at, grant_id, decision_id, agent=agent, action=action, outcome_due=due
            )
            future = s.submit(redeemed, change, asynchronous=asynchronous)
        return future, None, decision_id, at, (agent, action, due) if due is not None else None

    def record_outcome(
        self,
        decision_id: str,
        *,
        success: bool,
        error: str | None,
        duration_ms: float | None,
        result_digest: str | None,
        asynchronous: bool,
    ) -> Flow[dict[str, Any]]:
        """The flow of recording one outcome; see `Charter.record_outcome`."""
        s = self._s
        with s.lock:
            row = s.store.decision_row(decision_id=decision_id)
            if row is None:
                raise NotFound(f"no decision `{decision_id}`")
            if row["outcome_seq"] is not None or decision_id in self._outcomes:
                raise _outcome_taken(decision_id)
            agent, action = row["agent"], row["action"]
            circuits = self._breakers.circuits_of(agent, action)
            event = events.outcome(
                s.stamp(),
                decision_id,
                success=success,
                error=error,
                duration_ms=duration_ms,
                result_digest=result_digest,
                agent=agent,
                action=action,
                breakers=circuits,
            )
            self._outcomes.add(decision_id)
            change = IndexChange(
                decision_id, {"outcome_success": bool(success)}, seq_column="outcome_seq"
            )
            future = s.submit(event, change, asynchronous=asynchronous)
        # Committed (the index says it) or failed (nothing recorded): forget it once the
        # commit settles, even if an async caller is cancelled first.
        future.add_done_callback(lambda _: self._outcomes.discard(decision_id))
        try:
            entry: LedgerEntry = yield future
        except SetOnceConflict:  # another process recorded one first (or it was overdue)
            raise _outcome_taken(decision_id) from None
        finally:
            if future.done():  # settled: a retry must not wait for the callback
                self._outcomes.discard(decision_id)
        with s.lock:
            if circuits:
                s.state = s.state.apply_event(event, entry.seq)  # nothing owed any more
                s.own_outcomes.add(decision_id)
                self._breakers.after_outcome(agent, action, decision_id)
            else:
                s.state.breakers.arrived(decision_id)
        return {"seq": entry.seq, "at": entry.at, **event.payload}
