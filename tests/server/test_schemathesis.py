"""Property-based API tests from /openapi.json: whatever a client sends, never a 500.

Schemathesis generates requests from the document, valid ones and invalid ones, and
checks every answer: no server error, a documented status, the documented content type
and a body matching the documented schema. Examples per operation are bounded and
derandomized so the suite is fast and repeatable.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from _api import Keys, bearer
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.generation import GenerationMode

from charter import Charter
from charter.server import create_app

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]

OPERATIONS = [
    "create_decision",
    "get_decision",
    "redeem_grant",
    "record_outcome",
    "list_ledger",
    "verify_ledger",
    "get_agent",
    "put_agent",
    "list_approvals",
    "get_approval",
    "similar_approvals",
    "batch_approvals",
    "approve_approval",
    "deny_approval",
    "modify_approval",
    "claim_approval",
    "list_halts",
    "create_halt",
    "delete_halt",
    "list_breakers",
    "list_monitors",
    "monitor_series",
    "list_alerts",
    "list_proposals",
    "accept_proposal",
    "decline_proposal",
    "healthz",
    "readyz",
    "metrics",
]


def test_every_operation_is_fuzzed(charter: Charter) -> None:
    """The list below covers every operation the document declares."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(charter))
    declared = {result.ok().definition.raw["operationId"] for result in schema.get_all_operations()}
    assert declared == set(OPERATIONS)


# Operations that take no input have no invalid input to generate.
WITH_INPUT = [
    op
    for op in OPERATIONS
    if op not in ("verify_ledger", "list_halts", "healthz", "readyz", "metrics")
]
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in WITH_INPUT
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_api_conforms(charter: Charter, keys: Keys, operation_id: str, mode: Any) -> None:
    """Generated requests get documented, well-formed answers and never a 500."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(charter))
    operation = schema.find_operation_by_id(operation_id)
    headers = bearer(keys.admin)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
