"""Fixtures for telemetry: a traced app over a gateway, its spans in memory, keys, clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _telemetry import Secrets
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from charter import Bundle, Charter, load_bundle
from charter.examples import EXAMPLE_POLICY
from charter.server import create_app
from charter.telemetry import Telemetry
from charter.telemetry._tracing import Tracing
from charter.testing import FakeClock, make_charter


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(EXAMPLE_POLICY)


@pytest.fixture
def charter(bundle: Bundle, store_target: str) -> Iterator[Charter]:
    with make_charter(bundle, store_target, clock=FakeClock()) as opened:
        yield opened


@pytest.fixture
def secrets(charter: Charter) -> Secrets:
    return Secrets(
        agent=charter.create_key("agent", agent="support-bot")[1],
        reviewer=charter.create_key("reviewer", label="rita@example.com", groups=("finance",))[1],
    )


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """Where the server's spans go, as each ends (no batching: a test reads them at once)."""
    return InMemorySpanExporter()


@pytest.fixture
def tracing(spans: InMemorySpanExporter) -> Iterator[Tracing]:
    traced = Tracing.create(processors=[SimpleSpanProcessor(spans)])
    yield traced
    traced.shutdown()


@pytest.fixture
def server(charter: Charter, tracing: Tracing) -> Iterator[TestClient]:
    """The traced app, called in-process through its real routes."""
    telemetry = Telemetry(tracing=tracing, log_context=True, access_log=True)
    with TestClient(create_app(charter, telemetry=telemetry)) as client:
        yield client
