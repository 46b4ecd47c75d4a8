"""Fixtures for the SDK: an embedded gateway on SQLite, its HTTP app, and clients of both.

`sync_client` and `async_client` are parametrized over the transports, so every test
that uses them checks that the embedded service and the HTTP API behave the same.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from _sdk import AGENT
from starlette.testclient import TestClient

from charter import Bundle, Charter, load_bundle
from charter.examples import EXAMPLE_POLICY
from charter.sdk import AsyncClient, AsyncEmbeddedClient, Client, EmbeddedClient
from charter.server import create_app
from charter.testing import FakeClock, make_charter

#: An action whose args hold a list, so a test can change one in place after deciding.
BULK_CANCEL = """\
      orders.bulk_cancel:
        description: cancel several orders that have not shipped
        args:
          type: object
          required: [order_ids]
          additionalProperties: false
          properties:
            order_ids: {type: array, items: {type: string}}
"""


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The example bundle plus `orders.bulk_cancel` for the support role."""
    folder = tmp_path_factory.mktemp("sdk") / "policy"
    shutil.copytree(EXAMPLE_POLICY, folder)
    roles = folder / "roles.yaml"
    anchor = "      orders.cancel:\n"
    roles.write_text(roles.read_text().replace(anchor, BULK_CANCEL + anchor, 1))
    return load_bundle(folder)


@pytest.fixture
def clock() -> FakeClock:
    """The gateway's clock: still unless a test advances it (approval deadlines)."""
    return FakeClock()


@pytest.fixture
def charter(bundle: Bundle, store_target: str, clock: FakeClock) -> Iterator[Charter]:
    with make_charter(bundle, store_target, clock=clock) as opened:
        yield opened


@pytest.fixture
def api_key(charter: Charter) -> str:
    return charter.create_key("agent", agent=AGENT)[1]


@pytest.fixture
def app(charter: Charter) -> Any:
    return create_app(charter)


@pytest.fixture
def test_server(app: Any) -> Iterator[TestClient]:
    """The app behind a transport that calls it in-process, through the real routes."""
    with TestClient(app) as server:
        yield server


@pytest.fixture
def http_client(test_server: TestClient, api_key: str) -> Iterator[Client]:
    with Client("http://testserver", api_key, transport=test_server._transport) as client:
        yield client


@pytest.fixture
def connect(
    request: pytest.FixtureRequest, charter: Charter
) -> Iterator[Callable[..., EmbeddedClient | Client]]:
    """Makes a new client of `sync_client`'s kind: the agent's process, restarted.

    It shares nothing with the first client but the server (or the ledger) it talks to.
    A test using it must use `sync_client` too, which says which kind.
    """
    made: list[Client] = []

    def new_client(**options: Any) -> EmbeddedClient | Client:
        if request.node.callspec.params.get("sync_client") == "embedded":
            return EmbeddedClient(charter, **options)
        server: TestClient = request.getfixturevalue("test_server")
        key: str = request.getfixturevalue("api_key")
        client = Client("http://testserver", key, transport=server._transport, **options)
        made.append(client)
        return client

    yield new_client
    for client in made:
        client.close()


@pytest.fixture(params=["embedded", "http"])
def sync_client(request: pytest.FixtureRequest, charter: Charter) -> EmbeddedClient | Client:
    if request.param == "embedded":
        return EmbeddedClient(charter)
    client: Client = request.getfixturevalue("http_client")
    return client


@pytest.fixture(params=["embedded", "http"])
def async_client(
    request: pytest.FixtureRequest, charter: Charter
) -> AsyncEmbeddedClient | AsyncClient:
    if request.param == "embedded":
        return AsyncEmbeddedClient(charter)
    transport = httpx2.ASGITransport(request.getfixturevalue("app"))
    return AsyncClient("http://testserver", request.getfixturevalue("api_key"), transport=transport)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
