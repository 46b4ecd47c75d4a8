"""Following the ledger: what other processes append reaches this one's state.

Replicas of one PostgreSQL ledger (or a command line beside a server on one SQLite file)
each fold their own changes at once; a `Follower` reads what the others appended and
folds it too:

- halts, resumes, autonomy changes and agent updates, into the state decisions see;
- key revocations, so a revoked key stops authenticating here;
- deploys, so the bundle deployed last anywhere is live everywhere;
- allowed decisions that spend budget (when the live bundle has budgets), so a budget
  counts the whole cluster's decisions, not one replica's;
- outcomes that count towards a breaker, breakers' trial decisions and transitions
  (when the live bundle has breakers), so every replica holds a tripped action back;
- approval steps: the desk takes the stored approval back, so an approval opened
  elsewhere can be worked and timed here, and one settled elsewhere wakes this
  process's waiters (long polls) at once.

The fold ignores a change older than the one in force (`ServiceState.apply` with the
entry's seq), so reading this process's own entries again, or another's late, leaves the
state the ledger's order gives; this process's own decisions, already counted, and
approvals it has a step queued on are skipped. The follower reads at every tick of its
interval and, on a store that announces appends (PostgreSQL's `NOTIFY`), as soon as one
commits; the poll alone keeps the bound when the announcements stop.
"""

from __future__ import annotations

import re
from typing import Any

from charter.ledger import LedgerEntry, events
from charter.model import Verdict
from charter.service._audit import load_recorded_bundle
from charter.service._session import Session
from charter.service._ticker import Ticker
from charter.store import Closeable

__all__ = ["APPROVAL_STEPS", "FOLLOWED_KINDS", "Follower"]

#: The approval kinds whose entries change an approval's stored row.
APPROVAL_STEPS = frozenset(
    {
        events.APPROVAL_OPENED,
        events.APPROVAL_CLAIMED,
        events.APPROVAL_APPROVED,
        events.APPROVAL_DENIED,
        events.APPROVAL_MODIFIED,
        events.APPROVAL_ESCALATED,
        events.APPROVAL_EXPIRED,
    }
)

#: The kinds another process may append that change what this one decides or admits
#: (and decisions too, while the live bundle has budgets).
FOLLOWED_KINDS = frozenset(
    {
        events.HALT,
        events.RESUME,
        events.AUTONOMY_CHANGED,
        events.AGENT_UPDATED,
        events.KEY_REVOKED,
        events.POLICY_DEPLOYED,
        *APPROVAL_STEPS,
    }
)
_WITH_DECISIONS = FOLLOWED_KINDS | {events.DECISION}
#: What breakers add: their trials are decisions, their figures outcomes.
_BREAKER_KINDS = frozenset(
    {
        events.DECISION,
        events.GRANT_REDEEMED,
        events.OUTCOME,
        events.OUTCOME_OVERDUE,
        events.BREAKER_OPENED,
        events.BREAKER_CLOSED,
    }
)
_OUTCOMES = frozenset({events.OUTCOME, events.OUTCOME_OVERDUE})


def _spends_nothing(payload: str) -> bool:
    """Whether a decision's canonical JSON cannot name a budget it spent.

    Its `budgets` list is written `"budgets":[...]`; if every list under that key
    anywhere in the payload is empty, the decision spent none. Arguments that carry a
    `budgets` key of their own can only make this answer False (the payload is then
    decoded and its own key read), never hide a spending.
    """
    return _NONEMPTY_BUDGETS.search(payload) is None


_NONEMPTY_BUDGETS = re.compile(r'"budgets":\[[^\]]')

_OWN_KINDS = frozenset({events.DECISION, *_OUTCOMES})
_TRANSITIONS = frozenset({events.BREAKER_OPENED, events.BREAKER_CLOSED})

#: Seconds between two reads at the least, however often appends are announced.
SETTLE = 0.02


class Follower:
    """Reads the ledger after a position and folds the followed kinds into the session.

    Args:
        session: the session whose state, desk and key ring the entries change.
        after: the ledger position the session's state was folded through.
    """

    def __init__(self, session: Session, after: int) -> None:
        self._s = session
        self._after = after
        # Appends are announced per commit: under load, one read per SETTLE gathers many.
        self._ticker = Ticker("charter-ledger-follower", self.catch_up, settle=SETTLE)
        self._listener: Closeable | None = None

    @property
    def position(self) -> int:
        """The last ledger position read."""
        return self._after

    def catch_up(self) -> int:
        """Fold every followed entry others appended since the last call.

        Returns how many entries changed something here: the state, the keys or the
        approvals.
        """
        s = self._s
        read = 0
        revoked = False
        approvals: dict[str, str] = {}  # approval id -> its decision's id
        # Everything up to the head read now is committed (appends are sequenced), so the
        # position moves to it even when no followed entry was found: the next read scans
        # only what is new, however long the ledger has grown.
        head = s.store.head().seq
        spec = s.bundle.spec
        kinds = _WITH_DECISIONS if spec.budgets else FOLLOWED_KINDS
        if spec.breakers or any(
            action.timeout for role in spec.roles.values() for action in role.envelope.values()
        ):
            kinds = kinds | _BREAKER_KINDS
        for entry in s.store.entries(after=self._after, kinds=kinds):
            if entry.seq > head:
                break
            if entry.kind == events.KEY_REVOKED:
                revoked = True
            elif entry.kind in APPROVAL_STEPS:
                payload = entry.payload_object()
                approvals[payload["approval_id"]] = payload["decision_id"]
            elif not self._fold(entry):
                continue
            read += 1
        self._after = max(self._after, head)
        if revoked:
            s.keys.forget_cached()
        if approvals:
            self._take_back(approvals)
        return read

    def _fold(self, entry: LedgerEntry) -> bool:
        """Fold one state-bearing entry; False when it changes nothing here.

        (This process's own changes, and ones a newer change already replaced, are
        ignored by the fold; so are decisions that spend no budget, or spent it here.)
        """
        s = self._s
        kind = entry.kind
        if kind == events.DECISION:
            if _spends_nothing(entry.payload) and '"breaker_trial"' not in entry.payload:
                return False  # most decisions: not decoded at all
        elif kind in _OUTCOMES and '"breakers"' not in entry.payload:
            if s.state.breakers.awaited:  # owed here by another's redemption: not any more
                with s.lock:
                    s.state.breakers.arrived(entry.payload_object()["decision_id"])
            return False
        elif kind == events.GRANT_REDEEMED and '"outcome_due"' not in entry.payload:
            return False
        payload = entry.payload_object()
        if kind == events.DECISION and payload["decision"]["verdict"] != Verdict.ALLOW.value:
            return False
        with s.lock:
            own = s.own_spending if kind == events.DECISION else s.own_outcomes
            if kind in _OWN_KINDS and payload["decision_id"] in own:
                own.discard(payload["decision_id"])  # counted when recorded here
                return False
            before, s.state = s.state, s.state.apply(entry.kind, entry.at, payload, entry.seq)
            if entry.kind == events.POLICY_DEPLOYED:
                self._deployed(payload)
        # Spending, trials and outcomes are counted in place: the state object stays.
        return kind in _OWN_KINDS or kind in _TRANSITIONS or s.state is not before

    def _deployed(self, payload: dict[str, Any]) -> None:
        """Make live the bundle the ledger says was deployed last; the caller holds the lock."""
        s = self._s
        version = s.state.deployed
        if version is None or version == s.bundle.version or version != payload["version"]:
            return  # this process's own deploy, or one a later entry already replaced
        bundle = load_recorded_bundle(s.store, version)
        if bundle is not None:
            s.bundle = bundle

    def _take_back(self, approvals: dict[str, str]) -> None:
        """Reload approvals other processes stepped on, and wake who waits on settled ones."""
        s = self._s
        settled = []
        with s.lock:
            for approval_id, decision_id in approvals.items():
                if s.stepping.get(approval_id):
                    continue  # this process's step is queued; its commit settles the desk
                held = s.desk.refresh(approval_id)
                if held is not None and not held.pending:
                    settled.append(decision_id)
        for decision_id in settled:
            s.desk.settled(decision_id)

    def start(self, interval: float = 0.25) -> None:
        """Catch up every `interval` seconds, and whenever the store announces an append.

        Runs in a background thread until `stop`.
        """
        self._ticker.start(interval)
        if self._listener is None:
            self._listener = self._s.store.listen_appends(self._ticker.poke)

    def stop(self) -> None:
        """Stop listening and the background thread, if running."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._ticker.stop()
