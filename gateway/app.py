"""The ASGI application: settings in, one lifespan that owns the stores."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from graphql.execution import Executor as GraphQLExecutionContext
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route, WebSocketRoute
from strawberry.extensions import SchemaExtension
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import health_routes, ingest
from gateway.auth import AuthenticationMiddleware
from gateway.cache_settle import SettleEntityCache
from gateway.engine import PlannedExecutionContext, planned_execution_context
from gateway.errors import ErrorCodes, method_not_allowed
from gateway.graphiql import GraphiQL
from gateway.graphql_view import GraphQLView
from gateway.introspection import DisableIntrospection
from gateway.limits import (
    ExpensiveOperationGate,
    ExpensiveOperations,
    OpenOperations,
    ParseLimiter,
    PlanCache,
    RequestLimiter,
    RequestLimits,
)
from gateway.middleware import RequestLifecycle
from gateway.operation_hooks import OperationHooks
from gateway.parsing import ParsedDocuments, ReportingParserCache
from gateway.persisted_documents import PersistedQueries
from gateway.prepared import PreparedOperations, PreparedPath
from gateway.prometheus import GatewayMetrics, metrics_route
from gateway.query_cache import QueryResultCaching
from gateway.ratelimit import RateLimiting, RateLimitMiddleware
from gateway.read_routing import read_your_writes
from gateway.settings import Settings
from gateway.shutdown import BACKGROUND_STOP_S, InFlight
from gateway.startup import prepare_postgres
from gateway.tracing import (
    GraphQLSpans,
    instrument_stores,
    otlp_provider,
    without_query_string,
)
from resolvers.auth import Principal
from resolvers.claims import announce_change
from resolvers.context import RequestContext, Stores
from resolvers.documents import PersistedDocuments
from resolvers.health import HealthMonitor
from resolvers.rate_limits import RateLimits
from resolvers.revocations import Revocations
from resolvers.session_cache import SessionCache
from schema import build_schema
from stores import GraphStore, PostgresStore, RedisStore, StoreUnavailable
from stores.cache import EntityCache
from stores.embeddings import Embedder, create_embedder
from stores.graph import tracing as graph_tracing
from stores.metrics import MetricsStore
from stores.redis.apq import PersistedQueryCache
from stores.redis.events import EventBus
from stores.redis.presence import PresenceStore
from stores.redis.rate_limits import RateLimitStore
from stores.redis.sessions import SessionStore
from stores.redis.write_positions import WritePositions
from stores.search import EmbeddingSpace, SearchStore, ensure_space
from workers.embeddings import EmbeddingFiller
from workers.event_sinks import EventSinkDelivery
from workers.presence import PresenceSweeper
from workers.projector import Projector
from workers.task_leases import LeaseSweeper

logger = logging.getLogger("polygraph")


def schema_extensions(
    limits: RequestLimits,
    *,
    introspection: bool = True,
    slow_operation_s: float = 1.0,
    metrics: GatewayMetrics | None = None,
    expensive: ExpensiveOperations | None = None,
    entity_cache: bool = True,
    prepared: PreparedOperations | None = None,
) -> list[Callable[[], SchemaExtension]]:
    """In order: hooks enter first to last and leave last to first, so `ErrorCodes`
    sees every error the others leave. Without the entity cache (`entity_cache`
    False) its two extensions could never act, and are left out rather than run on
    every operation for nothing (bench/profile_notes.md). Queries that pass every
    check are offered to `prepared` (gateway/prepared.py)."""
    plans = PlanCache()
    return [
        # Outermost: the whole operation counts, and it sees every error's code.
        partial(OperationHooks, slow_s=slow_operation_s, metrics=metrics),
        ErrorCodes,
        *([] if introspection else [DisableIntrospection]),
        # Puts a persisted document's text in place before anything parses it.
        PersistedQueries,
        partial(ParseLimiter, limits=limits),
        partial(ReportingParserCache, documents=ParsedDocuments()),
        partial(RequestLimiter, limits=limits, plans=plans, prepared=prepared),
        # Charges the cost RequestLimiter set, in on_execute: after it.
        RateLimiting,
        *([QueryResultCaching] if entity_cache else []),
        # Charged first: an operation refused for its rate never queues; a cached
        # result is answered without a slot.
        partial(ExpensiveOperationGate, gate=expensive or ExpensiveOperations()),
        *([SettleEntityCache] if entity_cache else []),
    ]


def cors(origins: list[str], preflight_headers: list[str]) -> Middleware:
    """Browsers on `origins` may call the API. No credentials mode: API keys and
    session tokens travel in headers, never cookies."""
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST"],
        allow_headers=[
            "authorization",
            "content-type",
            "x-api-key",
            "x-request-id",
            *preflight_headers,
        ],
        expose_headers=[
            "x-request-id",
            "x-round-trips",
            "retry-after",
            "ratelimit",
            "ratelimit-policy",
        ],
        max_age=600,
    )


async def migrate_reachable(stores: Stores) -> None:
    """Apply pending Neo4j and metrics migrations if those stores answer. A Neo4j that
    is down is migrated by the projector before it projects anything; metrics, on the
    next start (or by `polygraph migrate`)."""
    try:
        applied = await stores.graph.migrate()
    except StoreUnavailable as exc:
        logger.warning("skipped migrations: %s", exc)
    else:
        if applied:
            logger.info("GraphStore: applied migrations %s", ", ".join(applied))
    if stores.metrics is not None:
        try:
            applied = await stores.metrics.migrate()
        except StoreUnavailable as exc:
            logger.warning("skipped metrics setup: %s", exc)
        else:
            if applied:
                logger.info("MetricsStore: applied %s", ", ".join(applied))


async def check_embedding_space(stores: Stores) -> None:
    """Refuse to start against vectors of another model or dimension (the error says
    to run `polygraph reembed`); a PostgreSQL that is down is checked on the next start."""
    assert stores.search is not None and stores.embedder is not None
    space = EmbeddingSpace(stores.embedder.model, stores.embedder.dimension)
    try:
        await ensure_space(stores.search, space)
    except StoreUnavailable as exc:
        logger.warning("skipped the embedding space check: %s", exc)


def permission_scope(context: object) -> Principal | None:
    """Subscribers with the same principal get the same answer to the same event (every
    permission check reads the principal), so they share one execution of it."""
    return context.principal if isinstance(context, RequestContext) else None


def _execution_context(settings: Settings) -> type[PlannedExecutionContext] | None:
    if settings.executor == "stock":
        return None
    return planned_execution_context(share_events_by=permission_scope)


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    execution_context_class: type[GraphQLExecutionContext[Any]] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """`embedder` replaces the one settings describe; its owner closes it.
    `execution_context_class` replaces the executor `settings.executor` names.
    `tracer_provider` traces the app into it (otherwise `POLYGRAPH_TRACING` exports
    over OTLP); its owner shuts it down."""
    settings = settings or Settings()
    owns_provider = tracer_provider is None and settings.tracing
    provider = otlp_provider() if owns_provider else tracer_provider
    owns_embedder = embedder is None
    embedder = embedder or create_embedder(settings.embedder_options())
    postgres_options = settings.postgres_options()
    postgres = PostgresStore(postgres_options)
    search = SearchStore(postgres, settings.search_options())
    graph = GraphStore(settings.graph_options())
    redis = RedisStore(settings.redis_options())
    metrics = MetricsStore(settings.metrics_options())
    events = EventBus(
        redis, namespace=settings.events_namespace, queue_size=settings.event_queue_size
    )
    revocations = Revocations(events)
    session_cache = SessionCache(settings.session_cache_s) if settings.session_cache_s else None
    if session_cache is not None:
        revocations.listen(session_cache.drop_covered)
    presence = PresenceStore(redis, settings.presence_options())
    event_sinks = (
        EventSinkDelivery(postgres, settings.event_sink_options(), stop_timeout_s=BACKGROUND_STOP_S)
        if settings.event_sinks_enabled
        else None
    )
    stores = Stores(
        postgres,
        graph,
        redis,
        probe_timeout=settings.health_probe_timeout_s,
        sessions=SessionStore(redis, settings.session_options()),
        events=events,
        projector=(
            Projector(
                postgres,
                graph,
                stop_timeout_s=BACKGROUND_STOP_S,
                also_wake=[event_sinks.wake] if event_sinks is not None else [],
            )
            if settings.projector_enabled
            else None
        ),
        metrics=metrics,
        search=search,
        embedder=embedder,
        embedding_filler=(
            EmbeddingFiller(
                search,
                embedder,
                batch_size=settings.embedding_batch_size,
                stop_timeout_s=BACKGROUND_STOP_S,
            )
            if settings.embedding_filler_enabled
            else None
        ),
        rate_limits=RateLimits(
            RateLimitStore(redis, settings.rate_limit_options()),
            settings.rate_limit_policy(),
            settings.refusal_lane(),
        ),
        documents=PersistedDocuments(
            cache=PersistedQueryCache(redis, settings.apq_options()),
            trusted=postgres.documents,
            options=settings.document_options(),
        ),
        revocations=revocations,
        session_cache=session_cache,
        health=HealthMonitor(min_interval_s=settings.health_min_interval_s),
        event_sinks=event_sinks,
        claim_options=settings.claim_options(),
        entity_cache=(
            EntityCache(postgres, redis, settings.cache_options())
            if settings.cache_enabled
            else None
        ),
        presence=presence,
        presence_sweeper=PresenceSweeper(
            presence, events, interval_s=settings.presence_sweep_s, stop_timeout_s=BACKGROUND_STOP_S
        ),
    )
    lease_sweeper = LeaseSweeper(
        postgres,
        on_expired=partial(announce_change, stores, change="lease_expired"),
        interval_s=settings.claim_sweep_interval_s,
        stop_timeout_s=BACKGROUND_STOP_S,
    )
    prometheus = GatewayMetrics(stores)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if provider is not None:
                stack.callback(instrument_stores(provider))
                graph_tracing.set_tracer(provider.get_tracer("polygraph.neo4j"))
                stack.callback(graph_tracing.set_tracer, None)
                if owns_provider:
                    stack.callback(provider.shutdown)
            prometheus.start()
            stack.callback(prometheus.stop)
            # Entered in dependency order, so they close in reverse.
            for store in (postgres, graph, redis):
                await stack.enter_async_context(store)
            await stack.enter_async_context(metrics)
            if owns_embedder:
                stack.push_async_callback(embedder.aclose)
            await prepare_postgres(postgres, settings)
            if settings.migrate_on_start:
                await migrate_reachable(stores)
            metrics.start_maintenance()
            await check_embedding_space(stores)
            await events.start()
            stack.push_async_callback(events.aclose)
            await revocations.start()
            stack.push_async_callback(revocations.aclose)
            if stores.entity_cache is not None:
                await stores.entity_cache.start()
                stack.push_async_callback(stores.entity_cache.aclose)
            if stores.projector is not None:
                await stores.projector.start()
                stack.push_async_callback(stores.projector.stop)
            if stores.embedding_filler is not None:
                await stores.embedding_filler.start()
                stack.push_async_callback(stores.embedding_filler.stop)
            if stores.event_sinks is not None:
                await stores.event_sinks.start()
                stack.push_async_callback(stores.event_sinks.stop)
            await lease_sweeper.start()
            stack.push_async_callback(lease_sweeper.stop)
            if stores.presence_sweeper is not None:
                await stores.presence_sweeper.start()
                stack.push_async_callback(stores.presence_sweeper.stop)
            app.state.stores = stores
            app.state.settings = settings
            logger.info("gateway ready")
            yield
        logger.info("stores closed")

    limits = settings.request_limits()
    expensive = ExpensiveOperations(settings.expensive_operation_options())
    graphiql = GraphiQL() if settings.graphiql_enabled else None
    executor_class = execution_context_class or _execution_context(settings)
    planned = (
        executor_class
        if executor_class is not None and issubclass(executor_class, PlannedExecutionContext)
        else None
    )
    # The prepared path stands in for every extension but these (gateway/prepared.py).
    prepared = (
        PreparedOperations()
        if planned is not None
        and provider is None
        and not postgres_options.replica_dsns
        and not settings.trusted_documents_only
        else None
    )
    schema = build_schema(
        # First, so that it leaves last and sees every error's code.
        [
            *(
                [partial(GraphQLSpans, tracer=provider.get_tracer("polygraph.graphql"))]
                if provider is not None
                else []
            ),
            # Queries read from PostgreSQL replicas, when there are any.
            *(
                [read_your_writes(WritePositions(redis, memory_s=postgres_options.write_memory_s))]
                if postgres_options.replica_dsns
                else []
            ),
            *schema_extensions(
                limits,
                introspection=settings.introspection_enabled,
                slow_operation_s=settings.slow_operation_s,
                metrics=prometheus,
                expensive=expensive,
                entity_cache=stores.entity_cache is not None,
                prepared=prepared,
            ),
        ],
        execution_context_class=executor_class,
    )
    graphql = GraphQLView(
        schema,
        stores=stores,
        limits=limits,
        csrf_required_headers=settings.csrf_required_headers if settings.csrf_prevention else None,
        projection_wait_s=settings.projection_wait_s,
        session_ttl_s=settings.session_ttl_s,
        graphiql=graphiql,
        # Cross-origin WebSockets (which carry no CORS check) from the CORS allowlist only.
        allowed_origins=settings.cors_origins,
        # A WebSocket that has not signed in by then closes (4408), as a request whose
        # head is that late does (gateway.http_protocol); Strawberry waits a minute.
        connection_init_wait_timeout=timedelta(seconds=settings.read_timeout_s),
        open_operations=OpenOperations(settings.max_subscriptions_per_caller),
        prepared=PreparedPath(
            schema._schema,
            planned,
            prepared,
            limits,
            expensive,
            slow_operation_s=settings.slow_operation_s,
            metrics=prometheus,
        )
        if prepared is not None and planned is not None
        else None,
    )
    routes = [
        # First: routes are matched in order, and nearly every request is this one.
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *health_routes.routes,
        *ingest.routes,
        *(graphiql.routes if graphiql else []),
        metrics_route(
            prometheus,
            settings.prometheus_token.get_secret_value() if settings.prometheus_token else None,
        ),
    ]
    in_flight = InFlight()
    middleware = [
        # A preflight carries no credentials and is answered here; every other answer,
        # refusals of the next layer included, gets the CORS headers a browser needs.
        *(
            [cors(settings.cors_origins, settings.csrf_required_headers)]
            if settings.cors_origins
            else []
        ),
        # Drain on shutdown, request id, log fields and access line, round trips, the
        # body limit and the answer to an unexpected error: outside authentication, so
        # that its records carry the id, its store lookups count too and an oversized
        # body costs no credential lookup.
        Middleware(
            RequestLifecycle,
            in_flight=in_flight,
            max_body_bytes=limits.max_body_bytes,
            body_limited_paths=["/graphql"],
        ),
        Middleware(AuthenticationMiddleware, stores=stores),
        Middleware(RateLimitMiddleware, stores=stores, paths=("/graphql", "/ingest/metrics")),
    ]
    if proxies := settings.trusted_proxy_list():
        # First, so every later layer sees the client the proxies name.
        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=proxies))
    if provider is not None:
        # Outermost: the request's span covers everything, under the caller's trace.
        middleware.insert(
            0,
            Middleware(
                OpenTelemetryMiddleware,
                tracer_provider=provider,
                server_request_hook=without_query_string,
            ),
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={405: method_not_allowed},
    )
    # For the server, which drains these when it shuts down (see gateway.shutdown).
    app.state.in_flight = in_flight
    app.state.expensive_operations = expensive
    app.state.lease_sweeper = lease_sweeper
    return app
