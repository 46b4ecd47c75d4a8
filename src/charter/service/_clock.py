"""Time and ids at the service's edge: the wall clock, the ledger's time form, decision ids.

The core never reads a clock; the service reads this one (or the one it is given) and
passes the moment inward.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from collections.abc import Callable

__all__ = ["as_recorded", "format_time", "random_ids", "system_clock"]


def system_clock() -> dt.datetime:
    """The wall clock in UTC; only edges call it, and pass the result inward."""
    return dt.datetime.now(dt.UTC)


_TIME_FORM = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds and a `Z`, the ledger's timestamp form."""
    if moment.tzinfo is None:
        raise ValueError("times must carry a timezone; Charter never guesses one")
    utc = moment.astimezone(dt.UTC)
    if utc.year < 1000:  # `strftime` does not pad such years; keep its text exactly
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as `strftime`, at under half its cost (two calls per decision), and
    # cheaper than `isoformat`, which also formats an offset only to have it cut off.
    return _TIME_FORM % (
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
    )


def as_recorded(moment: dt.datetime) -> dt.datetime:
    """`moment` as the ledger records it: `fromisoformat(format_time(moment))`, unparsed.

    Both keep microseconds and give UTC, so converting is enough.
    """
    utc = moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment
    if moment.tzinfo is None or utc.year < 1000:  # the round trip's own error
        return dt.datetime.fromisoformat(format_time(moment))
    return utc


def random_ids() -> Callable[[], str]:
    """Decision ids: 32 hex digits, time-ordered like a UUIDv7 (RFC 9562).

    The first 48 bits are the wall clock in milliseconds and the other 80 are random
    (from a generator seeded once by the OS: asking the OS for every id costs ~100 µs on
    some virtual machines). Ids must be unique, not secret (grants, which must be
    unguessable, use `secrets`). Ordered by time, each commit's new ids (and the grant
    ids made from them) land on the last pages of the ledger's id indexes instead of on
    a page each, which cut the disk writes of a commit several times.
    """
    rng = random.Random(os.urandom(32))
    return lambda: (
        f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}{rng.getrandbits(80):020x}"
    )
