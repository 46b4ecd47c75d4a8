"""Structured logs: every line one JSON object, with the request's ids on its lines.

The server tests run `charter serve` as a subprocess under `timeout` (so it stops even if
the test process dies) on a SQLite file and on PostgreSQL, and read its standard error.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
import structlog
from _telemetry import TRACE_ID, TRACEPARENT, bearer, refund
from typer.testing import CliRunner

from _serve import create_key, free_port
from charter.cli import app
from charter.errors import CharterError
from charter.examples import EXAMPLE_POLICY
from charter.telemetry import configure_logging, resolve_log_format
from charter.telemetry._logs import RequestLog, bind

CHARTER = [sys.executable, "-m", "charter"]
LIFETIME = "90"  # seconds a test server may live at most


@dataclass
class Server:
    """A `charter serve` in a process group of its own, its standard error read as it goes."""

    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> list[str]:
        """Stop the server (SIGTERM, then SIGKILL, to its group); the lines it wrote."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.reader.join(timeout=5)
        return list(self.lines)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    reader: threading.Thread = field(init=False)


def start(store: str, *options: str, env: dict[str, str] | None = None, notice: str = "") -> Server:
    """Serve `store` until it answers `/healthz` (and, if given, has logged `notice`)."""
    port = free_port()
    command = ["timeout", LIFETIME, *CHARTER, "serve", "--policy", str(EXAMPLE_POLICY)]
    command += ["--store", store, "--port", str(port), *options]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its workers too are stopped with it
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    server.reader = threading.Thread(target=server.read, daemon=True)
    server.reader.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("the server exited early:\n" + "\n".join(server.stop()))
        try:
            answered = httpx2.get(f"{server.url}/healthz", timeout=1).status_code == 200
        except httpx2.TransportError:
            answered = False
        if answered and server.said(notice):
            return server
        time.sleep(0.1)
    said = "\n".join(server.stop())
    raise AssertionError(f"the server did not answer /healthz within 60 s:\n{said}")


@pytest.fixture
def agent_key(store_target: str) -> str:
    return create_key(store_target, "--role", "agent", "--agent", "support-bot")


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as JSON; a line that is not one object fails the test, naming it."""
    objects = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(value, dict), line
        objects.append(value)
    return objects


class TestServeJson:
    """`charter serve --log-format json`: each line of standard error is one JSON object."""

    def test_a_decisions_lines_carry_its_decision_and_trace(
        self, store_target: str, agent_key: str
    ) -> None:
        """The access line of a decision names its id, the agent's trace, agent and action."""
        server = start(store_target, "--log-format", "json")
        try:
            answer = httpx2.post(
                f"{server.url}/v1/decisions",
                json=refund(),
                headers=bearer(agent_key, traceparent=TRACEPARENT),
            )
            assert answer.status_code == 200, answer.text
            decision_id = answer.json()["id"]
        finally:
            lines = parsed(server.stop())
        for line in lines:
            assert {"timestamp", "level", "logger", "event"} <= set(line), line
        mine = [line for line in lines if line.get("decision_id") == decision_id]
        assert mine, lines
        assert all(line["trace_id"] == TRACE_ID for line in mine)
        access = [line for line in mine if line["logger"] == "charter.access"]
        assert len(access) == 1
        assert access[0]["method"] == "POST"
        assert access[0]["path"] == "/v1/decisions"
        assert access[0]["status"] == 200
        assert access[0]["agent"] == "support-bot"
        assert access[0]["action"] == "payments.refund"
        assert access[0]["duration_ms"] >= 0
        # uvicorn's own lines and the startup notice are JSON too.
        assert any(line["logger"].startswith("uvicorn") for line in lines)
        assert any(line["event"].startswith("serving the API on") for line in lines)

    def test_a_refusal_is_an_access_line_with_its_code(
        self, store_target: str, agent_key: str
    ) -> None:
        """A 401 is logged with its status and error code, and the agent's trace."""
        server = start(store_target, "--log-format", "json")
        try:
            answer = httpx2.post(
                f"{server.url}/v1/decisions",
                json=refund(),
                headers=bearer("chk_wrong", traceparent=TRACEPARENT),
            )
            assert answer.status_code == 401
        finally:
            lines = parsed(server.stop())
        access = [line for line in lines if line["logger"] == "charter.access"]
        refused = [line for line in access if line["path"] == "/v1/decisions"]
        assert [(r["status"], r["error"], r["trace_id"]) for r in refused] == [
            (401, "unauthenticated", TRACE_ID)
        ]

    @pytest.mark.stores("postgresql")  # several workers need PostgreSQL
    def test_every_worker_logs_json(self, store_target: str, agent_key: str) -> None:
        """With `--workers 2`, the supervisor's and each worker's lines are JSON."""
        server = start(
            store_target,
            "--log-format",
            "json",
            "--workers",
            "2",
            notice="by 2 worker processes",  # every worker is ready
        )
        try:
            for order in range(4):
                answer = httpx2.post(
                    f"{server.url}/v1/decisions",
                    json=refund(order=order),
                    headers=bearer(agent_key, traceparent=TRACEPARENT),
                )
                assert answer.status_code == 200, answer.text
        finally:
            lines = parsed(server.stop())
        notices = [line["event"] for line in lines if line["logger"] == "charter.serve"]
        assert any("by 2 worker processes" in notice for notice in notices)
        access = [line for line in lines if line["logger"] == "charter.access"]
        decided = [line for line in access if line["path"] == "/v1/decisions"]
        assert len(decided) == 4
        assert {line["trace_id"] for line in decided} == {TRACE_ID}

    @pytest.mark.stores("sqlite")  # logging is the same whatever the store
    def test_the_environment_chooses_json_and_access_lines_can_go(
        self, store_target: str, agent_key: str
    ) -> None:
        """`CHARTER_LOG_FORMAT=json` with `--no-access-log`: JSON lines, none per request."""
        env = {**os.environ, "CHARTER_LOG_FORMAT": "json"}
        server = start(store_target, "--no-access-log", env=env)
        try:
            httpx2.post(f"{server.url}/v1/decisions", json=refund(), headers=bearer(agent_key))
        finally:
            lines = parsed(server.stop())
        assert lines
        assert not [line for line in lines if line["logger"] == "charter.access"]

    @pytest.mark.stores("sqlite")
    def test_an_unknown_format_is_a_usage_error(self, tmp_path: Any) -> None:
        """`--log-format xml`: exit 2, naming the choices."""
        command = ["serve", "--policy", str(EXAMPLE_POLICY), "--db", str(tmp_path / "c.db")]
        result = CliRunner().invoke(app, [*command, "--log-format", "xml"])
        assert result.exit_code == 2
        assert "`json` or `console`" in result.stderr


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Logging configured in this process, writing to a string; put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return parsed(stream.getvalue().splitlines())


class TestConfigureLogging:
    """`configure_logging` renders every stdlib line with structlog's `ProcessorFormatter`."""

    def test_a_charter_line_carries_what_the_request_bound(self, captured: io.StringIO) -> None:
        """A `charter.*` warning emitted while a request is handled names its ids."""
        bind(decision_id="d-1", trace_id=TRACE_ID, agent="support-bot", approval_id=None)
        logging.getLogger("charter.service").warning("ledger writer slow: %d ms", 250)
        (line,) = lines_of(captured)
        assert line["event"] == "ledger writer slow: 250 ms"
        assert line["level"] == "warning"
        assert line["logger"] == "charter.service"
        assert (line["decision_id"], line["trace_id"], line["agent"]) == (
            "d-1",
            TRACE_ID,
            "support-bot",
        )
        assert "approval_id" not in line
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]

    def test_an_exception_is_one_line(self, captured: io.StringIO) -> None:
        """A traceback is a field of the line, not lines of its own."""
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("charter.server").exception("unhandled error")
        (line,) = lines_of(captured)
        assert "ValueError: boom" in line["exception"]

    def test_uvicorns_lines_go_through_it(self, captured: io.StringIO) -> None:
        """The loggers of uvicorn lose their own handlers; their lines are JSON like the rest."""
        logging.getLogger("uvicorn.error").info(
            "Started server process [%d]", 7, extra={"color_message": "x"}
        )
        (line,) = lines_of(captured)
        assert line["event"] == "Started server process [7]"
        assert "color_message" not in line

    def test_an_access_line_names_the_request(self, captured: io.StringIO) -> None:
        """Method, path, status, duration and the ids bound, even from a worker thread."""
        log = RequestLog("GET", "/v1/decisions/d-1")
        thread = threading.Thread(
            target=contextvars.copy_context().run, args=(bind,), kwargs={"decision_id": "d-1"}
        )
        thread.start()
        thread.join()
        log.status = 200
        log.close()
        (line,) = lines_of(captured)
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
        assert (line["logger"], line["event"]) == ("charter.access", "request")
        assert (line["method"], line["path"], line["status"], line["decision_id"]) == (
            "GET",
            "/v1/decisions/d-1",
            200,
            "d-1",
        )
        assert line["duration_ms"] >= 0

    def test_an_access_line_is_the_same_through_logging(self, captured: io.StringIO) -> None:
        """With a handler of someone else's beside ours, the line goes through `logging`."""
        other = logging.StreamHandler(io.StringIO())
        logging.getLogger().addHandler(other)
        try:
            log = RequestLog("POST", "/v1/outcomes")
            log.note(decision_id="d-2", approval_id=None)
            log.status = 409
            log.close()
        finally:
            logging.getLogger().removeHandler(other)
        (line,) = lines_of(captured)
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
        assert (line["path"], line["status"], line["decision_id"]) == ("/v1/outcomes", 409, "d-2")
        assert "approval_id" not in line

    def test_lines_during_a_request_carry_its_fields(self, captured: io.StringIO) -> None:
        """A warning logged while a request is handled names what the request bound."""
        log = RequestLog("POST", "/v1/decisions", access=False)
        bind(decision_id="d-3", trace_id=TRACE_ID)
        logging.getLogger("charter.server").warning("slow commit")
        log.close()
        logging.getLogger("charter.server").warning("after")
        during, after = lines_of(captured)
        assert (during["decision_id"], during["trace_id"]) == ("d-3", TRACE_ID)
        assert "decision_id" not in after

    def test_console_is_one_readable_line(self) -> None:
        """`console` renders the same fields for a person, one line each."""
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        stream = io.StringIO()
        try:
            configure_logging("console", stream=stream)
            logging.getLogger("charter.server").warning("store slow")
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            structlog.reset_defaults()
        text = stream.getvalue()
        assert "store slow" in text
        assert "charter.server" in text
        assert len(text.splitlines()) == 1


class TestResolveFormat:
    """`--log-format`, then `CHARTER_LOG_FORMAT`, then console."""

    def test_the_order(self) -> None:
        """The flag wins over the environment, which wins over the default."""
        assert resolve_log_format(None, {}) == "console"
        assert resolve_log_format(None, {"CHARTER_LOG_FORMAT": "json"}) == "json"
        assert resolve_log_format("console", {"CHARTER_LOG_FORMAT": "json"}) == "console"

    def test_a_bad_value_names_where_it_came_from(self) -> None:
        """The error names the flag or the variable, and the two choices."""
        with pytest.raises(CharterError, match="CHARTER_LOG_FORMAT `xml`"):
            resolve_log_format(None, {"CHARTER_LOG_FORMAT": "xml"})
