"""GraphQL shape of the health report."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.health import HealthReport, HealthTier
from stores import ProbeResult

Info = strawberry.Info[RequestContext, None]

HealthStatus = strawberry.enum(HealthTier, name="HealthStatus", description="Three-tier health.")


@strawberry.type(description="One store as the last live probe saw it.")
class ComponentHealth:
    name: str
    up: bool
    latency_ms: float
    version: str | None
    pgvector_version: str | None = strawberry.field(
        description="The pgvector extension's version (PostgreSQL only)."
    )
    edition: str | None = strawberry.field(description="Server edition, where it has one.")
    sessions_fallback: str | None = strawberry.field(
        description="Redis only: set while sessions are served from gateway memory."
    )
    metrics_backend: str | None = strawberry.field(
        description="Metrics only: `timescaledb` (hypertables) or `native` (partitions)."
    )
    entity_cache: str | None = strawberry.field(
        description="Redis only: the levels the entity cache reads, `memory and redis` or "
        "`memory only` while Redis fails."
    )
    error: str | None

    @classmethod
    def from_probe(cls, probe: ProbeResult) -> ComponentHealth:
        return cls(
            name=probe.store,
            up=probe.up,
            latency_ms=probe.latency_ms,
            version=probe.version,
            pgvector_version=probe.details.get("pgvector"),
            edition=probe.details.get("edition"),
            sessions_fallback=probe.details.get("sessions_fallback"),
            metrics_backend=probe.details.get("backend"),
            entity_cache=probe.details.get("cache"),
            error=probe.error,
        )


@strawberry.type(
    description="Gateway health: `critical` without PostgreSQL, `moderate` without Neo4j or "
    "Redis. Anyone may read the status; the breakdown per store needs a sign-in."
)
class Health:
    status: HealthStatus  # type: ignore[valid-type]
    checked_at: datetime
    report: strawberry.Private[HealthReport]

    @classmethod
    def from_report(cls, report: HealthReport) -> Health:
        return cls(
            status=report.status,
            checked_at=datetime.fromtimestamp(report.checked_at, tz=UTC),
            report=report,
        )

    @strawberry.field(description="Each store as the last probe saw it. Viewers and up.")
    def components(self, info: Info) -> list[ComponentHealth] | None:
        require(info.context.principal, at_least=Role.VIEWER)
        return [ComponentHealth.from_probe(p) for p in self.report.components]
