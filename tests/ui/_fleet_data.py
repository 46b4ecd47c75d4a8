"""A fleet with problems, recorded through the embedded API on a fake clock.

`seed_fleet` drives the example policy's agents so that, at `end`:

- `support-bot` failed most of its notes: the `outcomes-failing` alert fires for it, the
  controller demoted it from level 2 to 1 (`demote-on-drift-or-failures`), and after 100
  clean notes it proposes the level back (open: a person accepts or declines);
- `outreach-bot`'s mail campaign changed from `spring-sale` (the baseline, over an hour
  before) to `black-friday`: its inputs drifted and `inputs-drifting` fires;
- the shared `refunds-failing` breaker is open (6 of 10 refunds failed), and so is
  `infra-bot`'s own `infra-changes-failing` circuit (3 of 5 scale changes failed);
- `support-bot-trainee` did nothing.

Everything happens before `end`, so a server started afterwards on the same store, on
the real clock, sees the same fleet (the breakers stay open for their cool-down).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from _traffic import act, mail, notes
from charter import Charter
from charter.testing import FakeClock

REFUND: dict[str, Any] = {
    "agent": "support-bot",
    "action": "payments.refund",
    "args": {"order_id": "ord-77", "amount": 50, "currency": "USD"},
    "context": {
        "confidence": 0.8,
        "rationale": "the parcel never arrived",
        "data_sources": [{"name": "orders-db", "age_seconds": 60}],
    },
}
SCALE: dict[str, Any] = {
    "agent": "infra-bot",
    "action": "infra.scale",
    "args": {"service": "web", "replicas": 4},
    "context": {"confidence": 0.9, "rationale": "traffic is rising before the sale"},
}


def seed_fleet(charter: Charter, clock: FakeClock, end: dt.datetime) -> None:
    """Record the fleet described above, the clock ending just before `end`."""

    def at(before: dt.timedelta) -> None:
        target = end - before
        assert clock.now <= target, "the seed ran past its own schedule"
        clock.advance((target - clock.now).total_seconds())

    minutes = dt.timedelta(minutes=1)
    at(110 * minutes)
    for n in range(60):  # the baseline: well over an hour before the end
        act(charter, mail("spring-sale", n), success=True)
        clock.advance(10)
    at(12 * minutes)
    for n in range(60):
        act(charter, mail("black-friday", n), success=True)
        clock.advance(2)
    at(9 * minutes)
    notes(charter, clock, 20, every=5)  # 4 of 20 succeed
    at(8 * minutes)
    charter.monitors.evaluate()  # fires the alerts, demotes support-bot
    at(7 * minutes)
    notes(charter, clock, 100)
    at(5 * minutes)
    charter.monitors.evaluate()  # proposes support-bot's level back
    at(4 * minutes)
    for i in range(5):
        act(charter, SCALE, success=i % 2 == 1)  # 3 of 5 fail: infra-bot's circuit opens
        clock.advance(1)
    at(3 * minutes)
    for i in range(10):
        act(charter, REFUND, success=i % 5 in (1, 3))  # 6 of 10 fail: the breaker opens
        clock.advance(1)
    at(1 * minutes)
    charter.monitors.evaluate()
