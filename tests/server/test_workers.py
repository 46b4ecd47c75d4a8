"""`charter serve --workers N`: N processes on one PostgreSQL ledger, behind one address.

Each server is a real `charter serve` subprocess on a fresh database of the session's
PostgreSQL server, listening on 127.0.0.1, under `timeout` so that it stops by itself
even if the test process dies. Which worker answered a request is read from /proc: the
worker is the process holding the server's end of the request's TCP connection.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from _postgres import Cluster
from charter import Charter
from charter.cli import app
from charter.examples import EXAMPLE_POLICY
from charter.ledger import events
from charter.store import open_store, verify_store

LIFETIME = "120"  # seconds a test server may live at most
WAIT = 60.0  # seconds for a server to start, or to stop
FOLLOW = 1.0  # seconds within which every worker honours a change another one made


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie only waits to be reaped: it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent_of(int(entry.name)) == pid and alive(int(entry.name))
    ]


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def holder(client_port: int, server_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server's end of the connection from `client_port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)) == (
                server_port,
                client_port,
            ):
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) in inodes:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


@dataclass
class Answer:
    status: int
    body: Any
    worker: int | None  # the pid of the worker that answered


@dataclass
class Server:
    """A `charter serve --workers N` under `timeout`, its standard error read as it comes."""

    port: int
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def supervisor(self) -> int:
        """The `charter serve` process (the only child of `timeout`)."""
        deadline = time.monotonic() + WAIT
        while not (found := children(self.process.pid)):
            assert time.monotonic() < deadline, "timeout started no server"
            time.sleep(0.05)
        return found[0]

    def workers(self) -> list[int]:
        """The worker processes the supervisor runs now."""
        return sorted(p for p in children(self.supervisor) if b"spawn_main" in command_line(p))

    def ask(self, method: str, path: str, key: str | None = None, body: object = None) -> Answer:
        """One request on a connection of its own, and which worker answered it."""
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
        if key is not None:
            head.append(f"Authorization: Bearer {key}")
        if body is not None:
            head.append("Content-Type: application/json")
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + data)
            status, answer = read_answer(connection)
            # The connection is kept alive: the worker that answered still holds it.
            worker = holder(connection.getsockname()[1], self.port, self.workers())
        return Answer(status, answer, worker)

    def stop(self) -> None:
        """SIGTERM through `timeout` (to every process of the server), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)


def read_answer(connection: socket.socket) -> tuple[int, Any]:
    """Read one HTTP/1.1 response (Content-Length or chunked) and parse its JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}

    def more() -> bytes:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        return chunk

    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            rest += more()
        body = rest[:size]
    else:
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += more()
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += more()
            body, rest = body + rest[:size], rest[size + 2 :]
            if size == 0:
                break
    return status, json.loads(body) if body else None


def start(store: str, workers: int = 2) -> Server:
    """Start `charter serve --workers N` and wait for its notice (all workers listening)."""
    port = free_port()
    command = [
        "timeout", "-k", "10", LIFETIME, sys.executable, "-m", "charter", "serve",
        "--policy", str(EXAMPLE_POLICY), "--store", store, "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    server = Server(port, process)
    threading.Thread(target=server.read_stderr, daemon=True).start()
    deadline = time.monotonic() + WAIT
    while not any(line.startswith("serving the API on") for line in server.lines):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError("the server did not start:\n" + "\n".join(server.lines))
        time.sleep(0.05)
    return server


def create_key(store: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["keys", "create", "--store", store, *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def refund(agent: str, order: str) -> dict[str, Any]:
    return {
        "agent": agent,
        "action": "payments.refund",
        "args": {"order_id": order, "amount": 20, "currency": "USD"},
        "context": {"confidence": 0.95, "rationale": "the parcel arrived damaged"},
    }


def answers_from_every_worker(
    server: Server, key: str, agent: str, within: float = 30.0
) -> list[Answer]:
    """Decide refunds, each on a new connection, until both workers have answered."""
    answers: list[Answer] = []
    deadline = time.monotonic() + within
    while {a.worker for a in answers} != set(server.workers()):
        assert time.monotonic() < deadline, f"one worker answered everything: {answers}"
        answered = server.ask("POST", "/v1/decisions", key, refund(agent, f"ord-{len(answers)}"))
        assert answered.status == 200, answered
        answers.append(answered)
    return answers


@dataclass
class Keys:
    admin: str
    support: str
    trainee: str
    outreach: str


@pytest.fixture(scope="module")
def store(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture(scope="module")
def keys(store: str) -> Keys:
    return Keys(
        admin=create_key(store, "--role", "admin"),
        support=create_key(store, "--role", "agent", "--agent", "support-bot"),
        trainee=create_key(store, "--role", "agent", "--agent", "support-bot-trainee"),
        outreach=create_key(store, "--role", "agent", "--agent", "outreach-bot"),
    )


@pytest.fixture(scope="module")
def server(store: str, keys: Keys) -> Iterator[Server]:
    running = start(store)
    yield running
    running.stop()


class TestTwoWorkers:
    """Two workers on one database serve one address as one ledger."""

    def test_the_notice_is_said_once_and_names_the_workers(self, server: Server) -> None:
        """The supervisor announces once, after both workers listen, saying how many."""
        notices = [line for line in server.lines if line.startswith("serving the API on")]
        assert notices == [
            f"serving the API on {server.url} by 2 worker processes (Ctrl-C to stop)"
        ]
        assert len(server.workers()) == 2

    def test_requests_are_answered_by_two_processes(self, server: Server, keys: Keys) -> None:
        """New connections land on either worker, and each answers from the same ledger."""
        answers = answers_from_every_worker(server, keys.outreach, "outreach-bot")
        assert len({a.worker for a in answers}) == 2
        seqs = [a.body["seq"] for a in answers]
        assert seqs == sorted(seqs)  # one after the other, whichever worker wrote them
        assert len(set(seqs)) == len(seqs)

    def test_a_burst_of_decisions_is_one_chain(self, server: Server, store: str, keys: Keys):
        """200 concurrent decisions: every one answered is in the ledger, which verifies."""

        def decide(thread: int) -> list[tuple[str, int]]:
            done = []
            with httpx2.Client(base_url=server.url, timeout=30) as client:
                for n in range(25):
                    answer = client.post(
                        "/v1/decisions",
                        json=refund("outreach-bot", f"ord-{thread * 100 + n}"),
                        headers={"Authorization": f"Bearer {keys.outreach}"},
                    )
                    assert answer.status_code == 200, answer.text
                    done.append((answer.json()["id"], answer.json()["seq"]))
            return done

        with ThreadPoolExecutor(8) as pool:
            acknowledged = [d for batch in pool.map(decide, range(8)) for d in batch]
        assert len(acknowledged) == 200
        assert len({seq for _, seq in acknowledged}) == 200
        with open_store(store, read_only=True) as ledger:
            assert verify_store(ledger).ok
            for decision_id, seq in acknowledged:
                entry = ledger.entry(seq)
                assert entry is not None
                assert entry.kind == events.DECISION
                assert entry.payload_object()["decision_id"] == decision_id

    def test_an_agent_change_made_through_one_worker_holds_on_both(
        self, server: Server, keys: Keys
    ) -> None:
        """Moving an agent to a role without refunds, by one request: both workers deny."""
        before = answers_from_every_worker(server, keys.support, "support-bot")
        assert {a.body["verdict"] for a in before} == {"allow"}
        changed = server.ask(
            "PUT",
            "/v1/agents/support-bot",
            keys.admin,
            {
                "role": "outreach",
                "owner": "growth@example.com",
                "model_id": "gpt-5-mini",
                "model_version": "2026-08-01",
                "autonomy": 2,
            },
        )
        assert changed.status == 200, changed
        time.sleep(FOLLOW)
        after = answers_from_every_worker(server, keys.support, "support-bot")
        assert {a.body["verdict"] for a in after} == {"deny"}
        assert {a.body["reasons"][0]["code"] for a in after} == {"outside_envelope"}

    def test_a_halt_from_another_process_holds_on_both(
        self, server: Server, store: str, keys: Keys
    ) -> None:
        """A halt appended by a third process is honoured by every worker within a second."""
        before = answers_from_every_worker(server, keys.trainee, "support-bot-trainee")
        assert {a.body["verdict"] for a in before} == {"allow"}
        with Charter(EXAMPLE_POLICY, store) as elsewhere:
            elsewhere.halt("agent", "support-bot-trainee", reason="incident 7", by="oncall")
        time.sleep(FOLLOW)
        after = answers_from_every_worker(server, keys.trainee, "support-bot-trainee")
        assert {a.body["verdict"] for a in after} == {"deny"}
        assert all("halted" in {r["code"] for r in a.body["reasons"]} for a in after)


class TestSupervision:
    """The supervisor replaces a worker that dies, and stops every worker on a signal."""

    def test_a_killed_worker_is_replaced_and_sigterm_loses_no_decision(
        self, postgres: Cluster
    ) -> None:
        """A killed worker is replaced; SIGTERM under load ends all, losing no answered decision."""
        store = postgres.database()
        key = create_key(store, "--role", "agent", "--agent", "support-bot")
        server = start(store)
        try:
            first, second = server.workers()
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + WAIT
            while len(server.workers()) != 2 or first in server.workers():
                assert time.monotonic() < deadline, "the killed worker was not replaced"
                time.sleep(0.1)
            replacement = next(p for p in server.workers() if p != second)
            while f"worker 1 (pid {replacement}) is serving" not in server.lines:
                assert time.monotonic() < deadline, "the replacement did not serve"
                time.sleep(0.05)
            assert (
                f"worker 1 (pid {first}) was ended by SIGKILL while serving;"
                " starting another in its place"
            ) in server.lines
            answers = answers_from_every_worker(server, key, "support-bot")
            assert {a.worker for a in answers} == {second, replacement}
            acknowledged = [(a.body["id"], a.body["seq"]) for a in answers]
            everything = descendants(server.supervisor)

            def load(thread: int) -> list[tuple[str, int]]:
                done = []
                with httpx2.Client(base_url=server.url, timeout=30) as client:
                    for n in range(10_000):
                        try:
                            answer = client.post(
                                "/v1/decisions",
                                json=refund("support-bot", f"ord-{thread * 10_000 + n}"),
                                headers={"Authorization": f"Bearer {key}"},
                            )
                        except httpx2.TransportError:
                            break  # the server has stopped taking requests
                        if answer.status_code != 200:
                            break
                        done.append((answer.json()["id"], answer.json()["seq"]))
                return done

            with ThreadPoolExecutor(4) as pool:
                loads = [pool.submit(load, thread) for thread in range(4)]
                time.sleep(1.0)
                os.kill(server.supervisor, signal.SIGTERM)
                # The supervisor ends by SIGTERM once its workers have; so does `timeout`.
                assert server.process.wait(timeout=WAIT) == -signal.SIGTERM
                under_load = [d for f in loads for d in f.result(timeout=WAIT)]
            deadline = time.monotonic() + 10
            while left := [p for p in everything if alive(p)]:
                assert time.monotonic() < deadline, f"left behind: {left}"
                time.sleep(0.05)
        finally:
            server.stop()
        assert "stopping 2 worker(s): each finishes the requests under way" in server.lines
        assert not [line for line in server.lines if line.endswith("while stopping")]
        assert under_load, "no decision was answered under load"
        with open_store(store, read_only=True) as ledger:
            assert verify_store(ledger).ok
            for decision_id, seq in acknowledged + under_load:
                entry = ledger.entry(seq)
                assert entry is not None
                assert entry.payload_object()["decision_id"] == decision_id

    def test_a_worker_that_cannot_start_stops_the_supervisor(self) -> None:
        """A worker that ends before it serves stops the rest: `worker_failed`, no restart."""
        # The supervisor checks the store first; past that check, a store gone away is
        # what makes a worker fail to start, as an unreachable address does here.
        script = (
            "from charter import load_bundle\n"
            "from charter.examples import EXAMPLE_POLICY\n"
            "from charter.server._run import Options, _bind\n"
            "from charter.server._workers import _Supervisor\n"
            "options = Options(db='postgresql://charter@127.0.0.1:1/gone', host='127.0.0.1',"
            " max_body=1000, log_level='info', max_pending=10, idempotency_ttl=100,"
            " public_url=None, ledger_writer='thread')\n"
            "try:\n"
            "    _Supervisor(load_bundle(EXAMPLE_POLICY), _bind('127.0.0.1', 0), options, 2,"
            " print).run()\n"
            "except Exception as exc:\n"
            "    print(exc.code, exc.message, sep='\\n')\n"
        )
        done = subprocess.run(
            ["timeout", "-k", "10", LIFETIME, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        code, message = done.stdout.splitlines()[-2:]
        assert code == "worker_failed"
        assert re.fullmatch(
            r"worker \d \(pid \d+\) exited with code 1 before it served \(its error is above\);"
            r" the other workers are stopped",
            message,
        ), message
        assert "cannot be reached" in done.stderr
        assert "starting another" not in done.stdout

    def test_ctrl_c_stops_every_worker(self, postgres: Cluster) -> None:
        """SIGINT to the supervisor: the workers stop, and it exits 130 as Ctrl-C does."""
        server = start(postgres.database())
        try:
            everything = descendants(server.supervisor)
            os.kill(server.supervisor, signal.SIGINT)
            assert server.process.wait(timeout=WAIT) == 130
            deadline = time.monotonic() + 10
            while left := [p for p in everything if alive(p)]:
                assert time.monotonic() < deadline, f"left behind: {left}"
                time.sleep(0.05)
        finally:
            server.stop()
        assert "stopping 2 worker(s): each finishes the requests under way" in server.lines

    def test_workers_stop_themselves_when_the_supervisor_is_killed(self, postgres: Cluster) -> None:
        """SIGKILL the supervisor: its workers see it gone and stop; no orphan serves on."""
        server = start(postgres.database())
        try:
            everything = descendants(server.supervisor)
            assert len(server.workers()) == 2
            os.kill(server.supervisor, signal.SIGKILL)
            deadline = time.monotonic() + WAIT
            while left := [p for p in everything if alive(p)]:
                assert time.monotonic() < deadline, f"left behind: {left}"
                time.sleep(0.05)
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", server.port)) != 0
        finally:
            server.stop()


class TestRefusals:
    """Several workers need PostgreSQL, and `--workers` takes a count of processes."""

    def test_workers_on_sqlite_are_refused(self, tmp_path: Path) -> None:
        """`--workers 2` on SQLite: one line saying why and what to use instead; nothing made."""
        db = tmp_path / "c.db"
        command = ["serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db), "--workers", "2"]
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"error: 2 workers need a PostgreSQL store: a SQLite ledger has one writer, so one"
            f" process serves `{db}`; serve it with one worker, or serve a PostgreSQL database"
            " with several (--store postgresql://USER@HOST/DB, after `charter migrate --store"
            " URL`)"
        ]
        assert not db.exists()

    @pytest.mark.parametrize("value", ["two", "-1"])
    def test_a_count_that_is_not_one_is_refused(self, tmp_path: Path, value: str) -> None:
        """`--workers` is a number of processes or `auto`: anything else is exit 2."""
        db = tmp_path / "c.db"
        command = ["serve", "--policy", str(EXAMPLE_POLICY), "--db", str(db), "--workers", value]
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"error: --workers `{value}` must be a number of processes, or `auto` (one per core)"
        ]
        assert not db.exists()
