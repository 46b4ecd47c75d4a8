"""Structured logs: every stdlib log line (Charter's, uvicorn's) rendered by structlog.

Charter logs through `logging.getLogger("charter.*")`, as libraries should. A server
started by `charter serve` routes the root logger through structlog's
`ProcessorFormatter`, so every line, whoever wrote it, is one JSON object (or one aligned
console line) with `timestamp`, `level`, `logger` and `event`, plus what the request being
handled has bound: `decision_id`, `trace_id`, `span_id`, `agent`, `action`, `approval_id`
(`bind`, through structlog's context variables).

An embedding application keeps its own logging: nothing here runs unless
`configure_logging` is called.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from charter.errors import CharterError

__all__ = [
    "ACCESS_LOGGER",
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "LogFormat",
    "RequestLog",
    "bind",
    "configure_logging",
    "notice",
    "resolve_log_format",
]

LogFormat = Literal["json", "console"]
#: The formats `--log-format` and `CHARTER_LOG_FORMAT` take.
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "console")

#: The fields a request binds for its log lines, when they are known.
CONTEXT_FIELDS = ("decision_id", "trace_id", "span_id", "agent", "action", "approval_id")

#: The logger of the access log: one line per HTTP request.
ACCESS_LOGGER = "charter.access"

# The loggers uvicorn configures for itself; `configure_logging` sends them to the root.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Fields of every `LogRecord`, which are not a line's own fields (`extra=` ones are).
_RECORD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn's colourised copy of each message, for its own formatter only.
_SKIPPED = frozenset({"color_message"})
_FIRST = ("timestamp", "level", "logger", "event")


def resolve_log_format(flag: str | None, environ: Mapping[str, str] | None = None) -> LogFormat:
    """The log format in force: `--log-format`, else `CHARTER_LOG_FORMAT`, else `console`.

    Console is the default whatever stderr is: the startup notice and the lines a person
    reads at a terminal stay as they are, piped or not. A deployment that ships logs to a
    collector says `json` (see docs/telemetry.md).

    Raises:
        CharterError: the value is neither `json` nor `console` (code `usage`).
    """
    env = os.environ if environ is None else environ
    value = (flag or env.get("CHARTER_LOG_FORMAT") or "console").strip().lower()
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    where = "--log-format" if flag else "CHARTER_LOG_FORMAT"
    raise CharterError(f"{where} `{value}` must be `json` or `console`", code="usage")


def _extras(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Copy a stdlib record's `extra=` fields (the access log's) into the line."""
    record = event.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _RECORD and key not in _SKIPPED and not key.startswith("_"):
                event[key] = value
    return event


def _ordered(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Put `timestamp`, `level`, `logger` and `event` first, where a reader looks."""
    first = {key: event.pop(key) for key in _FIRST if key in event}
    first.update(event)
    return first


def _renderer(format: LogFormat, stream: TextIO) -> Processor:
    if format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs, so it can find and replace it."""


def configure_logging(
    format: LogFormat, *, level: str | int = "info", stream: TextIO | None = None
) -> None:
    """Render every log line of this process with structlog, in `format`, to `stream`.

    Safe to call again (a worker process does, after its supervisor): the handler it
    installed before is replaced. uvicorn's own handlers are taken off its loggers, whose
    lines then reach the root like everyone else's (serve uvicorn with `log_config=None`).

    Args:
        format: `json` (one object per line) or `console` (aligned, coloured on a TTY).
        level: the root logger's level (`info`, `warning`, ... or a number).
        stream: where lines go (standard error when None).
    """
    out = sys.stderr if stream is None else stream
    # Lines from stdlib loggers, and from structlog loggers (wrapped for the formatter
    # below), get the same fields in the same order.
    shared: list[Processor] = [
        merge_contextvars,
        _request_fields,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info
            if format == "json"
            else structlog.processors.StackInfoRenderer(),
            _ordered,
            _renderer(format, out),
        ],
    )
    handler = _Handler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    global _json_lines  # noqa: PLW0603 - the one handler of this process's logging
    _json_lines = _JsonLines(handler) if format == "json" else None
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def notice(logger: str = "charter.serve") -> Callable[[str], None]:
    """A `say` for JSON logs: each notice of `charter serve` is an `info` line."""
    log = logging.getLogger(logger)

    def say(message: str) -> None:
        log.info(message)

    return say


# The fields of the request being handled: bound by its handlers, read by every line it
# logs (`_request_fields`) and by its access line. One dict per request, shared with the
# worker threads it hands work to: they get a copy of the context, not of the dict, so
# what a thread binds is on the access line too.
_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "charter_request", default=None
)


def _request_fields(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Add the fields the request being handled has bound (what the line says wins)."""
    fields = _REQUEST.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


def bind(**fields: Any) -> None:
    """Bind `fields` to every log line emitted from here on while this request is handled.

    They also go on the request's access line, even when bound in a worker thread. A
    field whose value is None is left out. Outside a request (`RequestLog`) they are
    bound to the context through structlog, for the lines the context logs.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        return
    noted = _REQUEST.get()
    if noted is None:
        bind_contextvars(**fields)
    else:
        noted.update(fields)


class _JsonLines:
    """The access line's own way out, once `configure_logging("json")` is in force.

    An access line is written for every request; through `logging` and the formatter
    it would cost ~35 µs (a `LogRecord`, its copy, eight processors), a tenth of a
    decision. It is the same JSON object written here in a few microseconds, to the root
    handler's stream under the handler's lock, whenever that handler is the only one a
    `charter.access` line would reach; otherwise lines go through `logging`.
    """

    def __init__(self, handler: logging.StreamHandler) -> None:  # type: ignore[type-arg]
        self.handler = handler
        self.encode = json.JSONEncoder(default=str).encode

    def reaches_only_ours(self, log: logging.Logger) -> bool:
        return (
            not log.handlers
            and log.propagate
            and logging.getLogger().handlers == [self.handler]
            and log.isEnabledFor(logging.INFO)
        )

    def write(self, fields: dict[str, Any]) -> None:
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        line = self.encode(
            {"timestamp": now, "level": "info", "logger": ACCESS_LOGGER, "event": "request"}
            | fields
        )
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.flush()
        finally:
            handler.release()


_json_lines: _JsonLines | None = None


class RequestLog:
    """One HTTP request's log: the fields its lines carry, and its access line.

    Opened as the request arrives (the fields it binds are its own from then on) and
    closed once it is answered, writing the access line if asked to.

    Args:
        method: the HTTP method.
        path: the request path (no query string: it may hold secrets).
        access: write an access line (`charter.access`) when closed.
    """

    __slots__ = ("_started", "_token", "access", "fields", "method", "path", "status")

    _log = logging.getLogger(ACCESS_LOGGER)

    def __init__(self, method: str, path: str, *, access: bool = True) -> None:
        self.method = method
        self.path = path
        self.access = access
        self.status = 0  # 0 until the answer starts: the client went away first
        self.fields: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._token = _REQUEST.set(self.fields)

    def note(self, **fields: Any) -> None:
        """Bind `fields` (None values left out) for this request's lines."""
        for key, value in fields.items():
            if value is not None:
                self.fields[key] = value

    def close(self) -> None:
        """End the request's fields; write its access line (method, path, status, duration)."""
        _REQUEST.reset(self._token)
        if not self.access:
            return
        line = {
            **self.fields,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self._started) * 1000, 3),
        }
        fast, log = _json_lines, self._log
        if fast is not None and fast.reaches_only_ours(log):
            fast.write(line)
        elif log.isEnabledFor(logging.INFO):
            log.info("request", extra=line)
