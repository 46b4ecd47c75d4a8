"""A real webhook receiver on 127.0.0.1, a fake clock, and a recorder for notifier tests."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request the receiver got: path, headers (lowercased names) and the raw body."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An HTTP server in a thread that answers from a script and keeps every request.

    Answers are used in order, then 200. While `hang` is set, each request waits for
    `release` before it is answered, as a receiver that accepted the connection and stalls.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: deque[Answer] = deque()
        self.hang = False
        self.release = threading.Event()
        self._cond = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def answer(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next `times` requests with `status` and `headers`."""
        for _ in range(times):
            self.answers.append(Answer(status, headers or {}))

    def wait_requests(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The first `count` requests, waiting for them to arrive."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: len(self.requests) >= count, timeout)
            assert arrived, f"expected {count} requests, got {len(self.requests)}"
            return list(self.requests[:count])

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._cond:
                    receiver.requests.append(Received(self.path, headers, body))
                    answer = receiver.answers.popleft() if receiver.answers else Answer()
                    receiver._cond.notify_all()
                if receiver.hang:
                    receiver.release.wait(10)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the notifier gave up waiting and hung up
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


class FakeTime:
    """Wall clock, monotonic clock and sleep in one: sleeping only moves the clocks on."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.start = start
        self.t = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return dt.datetime.fromtimestamp(self.t, dt.UTC)

    def monotonic(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += seconds


class Records:
    """The notifier's `record` callback, keeping (kind, payload) pairs in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        with self._cond:
            self.items.append((kind, payload))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
        """The first `count` records, waiting for them."""
        with self._cond:
            arrived = self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            assert arrived, f"expected {count} records, got {self.items}"
            return list(self.items[:count])
