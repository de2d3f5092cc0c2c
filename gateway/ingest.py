"""`POST /ingest/metrics`: bulk points as NDJSON, streamed into COPY in batches.

One JSON object per line, e.g.

    {"agentId": "QWdlbnQ6...", "name": "energy", "value": 0.82, "time": "2024-05-01T12:00:00Z"}

`agentId` (or `agent_id`) is a global id or a UUID; `time` (with a UTC offset) defaults to now;
`labels` is optional. The body is read as it arrives, never whole: lines are
checked and written batch by batch, so a bad line costs only itself. The answer
counts accepted, duplicate and rejected lines and lists each rejected line
(1-based) with its reason under `rejections`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth import principal_of
from gateway.errors import RETRY_AFTER_S, error_response, store_condition
from resolvers import metrics as resolve
from resolvers.context import Stores
from resolvers.errors import ClientError, ErrorCode
from schema.relay import decode_id
from stores import StoreRefused, StoreUnavailable

logger = logging.getLogger("polygraph.ingest")

MAX_LINE_BYTES = 64 * 1024
BATCH_LINES = 5_000
# The answer lists this many rejected lines at most; the counts stay exact.
MAX_REPORTED = 1_000


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, line: int, reason: str, field: str | None = None) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REPORTED:
            self.rejections.append({"line": line, "field": field, "reason": reason})

    def as_json(self) -> dict[str, Any]:
        # Not `errors`: a 200 with an `errors` key would read as a failed GraphQL request.
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejections": sorted(self.rejections, key=lambda item: int(item["line"])),
            "rejectionsTruncated": self.rejected > len(self.rejections),
        }


async def lines_of(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """`(line number, line)` as the body streams in; None for a line over MAX_LINE_BYTES,
    whose bytes are skipped rather than buffered."""
    number = 0
    buffer = bytearray()
    skipping = False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    buffer += chunk[start:]
                    if len(buffer) > MAX_LINE_BYTES:
                        skipping = True
                        buffer.clear()
                break
            number += 1
            if skipping:
                yield number, None
                skipping = False
            else:
                buffer += chunk[start:end]
                yield number, None if len(buffer) > MAX_LINE_BYTES else bytes(buffer)
            buffer.clear()
            start = end + 1
    if skipping:
        yield number + 1, None
    elif buffer.strip():
        yield number + 1, bytes(buffer)


def _candidate(number: int, line: bytes) -> resolve.Candidate:
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ClientError(ErrorCode.BAD_USER_INPUT, f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ClientError(ErrorCode.BAD_USER_INPUT, "each line must be a JSON object")
    if "agentId" not in document and "agent_id" in document:
        document["agentId"] = document["agent_id"]
    for key in ("agentId", "name", "value"):
        if key not in document:
            raise ClientError(ErrorCode.BAD_USER_INPUT, f"`{key}` is missing", field=key)
    agent = document["agentId"]
    if not isinstance(agent, str):
        raise ClientError(ErrorCode.BAD_USER_INPUT, "agentId must be a string", field="agentId")
    name = document["name"]
    if not isinstance(name, str):
        raise ClientError(ErrorCode.BAD_USER_INPUT, "name must be a string", field="name")
    return resolve.Candidate(
        number,
        _agent_id(agent),
        name,
        document["value"],
        _time(document.get("time")),
        document.get("labels"),
    )


def _agent_id(text: str) -> UUID:
    with contextlib.suppress(ValueError):
        return UUID(text)
    return decode_id(text, "Agent", field="agentId")


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ClientError(ErrorCode.BAD_USER_INPUT, "time must be an ISO 8601 string", field="time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{value!r} is not an ISO 8601 time", field="time"
        ) from None
    if moment.tzinfo is None:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            "the time needs a UTC offset, e.g. ...T12:00:00Z",
            field="time",
        )
    return moment


async def _flush(
    stores: Stores, request: Request, batch: list[resolve.Candidate], report: IngestReport
) -> None:
    checked = await resolve.check_points(stores, principal_of(request.scope), batch)
    for rejection in checked.rejected:
        report.reject(rejection.index, rejection.message, rejection.field)
    if checked.accepted:
        result = await resolve.record_points(stores, checked.accepted)
        report.accepted += result.inserted
        report.duplicates += result.duplicates
    batch.clear()


async def ingest_metrics(request: Request) -> Response:
    stores: Stores = request.app.state.stores
    try:
        await resolve.require_recorder(stores, principal_of(request.scope))
    except ClientError as exc:
        status = 401 if exc.code is ErrorCode.UNAUTHENTICATED else 403
        return error_response(exc.code, exc.message, status, accept=request.headers.get("accept"))
    report = IngestReport()
    batch: list[resolve.Candidate] = []
    try:
        async for number, line in lines_of(request.stream()):
            if line is None:
                report.reject(number, f"the line is longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            try:
                batch.append(_candidate(number, line))
            except ClientError as exc:
                report.reject(number, exc.message, exc.field)
                continue
            if len(batch) >= BATCH_LINES:
                await _flush(stores, request, batch, report)
        await _flush(stores, request, batch, report)
    except StoreUnavailable as exc:
        # What was written so far stays; the client resends, duplicates are harmless.
        code, message = store_condition(exc)
        logger.warning("ingest stopped: %s", exc)
        body = {**report.as_json(), "error": f"{message} Resend the lines not yet accepted."}
        return JSONResponse(
            body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S[code])}
        )
    except StoreRefused as exc:
        return error_response(
            ErrorCode.STORE_UNAVAILABLE, str(exc), 503, accept=request.headers.get("accept")
        )
    return JSONResponse(report.as_json())


routes = [Route("/ingest/metrics", ingest_metrics, methods=["POST"])]
