"""Fixtures for the HTTP API: a gateway on a fake clock, its app, keys for every role."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _api import Keys
from starlette.testclient import TestClient

from charter import Bundle, Charter, load_bundle
from charter.examples import EXAMPLE_POLICY
from charter.server import create_app
from charter.testing import FakeClock, make_charter


@pytest.fixture(scope="session")
def bundle() -> Bundle:
    return load_bundle(EXAMPLE_POLICY)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def charter(bundle: Bundle, store_target: str, clock: FakeClock) -> Iterator[Charter]:
    with make_charter(bundle, store_target, clock=clock) as opened:
        yield opened


@pytest.fixture
def keys(charter: Charter) -> Keys:
    secrets = {
        "admin": charter.create_key("admin", label="test admin")[1],
        "agent": charter.create_key("agent", agent="support-bot")[1],
        "trainee": charter.create_key("agent", agent="support-bot-trainee")[1],
        "reviewer": charter.create_key("reviewer")[1],
        "auditor": charter.create_key("auditor")[1],
        "policy_admin": charter.create_key("policy-admin")[1],
    }
    agent_id = next(k["key_id"] for k in charter.list_keys() if k["agent"] == "support-bot")
    return Keys(**secrets, agent_id=agent_id)


@pytest.fixture
def client(charter: Charter) -> Iterator[TestClient]:
    with TestClient(create_app(charter, max_body=64 * 1024)) as test_client:
        yield test_client
