"""The decision explorer's reads: search the ledger, and check each entry's place in it.

An entry *verifies* when its leaf hash is the hash of its content and its chain hash links
that leaf to the entry before it. That is the check `charter ledger verify` makes at every
position, done here for the entries on screen so a reviewer sees each one's standing at a
glance; the whole-ledger verification (which also compares the latest checkpoint) is one
click away, since it reads every entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charter.ledger import GENESIS_HASH, LedgerEntry, chain_hash, entry_content, leaf_hash
from charter.model import MAX_ID
from charter.service import Charter, DecisionView

__all__ = ["VERDICTS", "EntryCheck", "Filters", "Row", "check_entry", "search"]

#: The verdicts a search can filter by.
VERDICTS = ("allow", "require_approval", "escalate", "deny")
#: How many decisions one page of the explorer shows.
PAGE = 50


@dataclass(frozen=True, slots=True)
class Filters:
    """What the explorer was asked for; empty strings mean "any"."""

    agent: str = ""
    action: str = ""
    verdict: str = ""
    since: str = ""
    until: str = ""
    before: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        """Read the filters from a query string, dropping what cannot be a filter."""
        verdict = query.get("verdict", "")
        before = query.get("before", "")
        return cls(
            agent=query.get("agent", "").strip()[:MAX_ID],
            action=query.get("action", "").strip()[:MAX_ID],
            verdict=verdict if verdict in VERDICTS else "",
            since=_moment(query.get("since", "")),
            until=_moment(query.get("until", "")),
            before=int(before) if before.isdigit() and len(before) < 16 else None,
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """The filters as query parameters (for links to other pages of the same search)."""
        values: dict[str, Any] = {
            "agent": self.agent,
            "action": self.action,
            "verdict": self.verdict,
            "since": self.since,
            "until": self.until,
            "before": self.before,
            **changes,
        }
        return {k: str(v) for k, v in values.items() if v not in ("", None)}


def _moment(text: str) -> str:
    """A `datetime-local` value (taken as UTC) in the form `YYYY-MM-DDTHH:MM`, or ``."""
    text = text.strip()[:32]
    if not text:
        return ""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    return moment.strftime("%Y-%m-%dT%H:%M")


def _ledger_time(local: str, *, end: bool) -> str | None:
    """The ledger's timestamp form of a filter's minute; `until` includes the whole minute."""
    if not local:
        return None
    return f"{local}:{'59.999999' if end else '00.000000'}Z"


@dataclass(frozen=True, slots=True)
class EntryCheck:
    """Whether an entry verifies against its content and the entry before it."""

    ok: bool
    problem: str | None = None


def check_entry(entry: LedgerEntry | None, previous: LedgerEntry | None) -> EntryCheck:
    """Recompute an entry's leaf hash and its link to the previous entry's chain hash."""
    if entry is None:
        return EntryCheck(False, "the entry is missing from the ledger")
    content = entry_content(entry.seq, entry.kind, entry.at, entry.payload.encode("utf-8"))
    if leaf_hash(content) != entry.leaf_hash:
        return EntryCheck(False, "its content does not match its leaf hash (edited?)")
    before = GENESIS_HASH if entry.seq == 1 else previous.chain_hash if previous else None
    if before is None:
        return EntryCheck(False, f"entry {entry.seq - 1}, which it links to, is missing")
    if chain_hash(before, entry.leaf_hash) != entry.chain_hash:
        return EntryCheck(False, f"its chain hash does not link to entry {entry.seq - 1}")
    return EntryCheck(True)


@dataclass(frozen=True, slots=True)
class Row:
    """One decision on the explorer's page, with its ledger entry's standing."""

    view: DecisionView
    entry: LedgerEntry | None
    check: EntryCheck

    @property
    def decision(self) -> dict[str, Any]:
        """The decision as the API shows it (state, grant without token, outcome)."""
        return self.view.to_json()


def row_of(charter: Charter, view: DecisionView) -> Row:
    """A decision with its entry and the entry's verification."""
    seq = view.record.seq
    entry = charter.store.entry(seq)
    previous = charter.store.entry(seq - 1) if seq > 1 else None
    return Row(view, entry, check_entry(entry, previous))


def search(charter: Charter, filters: Filters) -> tuple[list[Row], int | None]:
    """One page of decisions, newest first, and the `before` of the next page (or None).

    Blocking: call it from a worker thread.
    """
    views = charter.search_decisions(
        agent=filters.agent or None,
        action=filters.action or None,
        verdict=filters.verdict or None,
        since=_ledger_time(filters.since, end=False),
        until=_ledger_time(filters.until, end=True),
        before_seq=filters.before,
        limit=PAGE + 1,
    )
    more = len(views) > PAGE
    rows = [row_of(charter, v) for v in views[:PAGE]]
    return rows, (rows[-1].view.record.seq if more and rows else None)
