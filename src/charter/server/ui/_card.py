"""What the approval card shows, gathered in one blocking call, and the modify check.

The card is read in one worker thread (several store reads), so a page costs one thread
hop, not one per section. Modified arguments are checked here against the action's
contract before the gateway is asked, so a reviewer sees every violation at once, by
field, while typing; the gateway checks again (and decides the request again) on submit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from charter.controls import CONTROLLER
from charter.errors import CharterError
from charter.ledger import events
from charter.server._body import parse_json
from charter.server._errors import ApiError
from charter.server.ui._text import Finding, findings_in
from charter.service import Charter, Principal

__all__ = [
    "Card",
    "Checked",
    "can_act",
    "check_args",
    "contract_lines",
    "demotion_of",
    "load_card",
]

#: How many of the agent's earlier decisions on the same action the card lists.
RECENT = 5


@dataclass(slots=True)
class Card:
    """Everything one approval card shows."""

    approval: dict[str, Any]
    recent: list[dict[str, Any]] = field(default_factory=list)
    levels: list[dict[str, Any]] = field(default_factory=list)
    similar: int = 0
    contract: list[dict[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    decision_seq: int | None = None
    limit: int | None = None
    ceiling: int | None = None
    #: The autonomy controller's demotion of the agent still standing (see `demotion_of`).
    demotion: dict[str, Any] | None = None


def can_act(reviewer: Principal, approval: Mapping[str, Any]) -> bool:
    """Whether the reviewer's groups include one the approval is routed to.

    Only a hint for the page (the gateway decides, and says why when it refuses).
    """
    if reviewer.role not in ("reviewer", "admin"):
        return False
    groups = set((approval.get("route") or {}).get("groups", ()))
    return bool(groups & set(reviewer.groups))


def contract_lines(charter: Charter, approval: Mapping[str, Any]) -> list[dict[str, str]]:
    """The action's argument contract as one line per field: name, type, limits, required."""
    profile = approval.get("agent_profile") or {}
    plan = charter.bundle.plan_for(
        str(approval["agent"]), str(profile.get("role") or ""), str(approval["action"])
    )
    if plan is None:
        return []
    schema = plan.schema
    required = set(schema.get("required", ()))
    out = []
    for name, spec in (schema.get("properties") or {}).items():
        spec = spec if isinstance(spec, Mapping) else {}
        parts = []
        if "enum" in spec:
            parts.append(" | ".join(str(v) for v in spec["enum"]))
        elif "type" in spec:
            parts.append(str(spec["type"]))
        for key, word in (
            ("exclusiveMinimum", "> {}"),
            ("minimum", "≥ {}"),
            ("exclusiveMaximum", "< {}"),
            ("maximum", "≤ {}"),
            ("maxLength", "at most {} chars"),
            ("pattern", "matches {}"),
        ):
            if key in spec:
                parts.append(word.format(spec[key]))
        out.append({"name": str(name), "rule": ", ".join(parts), "required": str(name in required)})
    return out


def demotion_of(charter: Charter, agent: str) -> dict[str, Any] | None:
    """The controller's demotion of `agent` still standing, with why, as the ledger says.

    The monitors remember the rule, when, and the levels; the reason, the figures that
    held and the window are in the demotion's ledger entry, read back here (an agent has
    a handful of autonomy entries, so reading them all is cheap).
    """
    standing = charter.monitors.demotion(agent)
    if standing is None:
        return None
    found: dict[str, Any] = {**standing, "seq": None, "reason": "", "figures": [], "window": None}
    for entry in charter.store.entries(kinds={events.AUTONOMY_CHANGED}):
        payload = entry.payload_object()
        if payload.get("agent") == agent and payload.get("by") == CONTROLLER:
            found.update(
                seq=entry.seq,
                reason=str(payload.get("reason") or ""),
                figures=list(payload.get("figures") or []),
                window=payload.get("window"),
            )
    return found


def load_card(charter: Charter, approval_id: str) -> Card | None:
    """Read one approval and everything its card shows; None when there is none.

    Blocking: call it from a worker thread.
    """
    view = charter.get_approval(approval_id)
    if view is None:
        return None
    approval = view.to_json()
    card = Card(approval)
    decision = charter.get_decision(str(approval["decision_id"]))
    if decision is not None:
        card.decision_seq = decision.record.seq
        card.limit = decision.record.decision.autonomy_max_risk
        card.ceiling = decision.record.decision.ceiling
    recent = charter.recent_decisions(
        str(approval["agent"]), str(approval["action"]), limit=RECENT, before_seq=card.decision_seq
    )
    card.recent = [{**v.to_json(), "args": dict(v.record.request.args)} for v in recent]
    if view.state == "pending":
        try:  # both read the approval as pending; it may settle between the two reads
            card.levels = charter.autonomy_preview(approval_id)
            card.similar = max(0, len(charter.similar_approvals(approval_id)) - 1)
        except CharterError:
            card.levels, card.similar = [], 0
    card.contract = contract_lines(charter, approval)
    card.demotion = demotion_of(charter, str(approval["agent"]))
    card.findings = [
        *findings_in(approval.get("args", {}), "args"),
        *findings_in(approval.get("context", {}), "context"),
    ]
    if approval.get("original_args") and approval["original_args"] != approval.get("args"):
        card.findings += list(findings_in(approval["original_args"], "the original args"))
    return card


@dataclass(frozen=True, slots=True)
class Checked:
    """Modified arguments as typed, parsed and checked against the contract."""

    text: str
    args: dict[str, Any] | None
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the arguments parse and meet the contract."""
        return self.args is not None and not self.errors


def _where(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "the arguments"


def check_args(charter: Charter, approval: Mapping[str, Any], text: str) -> Checked:
    """Parse a reviewer's JSON and check it against the action's contract.

    Every violation is listed (not only the first), each naming its field.
    """
    try:
        value = parse_json(text.encode("utf-8"))
    except ApiError as exc:
        return Checked(text, None, (exc.message,))
    if not isinstance(value, dict):
        return Checked(text, None, ("the arguments must be a JSON object: `{...}`",))
    profile = approval.get("agent_profile") or {}
    plan = charter.bundle.plan_for(
        str(approval["agent"]), str(profile.get("role") or ""), str(approval["action"])
    )
    if plan is None:
        return Checked(
            text, value, (f"`{approval['action']}` is no longer in the agent's envelope",)
        )
    errors = sorted(plan.explain_contract().iter_errors(value), key=lambda e: list(e.path))
    messages = tuple(f"`{_where(e.path)}`: {e.message}" for e in errors)
    if not messages and value == approval.get("args"):
        messages = ("these are the arguments already asked for; change something first",)
    return Checked(text, value, messages)
