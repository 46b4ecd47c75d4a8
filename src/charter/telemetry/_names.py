"""The names Charter's spans and their attributes use, in one place for code and docs.

Where the OpenTelemetry GenAI semantic conventions name a thing (a tool call, the agent
making it), their names are used, as published in `opentelemetry-semantic-conventions`
0.66 (the GenAI group has since moved to its own repository, unchanged); the rest are
Charter's own, under `charter.`. HTTP attributes follow the HTTP server conventions.
"""

from __future__ import annotations

__all__ = [
    "APPROVAL_ID",
    "APPROVAL_STATE",
    "APPROVAL_STEP",
    "DECISION_ID",
    "DECISION_REPLAYED",
    "ERROR_TYPE",
    "EXECUTE_TOOL",
    "GEN_AI_AGENT_ID",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_TOOL_NAME",
    "GRANT_ID",
    "HTTP_METHOD",
    "HTTP_ROUTE",
    "HTTP_STATUS",
    "OUTCOME_SUCCESS",
    "POLICY_VERSION",
    "RISK",
    "SPAN_APPROVAL",
    "SPAN_APPROVAL_BATCH",
    "SPAN_OUTCOME",
    "SPAN_REDEEM",
    "VERDICT",
    "decision_span_name",
]

# -- GenAI semantic conventions (execute tool span) -----------------------------------

#: `gen_ai.operation.name`; a decision is about one tool call: `execute_tool`.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
EXECUTE_TOOL = "execute_tool"
#: `gen_ai.tool.name`: the action, such as `payments.refund`.
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
#: `gen_ai.agent.id` and `gen_ai.agent.name`: the agent asking (Charter knows it by id).
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"

# -- HTTP and errors (stable conventions) ---------------------------------------------

HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
#: `error.type`: the stable error code of a refused request (`grant_used`, ...).
ERROR_TYPE = "error.type"

# -- Charter's own ------------------------------------------------------------------------

DECISION_ID = "charter.decision.id"
DECISION_REPLAYED = "charter.decision.replayed"
VERDICT = "charter.verdict"
RISK = "charter.risk"
POLICY_VERSION = "charter.policy.version"
APPROVAL_ID = "charter.approval.id"
APPROVAL_STEP = "charter.approval.step"
APPROVAL_STATE = "charter.approval.state"
GRANT_ID = "charter.grant.id"
OUTCOME_SUCCESS = "charter.outcome.success"

#: Span names other than the decision's: `charter.approval.approve` and so on.
SPAN_APPROVAL = "charter.approval.{step}"
SPAN_APPROVAL_BATCH = "charter.approval.batch"
SPAN_REDEEM = "charter.grant.redeem"
SPAN_OUTCOME = "charter.outcome.record"


def decision_span_name(action: str | None) -> str:
    """The decision span's name: `execute_tool {gen_ai.tool.name}`, as the conventions say."""
    return f"{EXECUTE_TOOL} {action}" if action else EXECUTE_TOOL
