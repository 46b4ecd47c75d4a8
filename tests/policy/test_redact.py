"""Data rules: what the ledger keeps of personal data in a request (drop, hash, mask)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from charter.canonical import canonical_bytes
from charter.model import ActionRequest, AgentState
from charter.policy import decide, load_bundle, mask_value, redact_request

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy"
BUNDLE = load_bundle(EXAMPLE)
NOW = dt.datetime(2026, 3, 4, 10, tzinfo=dt.UTC)

MAIL = {
    "agent": "outreach-bot",
    "action": "mail.send",
    "args": {"to": "jane@customer.test", "subject": "Hi", "body": "Hello Jane", "campaign": "w"},
    "context": {"confidence": 0.9, "rationale": "customer opted in to winback mails"},
}
REFUND = {
    "agent": "support-bot",
    "action": "payments.refund",
    "args": {
        "order_id": "ord-1",
        "amount": 40,
        "currency": "USD",
        "customer_email": "jane@customer.test",
    },
    "context": {},
}


class TestRedactRequest:
    def test_hash(self) -> None:
        """`hash` stores the sha256 of the value's canonical JSON, so equal values still match."""
        stored, changed = redact_request(REFUND, BUNDLE)

        digest = hashlib.sha256(canonical_bytes("jane@customer.test")).hexdigest()
        assert stored["args"]["customer_email"] == f"sha256:{digest}"
        assert changed == [{"field": "args.customer_email", "store": "hash"}]

    def test_mask(self) -> None:
        """`mask` keeps enough of an address to recognise it, not to recover it."""
        stored, changed = redact_request(MAIL, BUNDLE)

        assert stored["args"]["to"] == "j***@customer.test"
        assert {"field": "args.to", "store": "mask"} in changed

    def test_drop(self) -> None:
        """`drop` removes the field from what the ledger stores."""
        stored, changed = redact_request(MAIL, BUNDLE)

        assert "body" not in stored["args"]
        assert changed == [
            {"field": "args.to", "store": "mask"},
            {"field": "args.body", "store": "drop"},
        ]

    def test_other_fields_are_kept(self) -> None:
        """Fields no data rule names are stored as sent."""
        stored, _ = redact_request(MAIL, BUNDLE)

        assert stored["args"]["subject"] == "Hi"
        assert stored["context"] == MAIL["context"]

    def test_request_is_not_modified(self) -> None:
        """Redaction returns a copy; the request the engine decides on keeps its values."""
        before = canonical_bytes(MAIL)

        redact_request(MAIL, BUNDLE)

        assert canonical_bytes(MAIL) == before

    def test_rule_applies_to_its_actions_only(self) -> None:
        """A data rule limited to some actions leaves other actions' fields alone."""
        note = {"agent": "support-bot", "action": "crm.note", "args": {"to": "jane@x.test"}}

        assert redact_request(note, BUNDLE) == (note, [])

    def test_absent_field_is_not_listed(self) -> None:
        """A field the request does not carry is not listed as changed."""
        refund = {**REFUND, "args": {"order_id": "ord-1", "amount": 4, "currency": "USD"}}

        assert redact_request(refund, BUNDLE)[1] == []

    def test_nested_context_field_on_every_action(self, tmp_path: Path) -> None:
        """A rule without `actions` applies to every action, and reaches into `context`."""
        policy = (EXAMPLE / "routes.yaml").read_text(encoding="utf-8") + (
            "  - field: context.labels.email\n    store: drop\n"
        )
        for name in ("agents.yaml", "roles.yaml", "rules.yaml", "risk.yaml"):
            (tmp_path / name).write_text((EXAMPLE / name).read_text("utf-8"), "utf-8")
        (tmp_path / "routes.yaml").write_text(policy, encoding="utf-8")
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "prod-migration.md").write_text("x", encoding="utf-8")
        note = {
            "agent": "support-bot",
            "action": "crm.note",
            "args": {"customer_id": "c", "text": "t"},
            "context": {"labels": {"email": "jane@x.test", "team": "a"}},
        }

        stored, changed = redact_request(note, load_bundle(tmp_path))

        assert stored["context"]["labels"] == {"team": "a"}
        assert changed == [{"field": "context.labels.email", "store": "drop"}]

    def test_redacted_request_replays_to_the_same_decision(self) -> None:
        """Decided with its redacted fields named, a stored request decides as the original did.

        The dropped `body` is required by the contract; naming it as redacted keeps the
        contract check from failing on what the ledger never kept.
        """
        stored, changed = redact_request(MAIL, BUNDLE)
        redacted = [c["field"] for c in changed]

        live = decide(ActionRequest.from_json(MAIL), BUNDLE, AgentState(), NOW)
        replayed = decide(
            ActionRequest.from_json(stored), BUNDLE, AgentState(), NOW, redacted=redacted
        )

        assert canonical_bytes(replayed.to_json()) == canonical_bytes(live.to_json())


class TestMaskValue:
    @pytest.mark.parametrize(
        ("value", "masked"),
        [
            ("jane@customer.test", "j***@customer.test"),
            ("a.b@c@d.test", "a***@d.test"),
            ("+44 20 7946 0958", "+***8"),
            ("abcd", "***"),
            ("", "***"),
            (12345, "***"),
            (None, "***"),
            (["x"], "***"),
        ],
    )
    def test_mask_value(self, value: object, masked: str) -> None:
        """Emails keep the first letter and domain, long text its ends, all else is `***`."""
        assert mask_value(value) == masked
