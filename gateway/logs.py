"""Log records that say which request they belong to, as text or as JSON.

Every record the gateway writes while serving a request carries `request_id`,
`trace_id` (from the caller's W3C `traceparent`, when it sent one), `principal_id`
and `operation`; `log_access` adds one line per HTTP request with its method, path,
status and duration (both called by gateway.middleware.RequestLifecycle).
Records are written to stderr by a thread of their own (`configure`), so a slow
reader never holds up the event loop. `POLYGRAPH_LOG_FORMAT=json` writes each
record as one JSON object
(python-json-logger), for log shippers; `text` (the default) as one line with a
timestamp. Neither ever includes a header, a body or a variable: credentials and
client data stay out of the log.
"""

from __future__ import annotations

import atexit
import copy
import logging
import multiprocessing.util
import queue
import re
import sys
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener
from typing import IO, Any, Literal

from pythonjsonlogger.json import JsonFormatter
from starlette.types import Scope

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# The fields of a JSON record, in this order; `message` and the request's fields always.
JSON_FIELDS = (
    "asctime",
    "levelname",
    "name",
    "message",
    "request_id",
    "trace_id",
    "principal_id",
    "operation",
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_ABSENT = "-"

access_logger = logging.getLogger("polygraph.access")


@dataclass(slots=True)
class RequestLog:
    """What the log knows of the request being served (one per request, in a ContextVar)."""

    request_id: str
    trace_id: str
    # The request's ASGI state: the principal lands there once authentication ran.
    state: MutableMapping[str, Any] = field(default_factory=dict)
    operation: str | None = None

    @property
    def principal_id(self) -> str:
        principal = self.state.get("principal")
        user_id = getattr(principal, "user_id", None)
        return str(user_id) if user_id is not None else _ABSENT


_current: ContextVar[RequestLog | None] = ContextVar("polygraph_request_log", default=None)


class RequestFields(logging.Filter):
    """Adds the current request's fields to every record (dashes outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        record.request_id = current.request_id if current else _ABSENT
        record.trace_id = current.trace_id if current else _ABSENT
        record.principal_id = current.principal_id if current else _ABSENT
        record.operation = (current.operation if current else None) or _ABSENT
        return True


# Records waiting for the writer thread; past this, new ones are dropped and counted.
MAX_QUEUED_RECORDS = 10_000
_TRACEBACKS = logging.Formatter()


class _QueueingHandler(QueueHandler):
    """Hands a record to the writer thread; never blocks: a full queue drops it."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Arguments and exceptions may not outlive the call: the message and any
        # traceback become text here, the traceback kept apart (`exc_text`) for the
        # writer's formatter to place (after the line, or as JSON's `exc_info`).
        prepared = copy.copy(record)
        prepared.message = prepared.msg = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
        prepared.exc_info = None
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Writer(QueueListener):
    """Writes queued records on a daemon thread of its own."""

    def __init__(self, records: queue.Queue[logging.LogRecord], handler: logging.Handler) -> None:
        super().__init__(records, handler)
        self._records = records

    def stop(self) -> None:
        """Write what is queued, then stop; idempotent. A stream stalled for
        `_STOP_WAIT_S` is given up on rather than let it hang the process's exit."""
        thread = self._thread
        if thread is None:
            return
        try:
            # The listener's own end-of-queue marker (not in the type stubs).
            self._records.put(self._sentinel, timeout=_STOP_WAIT_S)  # type: ignore[attr-defined]
        except queue.Full:
            return
        thread.join(_STOP_WAIT_S)
        self._thread = None


_STOP_WAIT_S = 5.0
_writer: _Writer | None = None
_front: _QueueingHandler | None = None
# The handler `write_directly` put in the queue's place, and what it is made of.
_direct: logging.Handler | None = None
_settings: tuple[LogFormat, IO[str] | None] = ("text", None)


def configure(
    level: str,
    log_format: LogFormat,
    *,
    stream: IO[str] | None = None,
    max_queued: int = MAX_QUEUED_RECORDS,
) -> None:
    """The process's logging: records in `log_format` on stderr, written by a thread of
    their own. The event loop only queues a record (its request fields taken there):
    a slow reader of stderr, or a full pipe, never holds up requests, and past
    `max_queued` waiting records new ones are dropped (`dropped_records`)."""
    global _writer, _front, _direct, _settings
    _direct = None
    _settings = (log_format, stream)
    if _writer is None:
        # A multiprocessing child (a `--workers` worker) leaves through `os._exit`, past
        # `atexit`: its own exit hooks write what is queued there.
        atexit.register(_stop_writer)
        multiprocessing.util.Finalize(None, _stop_writer, exitpriority=0)
    else:
        _writer.stop()
    records: queue.Queue[logging.LogRecord] = queue.Queue(max_queued)
    _front = _QueueingHandler(records)
    _front.addFilter(RequestFields())
    _writer = _Writer(records, make_handler(log_format, stream, request_fields=False))
    logging.basicConfig(level=level.upper(), handlers=[_front], force=True)
    _writer.start()


def write_directly() -> None:
    """From now on, write records on the caller's thread, and what is queued too.

    For a process about to end where no exit hook runs: uvicorn re-raises the signal
    that stopped it once it has shut down, and the shutdown watchdog calls `os._exit`.
    `GatewayServer` calls this as its shutdown begins."""
    global _direct
    writer, front = _writer, _front
    if writer is None or front is None or _direct is not None:
        return
    _direct = make_handler(_settings[0], _settings[1])
    root = logging.getLogger()
    root.addHandler(_direct)
    root.removeHandler(front)
    writer.stop()


def dropped_records() -> int:
    """Records dropped because the writer thread fell a whole queue behind."""
    return _front.dropped if _front is not None else 0


def _stop_writer() -> None:
    # Writes what is queued before the process exits.
    if _writer is not None:
        _writer.stop()


def make_handler(
    log_format: LogFormat, stream: IO[str] | None = None, *, request_fields: bool = True
) -> logging.Handler:
    """A handler writing `log_format` records to `stream`, with the request's fields
    unless a handler in front of it (on the request's thread) added them already."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if request_fields:
        handler.addFilter(RequestFields())
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                list(JSON_FIELDS),
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def request_fields(scope: Scope, request_id: str) -> _RequestFields:
    """The request's log fields, for every record written inside the block
    (gateway.middleware.RequestLifecycle sets them for each request)."""
    return _RequestFields(RequestLog(request_id, _trace_id(scope), scope.setdefault("state", {})))


class _RequestFields:
    # A class rather than a generator-based context manager: entered on every request.
    __slots__ = ("_log", "_token")

    def __init__(self, log: RequestLog) -> None:
        self._log = log

    def __enter__(self) -> None:
        self._token = _current.set(self._log)

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)


def log_access(scope: Scope, status: int, started: float) -> None:
    """The access line of an answered HTTP request (`polygraph.access` at INFO): method,
    path, status and duration in ms. Checked first, so that a gateway logging at WARNING
    (as the benchmarks run) spends nothing on it."""
    if access_logger.isEnabledFor(logging.INFO):
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        access_logger.info(
            "%s %s %d %.1f ms",
            scope["method"],
            scope["path"],
            status,
            duration_ms,
            extra={"status": status, "duration_ms": duration_ms},
        )


def name_operation(name: str | None) -> None:
    """Names the GraphQL operation in the request's log fields."""
    current = _current.get()
    if current is not None:
        current.operation = name


def _trace_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            match = _TRACEPARENT.match(value.decode("latin-1").strip())
            return match.group(1) if match else _ABSENT
    return _ABSENT
