"""The SDK carries the agent's trace to every request that follows a decision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2
import pytest
from _telemetry import Secrets, bearer, hex_parent, hex_span, hex_trace, named, refund
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from starlette.testclient import TestClient

from charter import Charter
from charter.sdk import AsyncClient, Client
from charter.server import create_app
from charter.telemetry import Telemetry, span_id_for
from charter.telemetry._tracing import Tracing

ARGS = refund()["args"]
CONTEXT = refund()["context"]


@pytest.fixture
def agent_spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def agent_tracer(agent_spans: InMemorySpanExporter) -> Iterator[Tracer]:
    """The agent's own tracer, a provider of its own (never the global one)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(agent_spans))
    yield provider.get_tracer("agent")
    provider.shutdown()


@pytest.fixture
def client(server: TestClient, secrets: Secrets) -> Iterator[Client]:
    with Client("http://testserver", secrets.agent, transport=server._transport) as made:
        yield made


class TestWithTheAgentsSpan:
    """An agent that traces: each request is a child of the span it has current."""

    def test_decide_redeem_report_are_children_of_the_agents_span(
        self,
        client: Client,
        agent_tracer: Tracer,
        agent_spans: InMemorySpanExporter,
        spans: InMemorySpanExporter,
    ) -> None:
        """One governed step under the agent's `run` span: the server's spans hang from it."""
        with agent_tracer.start_as_current_span("run"):
            decided = client.decide("support-bot", "payments.refund", ARGS, context=CONTEXT)
            assert decided.grant is not None
            client.redeem(decided.grant, ARGS)
            client.report_outcome(decided.id, success=True, duration_ms=3)
        run = named(agent_spans.get_finished_spans(), "run")
        server = spans.get_finished_spans()
        for name in ("execute_tool payments.refund", "charter.grant.redeem"):
            assert hex_trace(named(server, name)) == hex_trace(run)
            assert hex_parent(named(server, name)) == hex_span(run)
        outcome = named(server, "charter.outcome.record")
        assert (hex_trace(outcome), hex_parent(outcome)) == (hex_trace(run), hex_span(run))

    def test_an_approval_wait_joins_the_same_trace(
        self,
        client: Client,
        server: TestClient,
        secrets: Secrets,
        agent_tracer: Tracer,
        spans: InMemorySpanExporter,
    ) -> None:
        """Decide, a reviewer approves, the agent waits and redeems: all in one trace."""
        with agent_tracer.start_as_current_span("run") as run:
            decided = client.decide("support-bot", "payments.refund", refund(2500)["args"])
            assert decided.approval is not None
            approved = server.post(
                f"/v1/approvals/{decided.approval.id}/approve", headers=bearer(secrets.reviewer)
            )
            assert approved.status_code == 200, approved.text
            status = client.wait(decided.id, timeout=5)
            assert status.grant is not None
            assert status.args is not None
            client.redeem(status.grant, status.args)
        trace_id = f"{run.get_span_context().trace_id:032x}"
        finished = spans.get_finished_spans()
        names = {"execute_tool payments.refund", "charter.approval.approve"}
        names |= {"charter.grant.redeem", "GET /v1/decisions/{decision_id}"}
        assert {hex_trace(named(finished, name)) for name in names} == {trace_id}
        assert hex_parent(named(finished, "charter.approval.approve")) == span_id_for(decided.id)


class TestWithoutASpan:
    """An agent that does not trace: its redeem and outcome follow the decision's trace."""

    def test_redeem_and_outcome_are_children_of_the_decision(
        self, client: Client, spans: InMemorySpanExporter
    ) -> None:
        """The server roots the trace; `traceresponse` carries it to the next requests."""
        decided = client.decide("support-bot", "payments.refund", ARGS, context=CONTEXT)
        assert decided.grant is not None
        client.redeem(decided.grant, ARGS)
        client.report_outcome(decided.id, success=False, error="card declined")
        finished = spans.get_finished_spans()
        decision = named(finished, "execute_tool payments.refund")
        assert decision.parent is None
        for name in ("charter.grant.redeem", "charter.outcome.record"):
            assert hex_trace(named(finished, name)) == hex_trace(decision)
            assert hex_parent(named(finished, name)) == hex_span(decision)

    def test_a_resumed_decision_is_followed_from_its_read(
        self,
        charter: Charter,
        server: TestClient,
        secrets: Secrets,
        spans: InMemorySpanExporter,
    ) -> None:
        """A client that did not decide (another process) learns the trace by reading it."""
        with Client("http://testserver", secrets.agent, transport=server._transport) as first:
            decided = first.decide("support-bot", "payments.refund", ARGS, context=CONTEXT)
        with Client("http://testserver", secrets.agent, transport=server._transport) as later:
            status = later.get_decision(decided.id)
            assert status is not None
            assert status.grant is not None
            later.redeem(status.grant, ARGS)
        finished = spans.get_finished_spans()
        decision = named(finished, "execute_tool payments.refund")
        assert hex_parent(named(finished, "charter.grant.redeem")) == hex_span(decision)

    def test_the_async_client_does_the_same(
        self, charter: Charter, secrets: Secrets, tracing: Tracing, spans: InMemorySpanExporter
    ) -> None:
        """`AsyncClient` sends the same headers: its outcome is a child of the decision."""
        app = create_app(charter, telemetry=Telemetry(tracing=tracing))

        async def run() -> None:
            transport = httpx2.ASGITransport(app)
            async with AsyncClient("http://testserver", secrets.agent, transport=transport) as c:
                decided = await c.decide("support-bot", "payments.refund", ARGS, context=CONTEXT)
                await c.report_outcome(decided.id, success=True)

        asyncio.run(run())
        finished = spans.get_finished_spans()
        decision = named(finished, "execute_tool payments.refund")
        assert hex_parent(named(finished, "charter.outcome.record")) == hex_span(decision)
