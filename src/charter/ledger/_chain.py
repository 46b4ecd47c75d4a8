"""Entries and the hash chain that links them, with no I/O.

A store asks this module to turn new events into entries: it validates and encodes each
event (`prepare_event`), then numbers and links them onto the current head
(`link_entries`). Keeping both steps pure means every store adapter writes exactly the
same bytes, and a verifier can recompute them with nothing but this package.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from charter.canonical import JSONValue, canonical_text
from charter.errors import EventError
from charter.ledger._hashing import GENESIS_HASH, _chain, entry_content

__all__ = [
    "GENESIS",
    "ChainHead",
    "EventError",
    "LedgerEntry",
    "NewEvent",
    "PreparedEvent",
    "check_event",
    "link_entries",
    "prepare_event",
]

_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
_RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\Z")
_sha256 = hashlib.sha256
_KINDS_SEEN: set[str] = set()  # kinds that matched `_KIND`; bounded, as kinds are an open set
_MAX_KINDS_SEEN = 1024


@dataclass(frozen=True, slots=True)
class NewEvent:
    """Something to record, before the ledger gives it a place.

    Attributes:
        kind: what it records: `decision`, `bundle`, `outcome`, `approval`, `halt`, ...
            (lowercase letters, digits, `.`, `_` or `-`; an open set).
        at: when, as an RFC 3339 UTC timestamp ending in `Z`, from the caller's clock:
            the ledger never reads the wall clock.
        payload: a JSON object.
    """

    kind: str
    at: str
    payload: Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event that has been validated and whose payload is canonical JSON text.

    Preparing in the caller's thread lets a group-commit writer report a bad payload to
    the one caller who sent it instead of failing everybody's batch.
    """

    kind: str
    at: str
    payload: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of a ledger: its sequence number and chain hash (hex)."""

    seq: int
    chain_hash: str


GENESIS = ChainHead(0, GENESIS_HASH)
"""The head of an empty ledger."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """An entry as stored: the event, its place, and the hashes that pin it there.

    Attributes:
        seq: position in the ledger, from 1, without gaps.
        kind: what it records.
        at: when, RFC 3339 UTC.
        payload: the canonical JSON text of the payload object.
        leaf_hash: hex SHA-256 of `0x00 || content`, the entry's Merkle leaf.
        chain_hash: hex SHA-256 of `0x02 || previous chain hash || leaf hash`.
    """

    seq: int
    kind: str
    at: str
    payload: str
    leaf_hash: str
    chain_hash: str

    def payload_object(self) -> dict[str, Any]:
        """Parse the payload text back into a dict."""
        value: dict[str, Any] = json.loads(self.payload)
        return value


def check_event(event: NewEvent) -> None:
    """Check an event's kind, time and payload type, without encoding the payload.

    A writer in another process encodes the payload there, but the obvious mistakes
    still fail the caller at once, in its own thread.

    Raises:
        EventError: the kind or timestamp is malformed, or the payload is not a dict.
    """
    if type(event.kind) is str and event.kind in _KINDS_SEEN:
        pass  # a kind already checked: a process records the same few over and over
    elif not isinstance(event.kind, str) or not _KIND.match(event.kind):
        raise EventError(
            f"the event kind `{event.kind}` must be lowercase letters, digits, `.`, `_` or `-`"
        )
    elif len(_KINDS_SEEN) < _MAX_KINDS_SEEN:
        _KINDS_SEEN.add(event.kind)
    if not isinstance(event.at, str) or not _RFC3339_UTC.match(event.at):
        raise EventError(
            f"the event time `{event.at}` must be an RFC 3339 UTC timestamp such as"
            " `2025-01-31T09:30:00Z`"
        )
    if not isinstance(event.payload, dict):
        raise EventError("the event payload must be a JSON object")


def prepare_event(event: NewEvent | PreparedEvent) -> PreparedEvent:
    """Validate an event and encode its payload canonically.

    Raises:
        EventError: the kind or timestamp is malformed, or the payload is not a JSON
            object that canonical JSON can encode.
    """
    if isinstance(event, PreparedEvent):
        return event
    check_event(event)
    try:
        payload = canonical_text(event.payload)
    except ValueError as error:
        raise EventError(str(error)) from error
    return PreparedEvent(event.kind, event.at, payload)


def _leaf_opening(kind: str, at: str) -> bytes:
    """What a leaf hash covers before an entry's payload: the leaf prefix and content so far.

    `link_entries` hashes each leaf from this, the payload and the seq, without building
    the content on its own; a test holds it to `leaf_hash(entry_content(...))`.
    """
    empty = entry_content(0, kind, at, b"")
    return b"\x00" + empty[: empty.rindex(b',"payload":') + len(b',"payload":')]


def link_entries(head: ChainHead, events: Iterable[PreparedEvent]) -> list[LedgerEntry]:
    """Number prepared events after `head` and compute their hashes.

    Args:
        head: the ledger's current last entry (`GENESIS` when empty).
        events: the events to append, in order.

    Returns:
        One entry per event, with `seq` running on from `head.seq`.
    """
    seq = head.seq
    previous = bytes.fromhex(head.chain_hash)
    entries = []
    kind = at = None
    opening = b""
    for event in events:
        seq += 1
        if event.kind != kind or event.at != at:  # a batch mostly shares both
            kind, at = event.kind, event.at
            opening = _leaf_opening(kind, at)
        leaf = _sha256(
            b"".join((opening, event.payload.encode(), b',"seq":', str(seq).encode(), b"}"))
        ).digest()
        previous = _chain(previous, leaf)
        entries.append(
            LedgerEntry(seq, event.kind, event.at, event.payload, leaf.hex(), previous.hex())
        )
    return entries
