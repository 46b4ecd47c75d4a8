"""The application service: `Charter` and the collaborators it delegates to.

Everything here may do I/O (the store, the writer, webhooks); the decision itself and
the approval state machine stay pure in `charter.policy` and `charter.approvals`.
"""

from charter.service._access import PRINCIPAL_TTL, ROLES, KeyRing, Principal
from charter.service._audit import (
    check_recorded_state,
    load_recorded_bundle,
    recorded_entries,
    replay_ledger,
    replay_store,
)
from charter.service._breakers import Breakers, CircuitView
from charter.service._charter import Charter
from charter.service._clock import format_time, system_clock
from charter.service._desk import SETTLED_STATES, ApprovalDesk, approval_row
from charter.service._monitors import Monitors, fold_ledger
from charter.service._notify import (
    RetryPolicy,
    Webhook,
    WebhookNotifier,
    approval_link,
    json_message,
    sign,
    slack_message,
    verify_signature,
)
from charter.service._records import ApprovalView, DecisionRecord, DecisionView, Redemption
from charter.service._tickets import GrantTicket, grant_token, token_matches

__all__ = [
    "PRINCIPAL_TTL",
    "ROLES",
    "SETTLED_STATES",
    "ApprovalDesk",
    "ApprovalView",
    "Breakers",
    "Charter",
    "CircuitView",
    "DecisionRecord",
    "DecisionView",
    "GrantTicket",
    "KeyRing",
    "Monitors",
    "Principal",
    "Redemption",
    "RetryPolicy",
    "Webhook",
    "WebhookNotifier",
    "approval_link",
    "approval_row",
    "check_recorded_state",
    "fold_ledger",
    "format_time",
    "grant_token",
    "json_message",
    "load_recorded_bundle",
    "recorded_entries",
    "replay_ledger",
    "replay_store",
    "sign",
    "slack_message",
    "system_clock",
    "token_matches",
    "verify_signature",
]
