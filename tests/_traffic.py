"""The example policy's agents at work through the embedded API, for the monitors to watch.

`act` decides a request (it must be allowed), redeems its grant and reports how it went;
`notes` is support-bot's CRM notes, `mail` outreach-bot's campaign mail, and `demoted`
the closed loop on them: failures demote support-bot, clean notes earn a proposal back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charter import Charter, Verdict
from charter.testing import FakeClock

NOTE: dict[str, Any] = {
    "agent": "support-bot",
    "action": "crm.note",
    "args": {"customer_id": "c-1", "text": "called back"},
    "context": {"confidence": 0.9, "rationale": "keeping the record current"},
}


def mail(campaign: str, n: int) -> dict[str, Any]:
    return {
        "agent": "outreach-bot",
        "action": "mail.send",
        "args": {
            "to": f"customer-{n}@example.com",
            "subject": "Our offer",
            "body": "Hello",
            "campaign": campaign,
        },
        "context": {"confidence": 0.85, "rationale": "in the reviewed campaign"},
    }


def act(charter: Charter, request: Mapping[str, Any], *, success: bool) -> None:
    """Decide (it must be allowed), redeem the grant and report the outcome."""
    record = charter.decide(request)
    assert record.verdict is Verdict.ALLOW, (request["action"], record.decision.reasons)
    assert record.grant is not None
    charter.redeem(record.grant.id, record.grant.token, request["args"])
    charter.record_outcome(record.id, success=success, error=None if success else "it failed")


def notes(charter: Charter, clock: FakeClock, count: int, *, every: int = 1) -> None:
    """`count` notes that ran, a second apart; one in `every` succeeded."""
    for i in range(count):
        act(charter, NOTE, success=i % every == 0)
        clock.advance(seconds=1)


def demoted(charter: Charter, clock: FakeClock) -> None:
    """Failures that demote support-bot, then 100 clean notes: a proposal is open."""
    notes(charter, clock, 20, every=5)  # 4 of 20 succeed
    clock.advance(minutes=1)
    charter.monitors.evaluate()  # the alerts fire; support-bot is demoted
    clock.advance(minutes=1)
    notes(charter, clock, 100)
    clock.advance(minutes=1)
    charter.monitors.evaluate()  # support-bot's level is proposed back
