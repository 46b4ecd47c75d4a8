"""Bad input: never a 500, never a ledger change; 413, 400 or 422 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _api import Keys, bearer, refund
from starlette.testclient import TestClient

from charter import Charter
from charter.model import MAX_DEPTH

BODY_ROUTES = [
    ("POST", "/v1/decisions"),
    ("POST", "/v1/grants/redeem"),
    ("POST", "/v1/outcomes"),
    ("PUT", "/v1/agents/support-bot"),
]


def send(
    client: TestClient,
    keys: Keys,
    raw: bytes | str,
    method: str = "POST",
    path: str = "/v1/decisions",
) -> Any:
    headers = {**bearer(keys.admin), "Content-Type": "application/json"}
    return client.request(method, path, content=raw, headers=headers)


@pytest.fixture
def unchanged(charter: Charter, keys: Keys):
    """Assert the ledger did not grow during the test."""
    before = charter.store.head().seq
    yield
    assert charter.store.head().seq == before


class TestSize:
    """Bodies over the limit are 413, by `Content-Length` or as streamed."""

    @pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
    def test_declared_too_large(self, client: TestClient, keys: Keys, unchanged, method, path):
        """A body larger than the limit (64 KiB in these tests) is refused."""
        raw = json.dumps({**refund(), "context": {"rationale": "x" * 70_000}})
        response = send(client, keys, raw, method, path)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    def test_streamed_too_large(self, client: TestClient, keys: Keys, unchanged):
        """A chunked body without `Content-Length` is cut off at the limit."""

        def chunks():
            yield b'{"agent": "support-bot", "action": "a.b", "args": {"x": "'
            for _ in range(100):
                yield b"y" * 1024
            yield b'"}}'

        response = client.post("/v1/decisions", content=chunks(), headers=bearer(keys.admin))
        assert response.status_code == 413


class TestMalformed:
    """Anything that is not one strict JSON document is 400, naming the field when it can."""

    @pytest.mark.parametrize(
        ("raw", "code", "field"),
        [
            ("{", "malformed_json", None),
            ("", "malformed_json", None),
            (b"\xff\xfe{}", "malformed_json", None),
            ('{"agent": "a", "agent": "b"}', "duplicate_key", "agent"),
            ('{"agent": "a", "args": {"x": NaN}}', "non_finite_number", "args.x"),
            ('{"agent": "a", "args": {"x": [1, Infinity]}}', "non_finite_number", "args.x[1]"),
            ('{"agent": "a", "args": {"x": 1e999}}', "non_finite_number", "args.x"),
            ("[" * 100 + "]" * 100, "too_deep", None),
            ("[" * 20_000 + "]" * 20_000, "too_deep", None),
            ("1" * 5000, "malformed_json", None),
            ('{"agent": "a", "args": {"x": "ok \\ud800"}}', "malformed_json", "args.x"),
        ],
    )
    def test_strict_json(self, client: TestClient, keys: Keys, unchanged, raw, code, field):
        """Malformed text, duplicate keys, NaN/Infinity and deep nesting are refused."""
        response = send(client, keys, raw)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == code
        if field is not None:
            assert error["field"] == field

    def test_a_surrogate_pair_is_one_character(self, client: TestClient, keys: Keys):
        """An escaped pair (here U+1F600) is ordinary text, decided as usual."""
        body = (
            '{"agent": "support-bot", "action": "crm.note", "args": {"customer_id": "c-1",'
            ' "text": "thanks \\ud83d\\ude00"}, "context": {"confidence": 0.9}}'
        )
        response = send(client, keys, body)
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
    def test_every_body_route_is_strict(
        self, client: TestClient, keys: Keys, unchanged, method, path
    ):
        """The same reader guards every route that takes a body."""
        response = send(client, keys, '{"a": 1, "a": 2}', method, path)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "duplicate_key"


class TestWrongShape:
    """Well-formed JSON of the wrong shape is 422 naming the field."""

    @pytest.mark.parametrize(
        ("request_", "field"),
        [
            ([], ""),
            ({**refund(), "agent": 7}, "agent"),
            ({k: v for k, v in refund().items() if k != "action"}, "action"),
            ({**refund(), "args": "x"}, "args"),
            ({**refund(), "context": {"confidence": 2}}, "context.confidence"),
            ({**refund(), "extra": 1}, "extra"),
            ({**refund(), "args": {"n": 2**60}}, "args.n"),
        ],
    )
    def test_decision_request(self, client: TestClient, keys: Keys, unchanged, request_, field):
        """The request check names the offending field and records nothing."""
        response = send(client, keys, json.dumps(request_))
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "request_invalid"
        assert (error["field"] or "") == field

    def test_deep_args_name_the_field(self, client: TestClient, keys: Keys, unchanged):
        """Arguments nested past the request limit name where (the body reader's limit)."""
        deep: object = 1
        for _ in range(40):
            deep = {"d": deep}
        response = send(client, keys, json.dumps({**refund(), "args": {"x": deep}}))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "too_deep"
        assert error["field"].startswith("args.x.d")

    @pytest.mark.parametrize(("levels", "status"), [(MAX_DEPTH, 200), (MAX_DEPTH + 1, 400)])
    def test_the_limit_is_the_models(self, client: TestClient, keys: Keys, levels, status):
        """Below `args`, lists and objects may nest `MAX_DEPTH` levels, and not one more."""
        deep: object = 1
        for _ in range(levels):
            deep = [deep]
        response = send(client, keys, json.dumps({**refund(), "args": {"x": deep}}))
        assert response.status_code == status, response.text

    def test_bad_idempotency_header(self, client: TestClient, keys: Keys, unchanged):
        """An over-long `Idempotency-Key` names the header."""
        headers = {**bearer(keys.admin), "Idempotency-Key": "k" * 300}
        response = client.post("/v1/decisions", json=refund(), headers=headers)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "Idempotency-Key"

    def test_unknown_route_and_method(self, client: TestClient, keys: Keys):
        """Routing errors use the same error shape."""
        missing = client.get("/v2/nothing", headers=bearer(keys.admin))
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        wrong = client.delete("/v1/decisions", headers=bearer(keys.admin))
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


class TestNullContext:
    """`null` in the context means the field was not given."""

    def test_null_data_sources_is_accepted_as_absent(self, client: TestClient, keys: Keys):
        """A null list in the context is decided as if it were left out (found by schemathesis)."""
        request = {**refund(), "context": {"data_sources": None, "alternatives": None}}
        response = client.post("/v1/decisions", json=request, headers=bearer(keys.admin))
        assert response.status_code == 200
        assert response.json()["verdict"] == "allow"
