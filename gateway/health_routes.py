"""`/health` for people and dashboards, `/health/live` and `/health/ready` for orchestrators.

Orchestrators probe without credentials, so none of these needs one. Anonymous
callers learn the tier only (`healthy`, `moderate`, `critical`); a signed-in
caller (any role) gets the breakdown per store from `/health`. Every route reads
the probe shared by the whole process (`resolvers.health`), so polling them,
however often, costs the stores one probe per interval.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resolvers.auth import ANONYMOUS, Principal, authenticate
from resolvers.context import Stores
from resolvers.errors import ClientError
from resolvers.health import HealthReport, HealthTier, current_health
from stores import StoreUnavailable


def report_json(report: HealthReport) -> dict[str, object]:
    return {
        "status": report.status.value,
        "checkedAt": _rfc3339(report.checked_at),
        "components": {
            probe.store: {
                "status": "up" if probe.up else "down",
                "latencyMs": probe.latency_ms,
                "version": probe.version,
                **({"details": probe.details} if probe.details else {}),
                **({"error": probe.error} if probe.error else {}),
            }
            for probe in report.components
        },
    }


def status_json(report: HealthReport) -> dict[str, object]:
    return {"status": report.status.value, "checkedAt": _rfc3339(report.checked_at)}


def _rfc3339(epoch_s: float) -> str:
    # As the GraphQL `Health.checkedAt` is.
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()


def _stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


async def _caller(request: Request) -> Principal | Response:
    """Who asks, if anyone; a credential that does not check out is refused (401) as
    anywhere else, one that cannot be checked now (a store is down) counts as none."""
    headers = Headers(scope=request.scope)
    try:
        return await authenticate(
            _stores(request), headers.get("authorization"), headers.get("x-api-key")
        )
    except ClientError as exc:
        body = {"errors": [{"message": exc.message, "extensions": {"code": exc.code.value}}]}
        return Response(
            orjson.dumps(body),
            401,
            media_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    except StoreUnavailable:
        return ANONYMOUS


async def health(request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    report = await current_health(_stores(request))
    # 503 only when critical: a degraded gateway still serves most requests.
    status_code = 503 if report.status is HealthTier.CRITICAL else 200
    body = report_json(report) if caller.authenticated else status_json(report)
    return JSONResponse(body, status_code=status_code)


async def live(request: Request) -> Response:
    return JSONResponse({"status": "live"})


async def ready(request: Request) -> Response:
    report = await current_health(_stores(request))
    if report.status is HealthTier.CRITICAL:
        return JSONResponse({"status": "not ready", "health": report.status.value}, 503)
    return JSONResponse({"status": "ready"})


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
