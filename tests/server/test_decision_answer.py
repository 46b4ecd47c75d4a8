"""The decision answer is written field by field: the same bytes as encoding `to_json`."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter.model import ActionRequest, Decision, Factor, Reason, RouteRef, Verdict
from charter.server._front import _answer_json
from charter.server._front import decision_answer as _decision_answer
from charter.service import DecisionRecord, GrantTicket

REQUEST = ActionRequest("support-bot", "crm.note", {"customer_id": "c-1", "text": "hi"})
ROUTE = RouteRef("finance-review", ("finance", "ops"), 2, 14400, "route:finance-managers")
GRANT = GrantTicket("g_1", "tok-en_x", "2026-03-07T22:04:59.123457Z", "sha256:ab")


def decision(**changes: Any) -> Decision:
    fields: dict[str, Any] = {
        "verdict": Verdict.ALLOW,
        "risk": 0,
        "factors": (),
        "reasons": (Reason("allowed", "within the envelope of role `support`"),),
        "policy_version": "sha256:44b9",
        "agent": "support-bot",
        "action": "crm.note",
        "role": "support",
        "autonomy_level": 2,
        "autonomy_max_risk": 45,
        "ceiling": 90,
    }
    return Decision(**{**fields, **changes})


def record(**changes: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "id": "0123abcd",
        "seq": 7,
        "at": "2026-03-07T21:59:59.123457Z",
        "request": REQUEST,
        "decision": decision(),
        "grant": GRANT,
    }
    return DecisionRecord(**{**fields, **changes})


def generic(rec: DecisionRecord) -> bytes:
    return _answer_json(rec.to_json()).encode()


def same(rec: DecisionRecord) -> None:
    """Both give the same bytes, or both fail alike (a lone surrogate is not UTF-8)."""
    try:
        expected = generic(rec)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            _decision_answer(rec)
    else:
        assert _decision_answer(rec) == expected


class TestDecisionAnswer:
    """`_decision_answer(record)` is `to_json` encoded as every other answer is."""

    @pytest.mark.parametrize(
        "rec",
        [
            record(),
            record(grant=None, replayed=True),
            record(
                grant=None,
                decision=decision(
                    verdict=Verdict.REQUIRE_APPROVAL,
                    risk=55,
                    factors=(Factor("low-confidence", 30, "not confident"), Factor("x", 25, "y")),
                    reasons=(
                        Reason("over_autonomy", "risk 55 is above the 45", None),
                        Reason("approval_rule", "refunds above 1,000", "large-refunds"),
                    ),
                    route=ROUTE,
                    runbook="runbooks/prod-migration.md",
                ),
                approval={"id": "apr_1", "state": "pending", "deadline": "2026-03-08T01:59Z"},
            ),
            record(
                grant=None,
                decision=decision(
                    verdict=Verdict.DENY,
                    reasons=(Reason("unknown_agent", "agent `nobody` is not defined"),),
                    agent="nobody",
                    role=None,
                    autonomy_level=None,
                    autonomy_max_risk=None,
                ),
                approval={"id": None, "state": "refused", "code": "no_route", "reason": "r"},
            ),
            record(
                id='quote " back \\ slash',
                decision=decision(agent="bøt \u2028 ✓ \x00 \U0001f600", risk=-1, ceiling=0),
            ),
            record(decision=decision(agent="lone \ud83d surrogate")),
        ],
    )
    def test_same_bytes(self, rec: DecisionRecord) -> None:
        """Each shape of decision (grant, approval, route, factors, none) gives the same bytes."""
        same(rec)

    @given(
        text=st.text(),
        number=st.integers(min_value=-(2**53), max_value=2**53),
        level=st.none() | st.integers(min_value=-5, max_value=5),
        replayed=st.booleans(),
    )
    def test_same_bytes_for_any_text(
        self, text: str, number: int, level: int | None, replayed: bool
    ) -> None:
        """Any text (escapes, surrogates, non-ASCII) and any number is written alike."""
        rec = record(
            id=text,
            seq=number,
            decision=decision(
                agent=text, role=text or None, autonomy_level=level, risk=number, runbook=text
            ),
            grant=GrantTicket(text, text, text, text),
            replayed=replayed,
        )
        same(rec)

    def test_unusual_types_take_the_encoder(self) -> None:
        """A float, an enum or a str subclass where an int or a str is usual encodes alike."""
        rec = record(decision=decision(risk=2.5, role=Verdict.DENY, autonomy_level=True))
        same(rec)
