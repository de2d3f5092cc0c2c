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

import asyncio
import hmac
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from graphql import GraphQLError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.logs import dropped_records
from stores import StoreError, roundtrips
from stores.health import CLOSE_REASONS
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
# With several workers: how often each copies its pool, subscription and background
# counters into the shared metrics.
STATE_SYNC_S = 1.0


def multiprocess() -> bool:
    """Whether this process is one of several workers (`polygraph serve --workers N`),
    whose metrics live in `PROMETHEUS_MULTIPROC_DIR` (gateway.serving)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class GatewayMetrics:
    """One gateway's metrics; `render()` is what `/metrics` serves.

    With several workers, prometheus-client's multiprocess mode keeps each worker's
    values in a file of its own, and a scrape of any worker sums them all: counters
    and histograms add up, gauges of live state (pool connections, open
    subscriptions) add up over the workers alive. The state other objects keep
    (pools, projector, event bus) is copied into those metrics at each scrape and,
    with several workers, every `STATE_SYNC_S` seconds, so a scrape of one worker
    sees the others' state as of at most that long ago."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores
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
            "Store round-trip latency: PostgreSQL statements, Neo4j reads, Redis commands",
            ["store"],
            buckets=_STORE_BUCKETS,
            registry=self.registry,
        )
        self._state = _StateMetrics(stores, self.registry)
        self._outbox = _OutboxCollector(stores)
        if multiprocess():
            # What a scrape reads: every worker's files, and the outbox (one database,
            # the same backlog whichever worker reads it: not summed).
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)  # type: ignore[no-untyped-call]
        else:
            self._exposed = self.registry
        self._exposed.register(self._outbox)
        self._names: set[str] = set()
        self._store_children: dict[str, tuple[Counter, Histogram]] = {}
        # Bounded: at most MAX_OPERATION_NAMES names (and two more) by operation kind.
        self._operation_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._sync_task: asyncio.Task[None] | None = None

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
        """Call from the running event loop (the app's lifespan)."""
        roundtrips.add_observer(self.observe_store)
        if multiprocess():
            self._sync_task = asyncio.get_running_loop().create_task(
                self._sync_forever(), name="polygraph-metrics-state"
            )

    def stop(self) -> None:
        roundtrips.remove_observer(self.observe_store)
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None

    def record_operation(
        self, name: str | None, kind: str, seconds: float, errors: Iterable[GraphQLError]
    ) -> None:
        """One operation, its latency and its errors' codes (gateway.operation_hooks)."""
        label = self.operation_label(name)
        # Called on every operation: the labelled children are looked up once per label.
        children = self._operation_children.get((label, kind))
        if children is None:
            children = self._operation_children[label, kind] = (
                self.operations.labels(label, kind),
                self.latency.labels(label, kind),
            )
        children[0].inc()
        children[1].observe(seconds)
        for error in errors:
            code = (error.extensions or {}).get("code", "INTERNAL")
            self.errors.labels(str(code)).inc()

    async def render(self) -> bytes:
        self._state.sync()
        await self._outbox.refresh()
        return generate_latest(self._exposed)

    async def _sync_forever(self) -> None:
        while True:
            try:
                self._state.sync()
            except Exception:  # the stores are still opening: next time
                logger.debug("metrics state not copied yet", exc_info=True)
            await asyncio.sleep(STATE_SYNC_S)


class _StateMetrics:
    """Gauges and counters copied from the objects that keep them: pool usage, open
    subscriptions, the projector's and the event bus's counters."""

    def __init__(self, stores: Stores, registry: CollectorRegistry) -> None:
        self._stores = stores
        self.pool = Gauge(
            "polygraph_store_pool_connections",
            "Pool connections by state, over every worker; PostgreSQL's per server"
            " (`role`: primary or replica)",
            ["store", "role", "server", "state"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "polygraph_store_pool_max_connections",
            "Pool size limit, over every worker",
            ["store", "role", "server"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Counters kept per label by other objects (PostgreSQL pools, event sinks per
        # sink), copied as the background counters are: each labelled value's last copy.
        self.pool_opened = Counter(
            "polygraph_store_pool_connections_opened",
            "PostgreSQL connections each pool opened, per server",
            ["store", "role", "server"],
            registry=registry,
        )
        self.pool_closed = Counter(
            "polygraph_store_pool_connections_closed",
            "PostgreSQL connections each pool closed, per server, by reason: a statement"
            " cut short (`cut_short`: a cancellation or the client-side timeout), a"
            " transaction left open, expired (after migrations), unused, recycled (lent"
            " 50,000 times), lost (closed by the server or the network); not counted:"
            " closing at shutdown",
            ["store", "role", "server", "reason"],
            registry=registry,
        )
        self.sink_outcomes = {
            outcome: Counter(f"polygraph_event_sink_{outcome}", doc, ["sink"], registry=registry)
            for outcome, doc in (
                ("delivered", "Events delivered to each event sink"),
                ("retried", "Failed delivery attempts to each event sink that will be retried"),
                ("dropped", "Events given up on after their last attempt, per event sink"),
            )
        }
        self.cache_hits = Counter(
            "polygraph_cache_hits",
            "Reads served by a cache, by kind (an entity, or sessions) and level (local, shared)",
            ["kind", "level"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "polygraph_cache_misses",
            "Reads a cache sent on to the stores, by kind",
            ["kind"],
            registry=registry,
        )
        self.cache_shared_failures = Counter(
            "polygraph_cache_shared_failures",
            "Reads and writes of the cache's Redis level that failed (L1 carried on)",
            registry=registry,
        )
        self.rate_limit_points = Counter(
            "polygraph_rate_limit_points",
            "Cost points charged to callers, by policy (role, anonymous, login)",
            ["policy"],
            registry=registry,
        )
        self.rate_limit_refusals = Counter(
            "polygraph_rate_limit_refusals",
            "Requests refused for want of points (HTTP 429), by policy",
            ["policy"],
            registry=registry,
        )
        # Each copied series' value when last copied, by counter and label values.
        self._copies: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self.subscriptions_open = Gauge(
            "polygraph_subscriptions_open",
            "Open GraphQL subscriptions, over every worker",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._registry = registry
        # (counter, how to read it now); made at the first sync, as the stores are read
        # only once serving.
        self._counters: list[tuple[Counter, Callable[[], float]]] | None = None

    def _background_counters(self) -> list[tuple[Counter, Callable[[], float]]]:
        readers: list[tuple[str, str, Callable[[], float]]] = []
        projector = self._stores.projector
        if projector is not None:
            readers += [
                ("polygraph_projector_applied", "Outbox rows applied to Neo4j",
                 lambda: projector.applied),
                ("polygraph_projector_batches",
                 "Batches of outbox rows applied to Neo4j (applied / batches: rows a batch)",
                 lambda: projector.batches),
                ("polygraph_projector_failed",
                 "Projector batches that failed (retried later; rows stay pending)",
                 lambda: projector.failed),
            ]  # fmt: skip
        events = self._stores.events
        if events is not None:
            readers += [
                ("polygraph_events_dropped", "Events a slow subscriber lost (its queue was full)",
                 lambda: events.dropped),
                ("polygraph_events_publish_failures",
                 "Best-effort event publications that failed (Redis unreachable)",
                 lambda: events.publish_failures),
                ("polygraph_events_answered_for_followers",
                 "Subscription events answered once for another subscriber of the same"
                 " operation, variables and permissions",
                 lambda: events.answered_for_followers),
            ]  # fmt: skip
        readers.append(
            (
                "polygraph_log_records_dropped",
                "Log records dropped because the log writer fell a whole queue behind",
                dropped_records,
            )
        )
        return [(Counter(name, doc, registry=self._registry), read) for name, doc, read in readers]

    def _copy(self, counter: Counter, labels: tuple[str, ...], now: float) -> None:
        """Bring a counter kept elsewhere up to `now`, by what it gained since the last copy.
        The series exists from the first copy on, at zero until something happens."""
        key = (counter, labels)
        child = counter.labels(*labels) if labels else counter
        copied = self._copies.get(key, 0.0)
        if now > copied:
            child.inc(now - copied)
            self._copies[key] = now

    def sync(self) -> None:
        postgres = self._stores.postgres
        pools = [("primary", "postgres", postgres.pool_usage())]
        pools += [("replica", name, usage) for name, usage in postgres.replica_pool_usage()]
        for role, server, usage in pools:
            self.pool.labels("postgres", role, server, "in_use").set(usage.in_use)
            self.pool.labels("postgres", role, server, "idle").set(usage.idle)
            self.pool.labels("postgres", role, server, "waiting").set(usage.waiting)
            self.pool_max.labels("postgres", role, server).set(usage.max)
            self._copy(self.pool_opened, ("postgres", role, server), usage.opened)
            for reason in CLOSE_REASONS:
                closed = usage.closed.get(reason, 0)
                self._copy(self.pool_closed, ("postgres", role, server, reason), closed)
        # Neo4j and Redis: connections in use (sessions open, commands under way) and
        # callers waiting past the limit; their drivers keep idle connections to themselves.
        for store, usage in (
            ("neo4j", self._stores.graph.pool_usage()),
            ("redis", self._stores.redis.pool_usage()),
        ):
            self.pool.labels(store, "primary", store, "in_use").set(usage.in_use)
            self.pool.labels(store, "primary", store, "waiting").set(usage.waiting)
            self.pool_max.labels(store, "primary", store).set(usage.max)
        self.subscriptions_open.set(self._stores.subscriptions.open)
        sinks = self._stores.event_sinks
        if sinks is not None:
            for sink_id, counts in sinks.counts.items():
                for outcome, counter in self.sink_outcomes.items():
                    self._copy(counter, (str(sink_id),), getattr(counts, outcome))
        limits = self._stores.rate_limits
        if limits is not None:
            for policy, points in limits.charged.items():
                self._copy(self.rate_limit_points, (policy,), points)
            for policy, count in limits.refused.items():
                self._copy(self.rate_limit_refusals, (policy,), count)
        sessions = self._stores.session_cache
        if sessions is not None:
            self._copy(self.cache_hits, ("sessions", "local"), sessions.hits)
            self._copy(self.cache_misses, ("sessions",), sessions.misses)
        cache = self._stores.entity_cache
        if cache is not None:
            for (kind, level), count in cache.counts.hits.items():
                self._copy(self.cache_hits, (kind, level), count)
            for kind, count in cache.counts.misses.items():
                self._copy(self.cache_misses, (kind,), count)
            self._copy(self.cache_shared_failures, (), cache.counts.shared_failures)
        if self._counters is None:
            self._counters = self._background_counters()
        for counter, read in self._counters:
            self._copy(counter, (), read())


class _OutboxCollector(Collector):
    """The outbox backlog, read from PostgreSQL at scrape time."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores
        self._outbox_pending: float | None = None
        self._outbox_oldest_s: float | None = None

    async def refresh(self) -> None:
        """A PostgreSQL that is down leaves the gauges out of this scrape rather than
        failing it."""
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
