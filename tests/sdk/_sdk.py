"""Helpers shared by the SDK tests."""

from __future__ import annotations

from typing import Any

from charter import Charter

AGENT = "support-bot"
RATIONALE = "the parcel arrived damaged, photo attached"


def payloads(charter: Charter, kind: str) -> list[dict[str, Any]]:
    """The payloads of every ledger entry of `kind`, oldest first."""
    return [entry.payload_object() for entry in charter.store.entries(kinds=(kind,))]


def refund_args(order_id: str = "ord-1001", amount: float = 40) -> dict[str, Any]:
    return {"order_id": order_id, "amount": amount, "currency": "USD"}
