"""Prometheus metrics at `/metrics`, in an app-owned registry.

Counted as they happen: GraphQL operations and their latency by operation name and
type, errors by `extensions.code`, store round trips per store (with latency where
the driver reports it: PostgreSQL). Read at scrape time from the objects that
already keep them: pool usage, the outbox backlog, the projector's and the event
bus's counters, open subscriptions.

Who may read it: `/metrics` is off (404) until `POLYGRAPH_PROMETHEUS_TOKEN` is set,
then answers only `Authorization: Bearer <that token>` (401 otherwise). Metrics
name operations and show load, so they are not public, and a scraper holds a
token rather than a user's API key.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from strawberry.extensions import SchemaExtension

from stores import StoreError, roundtrips
from stores.postgres import outbox

if TYPE_CHECKING:
    from resolvers.context import Stores

logger = logging.getLogger(__name__)

# Operation names come from clients: past this many distinct ones, or this long, a
# name is counted as "other", so a client cannot grow the series without bound.
MAX_OPERATION_NAMES = 200
MAX_OPERATION_NAME_LENGTH = 64
OTHER = "other"
ANONYMOUS = "anonymous"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class GatewayMetrics:
    """One gateway's metrics; `render()` is what `/metrics` serves."""

    def __init__(self, stores: Stores) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.operations = Counter(
            "polygraph_graphql_operations",
            "GraphQL operations executed, by operation name and type",
            ["operation", "type"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "polygraph_graphql_operation_duration_seconds",
            "GraphQL operation latency, parse to result, by operation name and type",
            ["operation", "type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "polygraph_graphql_errors",
            "GraphQL errors in results, by extensions.code",
            ["code"],
            registry=self.registry,
        )
        self.store_calls = Counter(
            "polygraph_store_calls",
            "Round trips to each store",
            ["store"],
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "polygraph_store_call_duration_seconds",
            "Store round-trip latency, where the driver reports it (PostgreSQL)",
            ["store"],
            buckets=_STORE_BUCKETS,
            registry=self.registry,
        )
        self._state = _StateCollector(stores)
        self.registry.register(self._state)
        self._names: set[str] = set()
        self._store_children: dict[str, tuple[Counter, Histogram]] = {}

    def operation_label(self, name: str | None) -> str:
        if not name:
            return ANONYMOUS
        if name in self._names:
            return name
        if len(name) > MAX_OPERATION_NAME_LENGTH or len(self._names) >= MAX_OPERATION_NAMES:
            return OTHER
        self._names.add(name)
        return name

    def observe_store(self, store: str, count: int, seconds: float | None) -> None:
        # Called on every statement: the labelled children are looked up once per store.
        children = self._store_children.get(store)
        if children is None:
            children = self._store_children[store] = (
                self.store_calls.labels(store),
                self.store_latency.labels(store),
            )
        children[0].inc(count)
        if seconds is not None:
            children[1].observe(seconds)

    def start(self) -> None:
        roundtrips.add_observer(self.observe_store)

    def stop(self) -> None:
        roundtrips.remove_observer(self.observe_store)

    async def render(self) -> bytes:
        await self._state.refresh()
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges and counters read from the stores and workers at scrape time."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._outbox_pending: float | None = None
        self._outbox_oldest_s: float | None = None

    async def refresh(self) -> None:
        """What needs a query: the outbox backlog. A PostgreSQL that is down leaves
        the gauges out of this scrape rather than failing it."""
        try:
            backlog = await outbox.backlog(self._stores.postgres)
        except StoreError as exc:
            logger.debug("outbox backlog not read for /metrics: %s", exc)
            self._outbox_pending = self._outbox_oldest_s = None
            return
        self._outbox_pending = backlog.pending
        self._outbox_oldest_s = backlog.oldest_age_s

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        usage = self._stores.postgres.pool_usage()
        pool = GaugeMetricFamily(
            "polygraph_store_pool_connections",
            "Pool connections by state",
            labels=["store", "state"],
        )
        pool.add_metric(["postgres", "in_use"], usage.in_use)
        pool.add_metric(["postgres", "idle"], usage.idle)
        pool.add_metric(["postgres", "waiting"], usage.waiting)
        yield pool
        pool_max = GaugeMetricFamily(
            "polygraph_store_pool_max_connections", "Pool size limit", labels=["store"]
        )
        pool_max.add_metric(["postgres"], usage.max)
        yield pool_max
        if self._outbox_pending is not None:
            yield GaugeMetricFamily(
                "polygraph_outbox_pending",
                "Outbox rows not yet projected to Neo4j",
                value=self._outbox_pending,
            )
            yield GaugeMetricFamily(
                "polygraph_outbox_oldest_pending_age_seconds",
                "Age of the oldest outbox row not yet projected (0 when none)",
                value=self._outbox_oldest_s or 0.0,
            )
        projector = self._stores.projector
        if projector is not None:
            yield CounterMetricFamily(
                "polygraph_projector_applied",
                "Outbox rows this process applied to Neo4j",
                value=projector.applied,
            )
            yield CounterMetricFamily(
                "polygraph_projector_failed",
                "Projector batches that failed (retried later; rows stay pending)",
                value=projector.failed,
            )
        cache = self._stores.entity_cache
        if cache is not None:
            hits = CounterMetricFamily(
                "polygraph_cache_hits",
                "Entity reads served by the cache, by kind and level (local, shared)",
                labels=["kind", "level"],
            )
            for (kind, level), count in sorted(cache.counts.hits.items()):
                hits.add_metric([kind, level], count)
            yield hits
            misses = CounterMetricFamily(
                "polygraph_cache_misses",
                "Entity reads the cache sent on to PostgreSQL, by kind",
                labels=["kind"],
            )
            for kind, count in sorted(cache.counts.misses.items()):
                misses.add_metric([kind], count)
            yield misses
            yield CounterMetricFamily(
                "polygraph_cache_shared_failures",
                "Reads and writes of the cache's Redis level that failed (L1 carried on)",
                value=cache.counts.shared_failures,
            )
        yield GaugeMetricFamily(
            "polygraph_subscriptions_open",
            "Open GraphQL subscriptions in this process",
            value=self._stores.subscriptions.open,
        )
        events = self._stores.events
        if events is not None:
            yield CounterMetricFamily(
                "polygraph_events_dropped",
                "Events a slow subscriber lost (its queue was full)",
                value=events.dropped,
            )
            yield CounterMetricFamily(
                "polygraph_events_publish_failures",
                "Best-effort event publications that failed (Redis unreachable)",
                value=events.publish_failures,
            )


class PrometheusOperations(SchemaExtension):
    """Counts each operation, its latency and its errors' codes. Listed before
    `ErrorCodes`, so it leaves after it and sees the codes."""

    metrics: ClassVar[GatewayMetrics]

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except Exception:  # a document that did not parse has no operation type
            kind = "unknown"
        name = self.metrics.operation_label(context.operation_name)
        self.metrics.operations.labels(name, kind).inc()
        self.metrics.latency.labels(name, kind).observe(time.perf_counter() - started)
        result = context.result
        for error in getattr(result, "errors", None) or []:
            code = (error.extensions or {}).get("code", "INTERNAL")
            self.metrics.errors.labels(str(code)).inc()


def operations_extension(metrics: GatewayMetrics) -> type[PrometheusOperations]:
    """The extension class bound to one app's metrics (Strawberry builds one per request)."""
    return type("BoundPrometheusOperations", (PrometheusOperations,), {"metrics": metrics})


def metrics_route(metrics: GatewayMetrics, token: str | None) -> Route:
    expected = f"Bearer {token}".encode() if token else None

    async def endpoint(request: Request) -> Response:
        if expected is None:
            return PlainTextResponse("Not Found", status_code=404)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return PlainTextResponse(
                "Unauthorized: send Authorization: Bearer <POLYGRAPH_PROMETHEUS_TOKEN>",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"])
