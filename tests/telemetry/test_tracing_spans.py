"""The server's spans: a decision's, its approval steps', its grant's and its outcome's."""

from __future__ import annotations

from typing import Any

import pytest
from _telemetry import (
    AGENT_SPAN,
    TRACE_ID,
    TRACEPARENT,
    Secrets,
    bearer,
    hex_parent,
    hex_span,
    hex_trace,
    named,
    refund,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from charter import Charter
from charter.ledger import events
from charter.server import create_app
from charter.telemetry import Telemetry, TraceParent, span_id_for
from charter.telemetry._tracing import Tracing

DECISION_SPAN = "execute_tool payments.refund"


def decide(server: TestClient, secrets: Secrets, body: dict[str, Any], **headers: str) -> Any:
    answer = server.post("/v1/decisions", json=body, headers=bearer(secrets.agent, **headers))
    assert answer.status_code == 200, answer.text
    return answer


def recorded_trace(charter: Charter, decision_id: str) -> Any:
    """The `trace_id` of the decision's request as its ledger entry holds it."""
    for entry in charter.store.entries(kinds=(events.DECISION,)):
        payload = entry.payload_object()
        if payload["decision_id"] == decision_id:
            return payload["request"].get("trace_id")
    raise AssertionError(f"no decision entry {decision_id}")


class TestDecisionSpan:
    """`POST /v1/decisions` is one server span in the agent's trace, named by the GenAI rules."""

    def test_it_continues_the_agents_traceparent(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """The span is a child of the agent's span, in the agent's trace, of kind server."""
        answer = decide(server, secrets, refund(), traceparent=TRACEPARENT)
        span = named(spans.get_finished_spans(), DECISION_SPAN)
        assert hex_trace(span) == TRACE_ID
        assert hex_parent(span) == AGENT_SPAN
        assert span.parent is not None
        assert span.parent.is_remote
        assert span.kind is SpanKind.SERVER
        assert hex_span(span) == span_id_for(answer.json()["id"])

    def test_it_carries_the_tool_call_conventions_and_the_verdict(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """gen_ai.* names the tool call and the agent; charter.* the decision and its policy."""
        decided = decide(server, secrets, refund(), traceparent=TRACEPARENT).json()
        attributes = dict(named(spans.get_finished_spans(), DECISION_SPAN).attributes or {})
        assert attributes == {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "payments.refund",
            "gen_ai.agent.id": "support-bot",
            "gen_ai.agent.name": "support-bot",
            "charter.decision.id": decided["id"],
            "charter.verdict": "allow",
            "charter.risk": decided["risk"],
            "charter.policy.version": decided["policy_version"],
            "http.request.method": "POST",
            "http.route": "/v1/decisions",
            "http.response.status_code": 200,
        }

    def test_an_opened_approval_is_named(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """A decision that needs people names the approval it opened."""
        decided = decide(server, secrets, refund(2500)).json()
        attributes = named(spans.get_finished_spans(), DECISION_SPAN).attributes or {}
        assert attributes["charter.verdict"] == "require_approval"
        assert attributes["charter.approval.id"] == decided["approval"]["id"]

    def test_the_answer_names_the_span_in_traceresponse(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """`traceresponse` is the decision span's trace, id and flags, for the agent to go on."""
        answer = decide(server, secrets, refund(), traceparent=TRACEPARENT)
        span = named(spans.get_finished_spans(), DECISION_SPAN)
        assert answer.headers["traceresponse"] == f"00-{TRACE_ID}-{hex_span(span)}-01"

    def test_the_ledger_records_the_agents_trace(
        self, charter: Charter, server: TestClient, secrets: Secrets
    ) -> None:
        """With no `trace_id` in the body, the traceparent's trace id is the request's."""
        decided = decide(server, secrets, refund(), traceparent=TRACEPARENT).json()
        assert recorded_trace(charter, decided["id"]) == TRACE_ID

    def test_the_bodys_own_trace_id_is_kept(
        self, charter: Charter, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """A body's `trace_id` is what the ledger keeps; the span still follows the header."""
        body = refund(trace_id="run-42")
        decided = decide(server, secrets, body, traceparent=TRACEPARENT).json()
        assert recorded_trace(charter, decided["id"]) == "run-42"
        assert hex_trace(named(spans.get_finished_spans(), DECISION_SPAN)) == TRACE_ID

    def test_without_a_traceparent_the_new_trace_is_recorded(
        self, charter: Charter, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """An untraced agent's decision roots a trace, and the ledger records that trace."""
        decided = decide(server, secrets, refund()).json()
        span = named(spans.get_finished_spans(), DECISION_SPAN)
        assert span.parent is None
        assert recorded_trace(charter, decided["id"]) == hex_trace(span)

    def test_an_invalid_traceparent_is_ignored(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """A malformed header starts a trace of its own instead of failing the request."""
        decide(server, secrets, refund(), traceparent=f"00-{TRACE_ID.upper()}-{AGENT_SPAN}-01")
        assert named(spans.get_finished_spans(), DECISION_SPAN).parent is None

    def test_a_replay_is_a_span_of_its_own(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """The same key again: a second span in the asker's trace, marked a replay."""
        key = {"Idempotency-Key": "refund-1001"}
        first = decide(server, secrets, refund(), **key).json()
        again = decide(server, secrets, refund(), traceparent=TRACEPARENT, **key)
        found = [s for s in spans.get_finished_spans() if s.name == DECISION_SPAN]
        assert len(found) == 2
        original, replay = found
        assert (replay.attributes or {})["charter.decision.replayed"] is True
        assert (replay.attributes or {})["charter.decision.id"] == first["id"]
        assert hex_span(original) == span_id_for(first["id"])
        assert hex_parent(replay) == AGENT_SPAN
        assert hex_span(replay) != hex_span(original)
        assert again.headers["traceresponse"] == f"00-{TRACE_ID}-{hex_span(replay)}-01"

    def test_an_unsampled_trace_is_not_recorded(
        self, charter: Charter, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """The agent does not record its trace: neither does Charter; the ledger still names it."""
        unsampled = f"00-{TRACE_ID}-{AGENT_SPAN}-00"
        answer = decide(server, secrets, refund(), traceparent=unsampled)
        decided = answer.json()
        assert not [s for s in spans.get_finished_spans() if s.name == DECISION_SPAN]
        assert answer.headers["traceresponse"] == f"00-{TRACE_ID}-{span_id_for(decided['id'])}-00"
        assert recorded_trace(charter, decided["id"]) == TRACE_ID

    def test_the_providers_sampler_decides(self, charter: Charter, secrets: Secrets) -> None:
        """A sampler other than the default is asked: `ALWAYS_OFF` records nothing."""
        exporter = InMemorySpanExporter()
        tracing = Tracing.create(processors=[SimpleSpanProcessor(exporter)], sampler=ALWAYS_OFF)
        app = create_app(charter, telemetry=Telemetry(tracing=tracing))
        with TestClient(app) as client:
            answer = decide(client, secrets, refund())
        assert exporter.get_finished_spans() == ()
        assert answer.headers["traceresponse"].endswith("-00")

    def test_a_refusal_names_its_code(
        self, server: TestClient, spans: InMemorySpanExporter
    ) -> None:
        """A request refused before deciding is a span with `error.type`; a 4xx is no error."""
        answer = server.post(
            "/v1/decisions", json=refund(), headers=bearer("chk_nobody", traceparent=TRACEPARENT)
        )
        assert answer.status_code == 401
        span = named(spans.get_finished_spans(), "execute_tool")
        assert (span.attributes or {})["error.type"] == "unauthenticated"
        assert (span.attributes or {})["http.response.status_code"] == 401
        assert span.status.status_code is StatusCode.UNSET
        assert hex_parent(span) == AGENT_SPAN


def approve_flow(
    server: TestClient, secrets: Secrets, verb: str = "approve", body: Any = None
) -> dict[str, Any]:
    """Decide a 2500 refund in the agent's trace, then take one reviewer step on it."""
    decided = decide(server, secrets, refund(2500), traceparent=TRACEPARENT).json()
    approval_id = decided["approval"]["id"]
    stepped = server.post(
        f"/v1/approvals/{approval_id}/{verb}", json=body or {}, headers=bearer(secrets.reviewer)
    )
    assert stepped.status_code == 200, stepped.text
    return {"decision": decided, "approval_id": approval_id}


class TestApprovalSpans:
    """A reviewer's step, however much later, is a child of its decision's span."""

    @pytest.mark.parametrize(
        ("verb", "body", "state"),
        [
            ("approve", {"note": "checked the order"}, "approved"),
            ("deny", {"reason": "refund already issued"}, "denied"),
            ("claim", None, "pending"),
            ("modify", {"args": {"order_id": "ord-1001", "amount": 2000, "currency": "USD"}}, None),
        ],
    )
    def test_each_step_is_a_child_of_the_decision(
        self,
        server: TestClient,
        secrets: Secrets,
        spans: InMemorySpanExporter,
        verb: str,
        body: Any,
        state: str | None,
    ) -> None:
        """approve, deny, claim, modify: `charter.approval.<step>` under the decision's span."""
        flow = approve_flow(server, secrets, verb, body)
        finished = spans.get_finished_spans()
        decision = named(finished, DECISION_SPAN)
        step = named(finished, f"charter.approval.{verb}")
        assert hex_trace(step) == TRACE_ID
        assert hex_parent(step) == hex_span(decision)
        attributes = step.attributes or {}
        assert attributes["charter.approval.id"] == flow["approval_id"]
        assert attributes["charter.decision.id"] == flow["decision"]["id"]
        assert attributes["charter.approval.step"] == verb
        if state is not None:
            assert attributes["charter.approval.state"] == state

    def test_a_step_links_to_the_reviewers_request(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """The reviewer's HTTP request (FastAPI's span, its own trace) is linked, not parent."""
        approve_flow(server, secrets)
        finished = spans.get_finished_spans()
        step = named(finished, "charter.approval.approve")
        request = named(finished, "POST /v1/approvals/{approval_id}/approve")
        assert [f"{link.context.span_id:016x}" for link in step.links] == [hex_span(request)]
        assert hex_trace(request) != TRACE_ID

    def test_a_refused_step_names_its_code(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """Approving twice: the second step's span says `not_pending` (or `already_voted`)."""
        flow = approve_flow(server, secrets)
        again = server.post(
            f"/v1/approvals/{flow['approval_id']}/approve", headers=bearer(secrets.reviewer)
        )
        assert again.status_code == 409
        steps = [s for s in spans.get_finished_spans() if s.name == "charter.approval.approve"]
        assert (steps[-1].attributes or {})["error.type"] == again.json()["error"]["code"]

    def test_a_batch_links_every_decision_it_settles(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """One batch span, linked to each decision's span in that decision's own trace."""
        ids, decisions = [], []
        for order in (1, 2):
            decided = decide(server, secrets, refund(2500, order=order)).json()
            decisions.append(decided["id"])
            ids.append(decided["approval"]["id"])
        answer = server.post(
            "/v1/approvals/batch",
            json={"ids": ids, "decision": "approve"},
            headers=bearer(secrets.reviewer),
        )
        assert answer.status_code == 200, answer.text
        batch = named(spans.get_finished_spans(), "charter.approval.batch")
        linked = sorted(f"{link.context.span_id:016x}" for link in batch.links)
        assert linked == sorted(span_id_for(d) for d in decisions)


class TestOneTrace:
    """Request, decision, approval, grant and outcome: one trace, parent to child."""

    def test_the_whole_life_of_a_request(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """Decide (agent's trace), approve (reviewer), redeem and report after traceresponse."""
        flow = approve_flow(server, secrets)
        decision_id = flow["decision"]["id"]
        read = server.get(f"/v1/decisions/{decision_id}", headers=bearer(secrets.agent))
        parent = read.headers["traceresponse"]
        assert TraceParent.parse(parent) == TraceParent(TRACE_ID, span_id_for(decision_id))
        state = read.json()
        redeem = {"grant_id": state["grant"]["id"], "token": state["grant"]["token"]}
        redeemed = server.post(
            "/v1/grants/redeem",
            json={**redeem, "args": state["approval"]["args"]},
            headers=bearer(secrets.agent, traceparent=parent),
        )
        assert redeemed.status_code == 200, redeemed.text
        reported = server.post(
            "/v1/outcomes",
            json={"decision_id": decision_id, "success": True, "duration_ms": 12},
            headers=bearer(secrets.agent, traceparent=parent),
        )
        assert reported.status_code == 200, reported.text
        finished = spans.get_finished_spans()
        decision = named(finished, DECISION_SPAN)
        approval = named(finished, "charter.approval.approve")
        grant = named(finished, "charter.grant.redeem")
        outcome = named(finished, "charter.outcome.record")
        assert {hex_trace(s) for s in (decision, approval, grant, outcome)} == {TRACE_ID}
        assert hex_parent(decision) == AGENT_SPAN
        for child in (approval, grant, outcome):
            assert hex_parent(child) == hex_span(decision)
        assert (grant.attributes or {})["charter.grant.id"] == redeem["grant_id"]
        assert (grant.attributes or {})["charter.decision.id"] == decision_id
        assert (outcome.attributes or {})["charter.outcome.success"] is True
        assert (outcome.attributes or {})["charter.decision.id"] == decision_id

    def test_a_refused_redemption_names_its_code(
        self, server: TestClient, secrets: Secrets, spans: InMemorySpanExporter
    ) -> None:
        """Redeeming with other arguments: the grant span says `args_mismatch`."""
        decided = decide(server, secrets, refund(), traceparent=TRACEPARENT).json()
        refused = server.post(
            "/v1/grants/redeem",
            json={
                "grant_id": decided["grant"]["id"],
                "token": decided["grant"]["token"],
                "args": {"order_id": "ord-1001", "amount": 4000, "currency": "USD"},
            },
            headers=bearer(secrets.agent, traceparent=TRACEPARENT),
        )
        assert refused.status_code == 403
        grant = named(spans.get_finished_spans(), "charter.grant.redeem")
        assert (grant.attributes or {})["error.type"] == "args_mismatch"
        assert hex_parent(grant) == AGENT_SPAN
