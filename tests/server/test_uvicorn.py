"""The real thing: `charter serve` as a subprocess spoken to over TCP, and `charter keys`.

Each server runs under `timeout`, so it stops by itself even if the test process dies,
and is stopped with SIGTERM (then SIGKILL) when the test ends. Each test runs on a
SQLite file and on a PostgreSQL database (`--store`), but for those marked
`stores("sqlite")`, which check something the store plays no part in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from click.testing import Result
from typer.testing import CliRunner

from _serve import (
    Serving,
    create_key,
    free_port,  # noqa: F401 - test_kill9 and test_replicas import it from here
    serve,
)
from charter.cli import app

LIFETIME = "60"  # seconds a test server may live at most
TOO_LARGE = (413, "payload_too_large")


def ledger_lines(db: str) -> list[str]:
    result = CliRunner().invoke(app, ["ledger", "show", "--store", db, "--json"])
    return result.stdout.splitlines()


def start(db: str) -> Serving:
    return serve(db, lifetime=LIFETIME, within=20)


def keys(*args: str) -> Result:
    """Run `charter keys ...` in process (the server tests run `serve` as a subprocess)."""
    return CliRunner().invoke(app, ["keys", *args])


@pytest.fixture
def db(store_target: str) -> str:
    """The store: a SQLite file, or a PostgreSQL database's URL."""
    return store_target


@pytest.fixture
def server(db: str) -> Iterator[Serving]:
    running = start(db)
    yield running
    running.stop()


class TestKeysCommand:
    """`charter keys create|list|revoke` manage keys in the ledger's database."""

    def test_create_list_revoke(self, db: str):
        """A key is printed once, listed without its secret, and revoked by id."""
        secret = create_key(db, "--role", "agent", "--agent", "support-bot", "--label", "bot")
        assert secret.startswith("chk_")
        listed = keys("list", "--store", db, "--json")
        rows = json.loads(listed.stdout)
        assert [(k["role"], k["agent"], k["label"]) for k in rows] == [
            ("agent", "support-bot", "bot")
        ]
        assert secret not in listed.stdout
        assert keys("revoke", rows[0]["key_id"], "--store", db).exit_code == 0
        assert keys("revoke", rows[0]["key_id"], "--store", db).exit_code == 1
        table = keys("list", "--store", db)
        assert "support-bot" in table.stdout
        kinds = [json.loads(line)["kind"] for line in ledger_lines(db)]
        assert kinds == ["key.created", "key.revoked"]

    @pytest.mark.stores("sqlite")  # refused before any store is opened; then a missing file
    def test_bad_role_is_a_usage_error(self, db: str):
        """An unknown role, or an agent key without its agent, exits 2."""
        assert keys("create", "--db", db, "--role", "root").exit_code == 2
        assert keys("create", "--db", db, "--role", "agent").exit_code == 2
        assert keys("list", "--db", str(Path(db) / "missing")).exit_code == 2


class TestServe:
    """`charter serve` under uvicorn, spoken to over TCP."""

    def test_no_keys_runs_closed_and_says_how(self, db: str):
        """A fresh server refuses everything and prints the command for the first key."""
        server = start(db)
        try:
            response = httpx2.get(f"{server.url}/v1/ledger", headers={"Authorization": "Bearer x"})
            assert response.status_code == 401
            secret = create_key(db, "--role", "admin")
            headers = {"Authorization": f"Bearer {secret}"}
            assert httpx2.get(f"{server.url}/v1/ledger", headers=headers).status_code == 200
        finally:
            stderr = server.stop()
        option = "--store" if "://" in db else "--db"
        assert f"charter keys create --role admin {option} {db}" in stderr

    def test_round_trip(self, db: str):
        """Decide, replay by key, redeem once, report, page and verify, over real HTTP."""
        agent_key = create_key(db, "--role", "agent", "--agent", "support-bot")
        agent = {"Authorization": f"Bearer {agent_key}"}
        admin = {"Authorization": f"Bearer {create_key(db, '--role', 'admin')}"}
        server = start(db)
        try:
            with httpx2.Client(base_url=server.url, timeout=10) as http:
                request = {
                    "agent": "support-bot",
                    "action": "payments.refund",
                    "args": {"order_id": "ord-1", "amount": 40, "currency": "USD"},
                    "context": {"confidence": 0.9, "rationale": "damaged"},
                }
                keyed = {**agent, "Idempotency-Key": "k-1"}
                first = http.post("/v1/decisions", json=request, headers=keyed).json()
                second = http.post("/v1/decisions", json=request, headers=keyed).json()
                assert first["verdict"] == "allow"
                assert (second["id"], second["grant"]) == (first["id"], first["grant"])
                redeem = {
                    "grant_id": first["grant"]["id"],
                    "token": first["grant"]["token"],
                    "args": request["args"],
                }
                assert http.post("/v1/grants/redeem", json=redeem, headers=agent).status_code == 200
                assert http.post("/v1/grants/redeem", json=redeem, headers=agent).status_code == 409
                outcome = {"decision_id": first["id"], "success": True, "duration_ms": 3}
                assert http.post("/v1/outcomes", json=outcome, headers=agent).status_code == 200
                big = b'{"agent": "' + b"x" * (1024 * 1024) + b'"}'
                assert http.post("/v1/decisions", content=big, headers=agent).status_code == 413
                page = http.get("/v1/ledger", params={"limit": 1000}, headers=admin).json()
                kinds = [e["kind"] for e in page["entries"]]
                assert kinds.count("decision") == 1
                assert kinds[-3:] == ["grant.redeemed", "grant.refused", "outcome"]
                assert http.get("/v1/ledger/verify", headers=admin).json()["ok"] is True
                assert http.get("/readyz").status_code == 200
                metrics = http.get("/metrics").text
                assert 'charter_decisions_total{verdict="allow"} 1.0' in metrics
        finally:
            server.stop()
        assert CliRunner().invoke(app, ["ledger", "verify", "--store", db]).exit_code == 0


@pytest.mark.stores("sqlite")  # the body is refused before the store is reached
class TestOversizedBodies:
    """A body over `--max-body` reads as 413 to a plain blocking client, never a reset."""

    @pytest.fixture
    def served(self, db: str) -> Iterator[tuple[Serving, dict[str, str]]]:
        secret = create_key(db, "--role", "agent", "--agent", "support-bot")
        running = start(db)
        yield running, {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        running.stop()

    @staticmethod
    def post(url: str, body: bytes | Iterator[bytes], headers: dict[str, str]) -> tuple[int, str]:
        """POST with `urllib`, which sends the whole body before it reads the answer.

        Returns the status and the error code of a refusal ("" for a success).
        """
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status), ""
        except urllib.error.HTTPError as error:
            return error.code, str(json.loads(error.read())["error"]["code"])

    @pytest.mark.parametrize("mebibytes", [2, 8])
    def test_after_ordinary_requests_a_large_body_gets_413(
        self, served: tuple[Serving, dict[str, str]], mebibytes: int
    ) -> None:
        """A few decisions, then a declared 2 or 8 MiB body: 413 each time, three times."""
        server, headers = served
        ordinary = json.dumps(
            {
                "agent": "support-bot",
                "action": "payments.refund",
                "args": {"order_id": "ord-1", "amount": 4, "currency": "USD"},
                "context": {"confidence": 0.9, "rationale": "late"},
            }
        ).encode()
        big = b'{"agent": "' + b"x" * (mebibytes * 1024 * 1024) + b'"}'
        for _ in range(3):
            for _ in range(3):
                assert self.post(f"{server.url}/v1/decisions", ordinary, headers) == (200, "")
            assert self.post(f"{server.url}/v1/decisions", big, headers) == TOO_LARGE

    def test_a_chunked_upload_past_the_limit_gets_413(
        self, served: tuple[Serving, dict[str, str]]
    ) -> None:
        """With no `Content-Length` the limit is found while streaming; still a 413."""
        server, headers = served
        chunks = (b"x" * 65536 for _ in range(48))  # 3 MiB, sent chunked
        chunked = {**headers, "Transfer-Encoding": "chunked"}
        assert self.post(f"{server.url}/v1/decisions", chunks, chunked) == TOO_LARGE

    def test_an_approval_route_answers_413_too(
        self, served: tuple[Serving, dict[str, str]]
    ) -> None:
        """The routes FastAPI serves read bodies through the same bounded reader."""
        server, headers = served
        big = b'{"note": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        assert self.post(f"{server.url}/v1/approvals/ap-none/approve", big, headers) == TOO_LARGE
