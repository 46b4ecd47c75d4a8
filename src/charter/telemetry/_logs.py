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
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars
from structlog.typing import EventDict, Processor, WrappedLogger

from charter.errors import CharterError

__all__ = [
    "ACCESS_LOGGER",
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "AccessLine",
    "LogFormat",
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


# The access line of the request being handled: the fields its handlers noted, shared
# with the worker threads it hands work to (they get a copy of the context, not of this).
_NOTED: contextvars.ContextVar[MutableMapping[str, Any] | None] = contextvars.ContextVar(
    "charter_noted", default=None
)


def bind(**fields: Any) -> None:
    """Bind `fields` to every log line emitted from here on while this request is handled.

    They also go on the request's access line, even when bound in a worker thread. A
    field whose value is None is left out.
    """
    known = {k: v for k, v in fields.items() if v is not None}
    if not known:
        return
    bind_contextvars(**known)
    noted = _NOTED.get()
    if noted is not None:
        noted.update(known)


class AccessLine:
    """One HTTP request's access line: opened as it arrives, written once it is answered.

    Args:
        method: the HTTP method.
        path: the request path (no query string: it may hold secrets).
    """

    __slots__ = ("_started", "_token", "method", "noted", "path", "status")

    _log = logging.getLogger(ACCESS_LOGGER)

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.status = 0  # 0 until the answer starts: the client went away first
        self.noted: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._token = _NOTED.set(self.noted)

    def write(self) -> None:
        """Write the line (method, path, status, duration_ms and what was bound)."""
        _NOTED.reset(self._token)
        log = self._log
        if not log.isEnabledFor(logging.INFO):
            return
        duration_ms = round((time.perf_counter() - self._started) * 1000, 3)
        log.info(
            "request",
            extra={
                "method": self.method,
                "path": self.path,
                "status": self.status,
                "duration_ms": duration_ms,
                **self.noted,
            },
        )
