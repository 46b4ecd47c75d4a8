"""What an alert's webhook says: the JSON body, and a Slack-compatible one.

Both name the alert, its severity, the group it fired for (agent, action), the condition
and the figure's value and sample, and carry the runbook: the JSON body whole, the Slack
one as its first lines and a link to the reviewer UI's page of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from charter.ledger import events

__all__ = ["json_alert", "runbook_link", "slack_alert", "slack_escape"]

#: Slack cuts a section's text at 3,000 characters; a little less leaves room for markup.
SLACK_TEXT_MAX = 1500
_RUNBOOK_LINES = 12


def slack_escape(text: Any, limit: int = SLACK_TEXT_MAX) -> str:
    """Text safe inside Slack mrkdwn: `&`, `<`, `>` would otherwise start links and mentions."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def runbook_link(base_url: str | None, runbook: str | None) -> str | None:
    """The reviewer UI's page of a runbook, or None without a base URL or runbook."""
    if not base_url or not runbook:
        return None
    return f"{base_url.rstrip('/')}/ui/runbooks/{quote(runbook)}"


def json_alert(
    event: str,
    alert: Mapping[str, Any],
    runbook: str | None,
    *,
    delivery_id: str,
    sent_at: str,
    base_url: str | None = None,
) -> dict[str, Any]:
    """The generic JSON body: `{event, alert, runbook, runbook_url, sent_at, delivery_id}`."""
    return {
        "event": event,
        "alert": dict(alert),
        "runbook": runbook,
        "runbook_url": runbook_link(base_url, alert.get("runbook")),
        "sent_at": sent_at,
        "delivery_id": delivery_id,
    }


def _where(alert: Mapping[str, Any]) -> str:
    agent, action = alert.get("agent"), alert.get("action")
    if agent and action:
        return f"`{slack_escape(action, 200)}` by `{slack_escape(agent, 200)}`"
    if agent:
        return f"agent `{slack_escape(agent, 200)}`"
    return "the fleet"


def slack_alert(
    event: str, alert: Mapping[str, Any], runbook: str | None, base_url: str | None = None
) -> dict[str, Any]:
    """A Slack-compatible body (`text` plus `blocks`) for an incoming-webhook URL."""
    fired = event == events.ALERT_FIRED
    severity = str(alert.get("severity") or "warning").upper()
    name = slack_escape(alert.get("alert", "?"), 200)
    title = f"{severity} {name} firing" if fired else f"Resolved: {name}"
    value = alert.get("value")
    figure = f"{alert.get('figure', '?')} = {value:.3g}" if isinstance(value, float) else ""
    detail = alert.get("condition", "") if fired else f"fired at {alert.get('fired_at', '?')}"
    text = f"{title} for {_where(alert).replace('`', '')}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}* for {_where(alert)}"}},
    ]
    facts = [f for f in (figure, f"on {alert.get('sample', 0)}", slack_escape(detail, 300)) if f]
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": " · ".join(facts)}})
    if alert.get("summary"):
        summary = slack_escape(alert["summary"], 500)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
    link = runbook_link(base_url, alert.get("runbook"))
    if runbook and fired:
        lines = runbook.strip().splitlines()[:_RUNBOOK_LINES]
        shown = slack_escape("\n".join(lines), SLACK_TEXT_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": shown}})
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Runbook>"}})
        text += f" <{link}|runbook>"
    return {"text": text, "blocks": blocks}
