"""Replaying a whole ledger file, in parallel when it is large.

Replaying one decision depends on nothing but its own entry (the request, the state and
the clock are recorded in it) and the bundle version it names, so a ledger splits into
stretches of sequence numbers that worker processes replay on their own; their reports
merge in ledger order into exactly the report one process would have made.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from charter.canonical import canonical_bytes
from charter.controls import FOLDED_KINDS, ServiceState
from charter.errors import CharterError, LedgerError, ReplayError
from charter.ledger import DECISION_KIND, RecordedEntry, ReplayReport, StateCheck, events, replay
from charter.policy import Bundle, bundle_from_content
from charter.store import LedgerReader, open_store

__all__ = [
    "PARALLEL_THRESHOLD",
    "check_recorded_state",
    "load_recorded_bundle",
    "recorded_entries",
    "replay_ledger",
    "replay_store",
]

OUTCOME_KIND = events.OUTCOME
#: The kinds the recorded-state check folds: no redemption changes what a decision sees.
_CHECKED_KINDS = FOLDED_KINDS - {events.GRANT_REDEEMED}

#: Below this many entries one process is faster than starting workers.
PARALLEL_THRESHOLD = 40_000


def _stretch(store: LedgerReader, first: int, last: int) -> Iterator[RecordedEntry]:
    """Decision entries with `first <= seq <= last`, decoded."""
    for entry in store.entries(after=first - 1, kinds=(DECISION_KIND,)):
        if entry.seq > last:
            return
        yield RecordedEntry(entry.seq, entry.kind, entry.at, json.loads(entry.payload))


def _replay_stretch(
    db: str, first: int, last: int, against: Mapping[str, Any] | None
) -> ReplayReport:
    """Worker: replay one stretch of the ledger in `db` (a separate process's own store)."""
    store = open_store(db, read_only=True)
    try:
        bundle = bundle_from_content(against) if against is not None else None
        return replay(
            _stretch(store, first, last), lambda v: load_recorded_bundle(store, v), bundle
        )
    finally:
        store.close()


def replay_ledger(
    db: str | Path, against: Bundle | None = None, *, workers: int | None = None
) -> ReplayReport:
    """Replay every decision in the ledger file `db` (see `charter.ledger.replay`).

    Args:
        db: the ledger file.
        against: decide under this bundle instead of the recorded versions (what-if).
        workers: processes to use; by default one per core for a large ledger, else one.

    Raises:
        StoreOpenError: `db` is not a Charter ledger this version reads (it is only read,
            never created or migrated).
        ReplayError: a worker process failed (the report would be incomplete).
    """
    store = open_store(db, read_only=True)
    try:
        size = store.head().seq
    finally:
        store.close()
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= PARALLEL_THRESHOLD else 1
    workers = max(1, min(workers, size // 1000 or 1))
    content = dict(against.content) if against is not None else None
    state: StateCheck | None = None
    if workers == 1:
        store = open_store(db, read_only=True)
        try:
            report = replay_store(store, against)
        finally:
            store.close()
        state = report.state
    else:
        step = -(-size // workers)
        bounds = [(lo, min(size, lo + step - 1)) for lo in range(1, size + 1, step)]
        # `spawn`: a forked child would inherit the parent's threads and open database handles.
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(len(bounds), mp_context=context) as pool:
                replaying = pool.map(
                    _replay_stretch,
                    [str(db)] * len(bounds),
                    [lo for lo, _ in bounds],
                    [hi for _, hi in bounds],
                    [content] * len(bounds),
                )
                # The state check is one pass in order: the parent makes it while the
                # workers replay.
                state = _state_of(db) if against is None else None
                parts = list(replaying)
        except (OSError, RuntimeError) as exc:
            raise ReplayError(f"a replay worker failed: {exc}") from exc
        report = parts[0]
        for part in parts[1:]:
            report.merge(part)
    if against is not None:
        report.against = against.version
    report.state = state
    return report


def _state_of(db: str | Path) -> StateCheck:
    """`check_recorded_state` over the ledger file `db`, opened read-only."""
    store = open_store(db, read_only=True)
    try:
        return check_recorded_state(store)
    finally:
        store.close()


def check_recorded_state(store: LedgerReader, *, examples: int = 3) -> StateCheck:
    """Check each decision's recorded state against the fold of every entry before it.

    The fold is the one a service opens with (`ServiceState`); the state a decision
    would have seen is derived as deciding derives it, from the agent's plan in the
    bundle version it recorded. One pass in ledger order, decoding only the kinds the
    fold reads. A decision whose bundle is missing or altered is not checked (replay
    reports it as an error).
    """
    checking = _StateChecking(store, examples)
    for _ in checking.decisions():
        pass
    return checking.check


def replay_store(store: LedgerReader, against: Bundle | None = None) -> ReplayReport:
    """Replay every decision of `store` in this process (see `charter.ledger.replay`).

    Verifying also checks the recorded state, in the same pass: each entry is read and
    decoded once for both.
    """
    resolve = functools.partial(load_recorded_bundle, store)
    if against is not None:
        return replay(recorded_entries(store), resolve, against)
    checking = _StateChecking(store)
    report = replay(checking.decisions(), resolve)
    report.state = checking.check
    return report


class _StateChecking:
    """The decisions of a ledger in order, each checked against the fold as it passes."""

    def __init__(self, store: LedgerReader, examples: int = 3) -> None:
        self.check = StateCheck()
        self._store = store
        self._examples = examples
        self._bundles: dict[str, Bundle | None] = {}

    def decisions(self) -> Iterator[RecordedEntry]:
        """Every decision entry, decoded; the fold reads the other kinds it needs."""
        state = ServiceState()
        for entry in self._store.entries(kinds=_CHECKED_KINDS):
            if entry.kind == OUTCOME_KIND and '"breakers"' not in entry.payload:
                continue  # what decisions see depends only on the outcomes breakers count
            payload = entry.payload_object()
            if entry.kind == DECISION_KIND:
                self._compare(state, entry.seq, entry.at, payload)
                yield RecordedEntry(entry.seq, entry.kind, entry.at, payload)
            state = state.apply(entry.kind, entry.at, payload)

    def _bundle(self, version: str) -> Bundle | None:
        if version not in self._bundles:
            try:
                self._bundles[version] = load_recorded_bundle(self._store, version)
            except CharterError:  # altered: replay reports it for every entry of it
                self._bundles[version] = None
        return self._bundles[version]

    def _compare(self, state: ServiceState, seq: int, at: str, payload: Any) -> None:
        decision = payload["decision"]
        bundle = self._bundle(decision["policy_version"])
        if bundle is None:  # a missing or altered bundle is replay's error to report
            return
        agent = decision["agent"]
        profile = state.profile(agent, bundle.agents)
        plan = bundle.plan_for(agent, profile.role, decision["action"]) if profile else None
        windows = [(b.id, b.window_seconds) for b in plan.budgets] if plan else []
        derived = state.agent_state(
            agent,
            windows,
            dt.datetime.fromisoformat(at),
            action=decision["action"],
            breakers=plan.breakers if plan else (),
        ).to_json()
        recorded = payload.get("state") or {}
        check = self.check
        check.checked += 1
        if derived != recorded:
            check.differing += 1
            if len(check.examples) < self._examples:
                fields = sorted(
                    k for k in {*derived, *recorded} if derived.get(k) != recorded.get(k)
                )
                check.examples.append((seq, fields))


def recorded_entries(store: LedgerReader) -> Iterable[RecordedEntry]:
    """The store's decision entries, decoded for replay."""
    for entry in store.entries(kinds=(DECISION_KIND,)):
        yield RecordedEntry(entry.seq, entry.kind, entry.at, entry.payload_object())


def load_recorded_bundle(store: LedgerReader, version: str) -> Bundle | None:
    """Rebuild a bundle the ledger stored; None if it is not there.

    Raises:
        LedgerError: the stored content does not hash to its version (it was altered).
    """
    content = store.get_bundle(version)
    if content is None:
        return None
    bundle = bundle_from_content(json.loads(content))
    if bundle.version != version or canonical_bytes(dict(bundle.content)) != content:
        raise LedgerError(f"stored bundle `{version}` does not match its version: it was altered")
    return bundle
