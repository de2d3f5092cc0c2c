"""Log records that say which request they belong to, as text or as JSON.

Every record the gateway writes while serving a request carries `request_id`,
`trace_id` (from the caller's W3C `traceparent`, when it sent one), `principal_id`
and `operation`; `log_access` adds one line per HTTP request with its method, path,
status and duration (both called by gateway.middleware.RequestObserver).
`POLYGRAPH_LOG_FORMAT=json` writes each record as one JSON object
(python-json-logger), for log shippers; `text` (the default) as one line with a
timestamp. Neither ever includes a header, a body or a variable: credentials and
client data stay out of the log.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
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


def configure(level: str, log_format: LogFormat) -> None:
    """The process's logging: one handler on stderr, in `log_format`."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format)], force=True)


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing `log_format` records, with the request's fields, to `stream`."""
    handler = logging.StreamHandler(stream or sys.stderr)
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


@contextmanager
def request_fields(scope: Scope, request_id: str) -> Iterator[None]:
    """The request's log fields, for every record written inside the block
    (gateway.middleware.RequestObserver sets them for each request)."""
    token = _current.set(RequestLog(request_id, _trace_id(scope), scope.setdefault("state", {})))
    try:
        yield
    finally:
        _current.reset(token)


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
