"""`/health` for people and dashboards, `/health/live` and `/health/ready` for orchestrators."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resolvers.context import Stores
from resolvers.health import HealthReport, HealthTier, check_health


def report_json(report: HealthReport) -> dict[str, object]:
    return {
        "status": report.status.value,
        # RFC 3339, as the GraphQL `Health.checkedAt` is.
        "checkedAt": datetime.fromtimestamp(report.checked_at, tz=UTC).isoformat(),
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


def _stores(request: Request) -> Stores:
    stores: Stores = request.app.state.stores
    return stores


async def health(request: Request) -> Response:
    report = await check_health(_stores(request))
    # 503 only when critical: a degraded gateway still serves most requests.
    status_code = 503 if report.status is HealthTier.CRITICAL else 200
    return JSONResponse(report_json(report), status_code=status_code)


async def live(request: Request) -> Response:
    return JSONResponse({"status": "live"})


async def ready(request: Request) -> Response:
    report = await check_health(_stores(request))
    if report.status is HealthTier.CRITICAL:
        return JSONResponse({"status": "not ready", **report_json(report)}, status_code=503)
    return JSONResponse({"status": "ready"})


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
