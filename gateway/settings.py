"""Settings, read once from `POLYGRAPH_*` environment variables and `.env`.

Nothing else in the project reads the environment: `create_app` and the CLI
build a `Settings` and pass the pieces each component needs into its constructor.
Defaults point at the local `dev` stack, so nothing needs setting to try it.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.csrf import DEFAULT_REQUIRED_HEADERS
from gateway.limits.concurrency import (
    DEFAULT_EXPENSIVE,
    DEFAULT_OPEN_OPERATIONS_PER_CALLER,
    ExpensiveOperationOptions,
)
from gateway.limits.options import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_SEND_TIMEOUT_S,
    RequestLimits,
)
from resolvers.auth import Role
from resolvers.documents import DocumentOptions
from resolvers.rate_limits import DEFAULT_POLICY, RateLimitPolicy, RefusalLane
from stores.cache import CacheOptions
from stores.embeddings import DEFAULT_DIMENSION, DEFAULT_MODEL, EmbedderOptions
from stores.graph import GraphOptions
from stores.metrics import MetricsOptions
from stores.postgres import PostgresOptions
from stores.postgres.options import PostgresTLS, SslMode
from stores.postgres.task_claims import ClaimOptions
from stores.redis import RedisOptions
from stores.redis.apq import ApqOptions
from stores.redis.presence import PresenceOptions
from stores.redis.rate_limits import DEFAULT_RATE_LIMIT_OPTIONS, RateLimitOptions
from stores.redis.sessions import SessionOptions
from stores.search import SearchOptions
from workers.event_sinks import DeliveryOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POLYGRAPH_", env_file=".env", extra="ignore", frozen=True
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # `json`: one JSON object per record, for log shippers (gateway/logs.py).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry traces over OTLP, configured by the OTEL_* variables (gateway/tracing.py).
    tracing: bool = False
    # `production` turns introspection and GraphiQL off unless they are set on here.
    env: Literal["development", "production"] = "development"
    graphiql: bool | None = None
    introspection: bool | None = None
    # Pages on these origins may call the API (CORS) and open WebSockets to it;
    # a JSON list, e.g. ["https://app.example.com"]. Empty: same origin only.
    cors_origins: list[str] = Field(default_factory=list)
    # Run GETs only with a preflight header (Apollo Router's CSRF prevention).
    csrf_prevention: bool = True
    csrf_required_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUIRED_HEADERS))
    # Several gateways may start at once: migrations take an advisory lock. A gateway
    # never serves a PostgreSQL schema older than its code: without migrating, it checks.
    migrate_on_start: bool = True
    # The longest migrations wait for a lock (another gateway's migration lock included).
    migration_lock_timeout_s: float = Field(default=60.0, gt=0)

    # `planned` runs each operation from a plan cached per document (gateway/engine);
    # `stock` is graphql-core's own executor, kept to compare against.
    executor: Literal["planned", "stock"] = "planned"

    # Which local stack `polygraph stack` and `make run` manage.
    profile: Literal["dev", "test", "bench"] = "dev"

    # PostgreSQL (source of truth)
    postgres_dsn: SecretStr = SecretStr(
        "postgresql://polygraph:polygraph@127.0.0.1:25432/polygraph"
    )
    postgres_pool_min: int = Field(default=2, ge=0)
    postgres_pool_max: int = Field(default=10, ge=1)
    postgres_statement_timeout_s: float = Field(default=10.0, gt=0)
    postgres_acquire_timeout_s: float = Field(default=5.0, gt=0)
    # TLS, in libpq's terms; set, they replace the DSN's own parameters (the metrics DSN's too).
    postgres_sslmode: SslMode | None = None
    postgres_sslrootcert: str | None = None
    postgres_sslcert: str | None = None
    postgres_sslkey: str | None = None
    # Streaming replicas that serve queries (a JSON list of DSNs; README: "Scale-out").
    # One lagging more than the bound, or down, is skipped; the TLS settings apply too.
    postgres_replica_dsns: list[SecretStr] = Field(default_factory=list)
    postgres_replica_max_lag_s: float = Field(default=5.0, gt=0, le=3600)
    postgres_replica_check_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Bearer token a Prometheus scraper sends for /metrics; unset, /metrics is off (404).
    prometheus_token: SecretStr | None = None
    # Where `polygraph backup` and `restore` find pg_dump and pg_restore (unset: the
    # local stack's PostgreSQL when installed, then PATH).
    postgres_bin_dir: str | None = None

    # Neo4j (graph projection)
    neo4j_uri: str = "bolt://127.0.0.1:25687"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("polygraph-dev")
    neo4j_pool_max: int = Field(default=20, ge=1)
    neo4j_query_timeout_s: float = Field(default=10.0, gt=0)
    neo4j_acquire_timeout_s: float = Field(default=5.0, gt=0)
    # The CA behind the server's certificate, for `bolt+s://` and `neo4j+s://`.
    neo4j_tls_ca_file: str | None = None

    # Redis (sessions, cache, rate limits, pub/sub)
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:25479/0")
    redis_pool_max: int = Field(default=50, ge=1)
    redis_command_timeout_s: float = Field(default=2.0, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)
    # TLS, for a `rediss://` URL (also `rediss+sentinel://`, `rediss+cluster://`): the CA
    # (unset: the system's) and a client certificate.
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None

    # Events between replicas travel on `<namespace>:<channel>` (pub/sub is server-wide).
    events_namespace: str = "polygraph"
    # Apply the outbox to Neo4j from this process (several replicas share the work).
    projector_enabled: bool = True
    # The longest a mutation waits for Neo4j to show its change (read your writes).
    projection_wait_s: float = Field(default=2.0, ge=0, le=30)

    # Event sinks (README: "Event sinks"): deliver task and agent events from this
    # process (replicas share the work); each attempt's timeout, attempts per event
    # before it is dropped, the exponential pause between them (with jitter), attempts
    # in flight at once (one sink's: half at most), and after a look that found nothing,
    # the pause before the next: at least the poll, at most the idle poll, ended by a
    # write through this process or, through the outbox NOTIFY, another replica's.
    event_sinks_enabled: bool = True
    event_sink_timeout_s: float = Field(default=5.0, gt=0, le=60)
    event_sink_max_attempts: int = Field(default=8, ge=1, le=50)
    event_sink_min_backoff_s: float = Field(default=1.0, gt=0)
    event_sink_max_backoff_s: float = Field(default=600.0, gt=0)
    event_sink_concurrency: int = Field(default=8, ge=1, le=100)
    event_sink_poll_s: float = Field(default=1.0, gt=0, le=60)
    event_sink_idle_poll_s: float = Field(default=10.0, gt=0, le=300)
    # Sink URLs on loopback and link-local addresses (the gateway's own host, cloud
    # metadata services) are refused unless this is set.
    event_sinks_allow_loopback: bool = False
    # Work distribution (README: "Work distribution"): a claim's lease when the claimer
    # names none, the longest claimNextTask may wait for work (keep it under the request
    # deadline), and how often, at most, the lease sweep looks for lapsed leases.
    claim_lease_s: float = Field(default=60.0, ge=1, le=3600)
    claim_max_wait_s: float = Field(default=20.0, ge=0, le=300)
    claim_sweep_interval_s: float = Field(default=5.0, gt=0, le=3600)

    # Request limits, checked before anything executes (README: "Request limits").
    max_body_bytes: int = Field(default=DEFAULT_LIMITS.max_body_bytes, ge=1024)
    # A request's line and headers, refused with 431 as they arrive, and the time they
    # and a body's pauses may take (`polygraph serve`: gateway.http_protocol).
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEAD_BYTES, ge=1024)
    read_timeout_s: float = Field(default=DEFAULT_READ_TIMEOUT_S, gt=0, le=3600)
    # A response past the socket's buffer must be taken at 4 KiB/s over each this long.
    send_timeout_s: float = Field(default=DEFAULT_SEND_TIMEOUT_S, gt=0, le=3600)
    # Connections one client address (an IPv6 client's /64) may hold open, WebSockets
    # included; POLYGRAPH_TRUSTED_PROXIES are not counted. 0: no bound.
    max_connections_per_address: int = Field(default=DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, ge=0)
    # Operations one caller (a user, or an anonymous address) may have open over
    # WebSockets at once in one gateway process, subscriptions above all.
    max_subscriptions_per_caller: int = Field(default=DEFAULT_OPEN_OPERATIONS_PER_CALLER, ge=1)
    # Connections one gateway process may hold open in all; 0: as many as its open-files
    # limit allows, less what the stores and logs need (gateway.runtime).
    max_connections: int = Field(default=0, ge=0)
    max_document_chars: int = Field(default=DEFAULT_LIMITS.max_document_chars, ge=100)
    max_tokens: int = Field(default=DEFAULT_LIMITS.max_tokens, ge=10)
    max_depth: int = Field(default=DEFAULT_LIMITS.max_depth, ge=2)
    max_aliases: int = Field(default=DEFAULT_LIMITS.max_aliases, ge=1)
    max_root_fields: int = Field(default=DEFAULT_LIMITS.max_root_fields, ge=1)
    max_fields: int = Field(default=DEFAULT_LIMITS.max_fields, ge=1)
    max_list_length: int = Field(default=DEFAULT_LIMITS.max_list_length, ge=1)
    max_cost: int = Field(default=DEFAULT_LIMITS.max_cost, ge=1)
    # Operations costing at least `expensive_cost` execute at most this many at once per
    # caller (user, or address when anonymous); more wait, up to `expensive_queue`.
    expensive_enabled: bool = True
    expensive_cost: int = Field(default=DEFAULT_EXPENSIVE.cost, ge=1)
    expensive_concurrency_anonymous: int = Field(default=DEFAULT_EXPENSIVE.anonymous, ge=1)
    expensive_concurrency_viewer: int = Field(default=DEFAULT_EXPENSIVE.limit(Role.VIEWER), ge=1)
    expensive_concurrency_agent: int = Field(default=DEFAULT_EXPENSIVE.limit(Role.AGENT), ge=1)
    expensive_concurrency_operator: int = Field(
        default=DEFAULT_EXPENSIVE.limit(Role.OPERATOR), ge=1
    )
    expensive_concurrency_admin: int = Field(default=DEFAULT_EXPENSIVE.limit(Role.ADMIN), ge=1)
    expensive_queue: int = Field(default=DEFAULT_EXPENSIVE.queue, ge=0, le=10_000)
    request_deadline_s: float = Field(default=DEFAULT_LIMITS.deadline_s, gt=0)
    # Queries and mutations slower than this are logged with their name and cost.
    slow_operation_s: float = Field(default=1.0, gt=0)
    # PostgreSQL statements and Neo4j reads slower than this are logged.
    slow_store_call_s: float = Field(default=1.0, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_LIMITS.max_response_bytes, ge=1024)
    # From SIGTERM to exit, at most: requests in flight get all but 2 s of it (at least
    # half) to finish, and are cancelled after; the stores close in the rest.
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # WebSocket permessage-deflate, when a client offers it. Off: each subscriber's
    # connection would keep its own zlib state (tens of KiB) and compress every event
    # on its own, which costs more CPU per delivery than anything else the gateway
    # does for it (bench/profile_notes.md, S8). graphql-ws servers on Node's `ws`
    # leave it off by default too.
    ws_compression: bool = False

    # Health probes never wait longer than this for one store.
    health_probe_timeout_s: float = Field(default=2.0, gt=0)
    # One probe serves every health reader of a process for this long, and
    # `healthUpdates` ticks no faster.
    health_min_interval_s: float = Field(default=1.0, ge=0.1, le=60)

    # Sessions (Redis, or this process's memory while Redis is away)
    session_ttl_s: int = Field(default=3600, ge=60, le=30 * 86_400)
    # However it is used, a session ends this long after login.
    session_lifetime_s: int = Field(default=86_400, ge=60, le=30 * 86_400)
    # A session's expiry slides forward on use, at most once per interval.
    session_touch_interval_s: float = Field(default=5.0, ge=0)
    session_fallback_retry_s: float = Field(default=1.0, gt=0)
    # A checked session token is trusted this long without asking Redis and PostgreSQL
    # again; revocations reach every replica's cache at once over pub/sub. 0: no cache.
    session_cache_s: float = Field(default=5.0, ge=0, le=60)

    # Entity cache (agents, tasks, workflows, users by id): L1 in process, L2 in Redis,
    # invalidated by PostgreSQL on every change (stores.cache.entities).
    cache_enabled: bool = True
    cache_shared: bool = True
    cache_agent_ttl_s: float = Field(default=300, gt=0, le=86_400)
    cache_task_ttl_s: float = Field(default=300, gt=0, le=86_400)
    cache_finished_task_ttl_s: float = Field(default=86_400, gt=0, le=7 * 86_400)
    cache_workflow_ttl_s: float = Field(default=600, gt=0, le=86_400)
    cache_user_ttl_s: float = Field(default=600, gt=0, le=86_400)
    cache_local_capacity: int = Field(default=50_000, ge=1, le=10_000_000)
    # Whole results of queries marked `@cached` (gateway.query_cache): default and
    # largest lifetime, largest result kept, results each process holds.
    cache_query_ttl_s: float = Field(default=600, gt=0, le=86_400)
    cache_query_max_bytes: int = Field(default=65_536, ge=1, le=16 * 1024 * 1024)
    cache_query_local_capacity: int = Field(default=2_000, ge=1, le=1_000_000)
    # Metric aggregates over closed windows (stores.cache.aggregates).
    cache_metrics_ttl_s: float = Field(default=3_600, gt=0, le=7 * 86_400)
    cache_metrics_closed_after_s: float = Field(default=60, gt=0, le=86_400)
    cache_metrics_local_capacity: int = Field(default=2_000, ge=1, le=1_000_000)

    # Rate limits, in cost points per window: per user by role, per client address when
    # anonymous; `login` attempts per client address. Shared by replicas through Redis.
    # Defaults (resolvers.rate_limits.RateLimitPolicy) hold at least `max_cost`.
    rate_limit_enabled: bool = True
    rate_limit_window_s: int = Field(default=DEFAULT_POLICY.window_s, ge=1, le=86_400)
    rate_limit_anonymous: int = Field(default=DEFAULT_POLICY.anonymous, ge=1)
    rate_limit_viewer: int = Field(default=DEFAULT_POLICY.viewer, ge=1)
    rate_limit_agent: int = Field(default=DEFAULT_POLICY.agent, ge=1)
    rate_limit_operator: int = Field(default=DEFAULT_POLICY.operator, ge=1)
    rate_limit_admin: int = Field(default=DEFAULT_POLICY.admin, ge=1)
    rate_limit_login: int = Field(default=DEFAULT_POLICY.login, ge=1)
    # Points every request costs besides its operation's estimate.
    rate_limit_request: int = Field(default=DEFAULT_POLICY.request, ge=0)
    # And one point more per this many bytes of its body (0: none).
    rate_limit_body_bytes_per_point: int = Field(default=DEFAULT_POLICY.body_bytes_per_point, ge=0)
    rate_limit_fallback_retry_s: float = Field(default=1.0, gt=0)
    # A caller's bucket with room lends this process its quota divided by this, spent
    # on the caller's next requests without a Redis call (0: every request asks Redis).
    rate_limit_lease_divisor: int = Field(
        default=DEFAULT_RATE_LIMIT_OPTIONS.lease_divisor, ge=0, le=1_000_000
    )
    # A refusal for rate is answered this long after it is decided: a client that
    # ignores Retry-After (a second at least) cannot turn the gateway into a refusal loop.
    rate_limit_refusal_delay_s: float = Field(default=0.25, ge=0, le=1)
    # Proxies whose X-Forwarded-For names the client (addresses or CIDR blocks, comma
    # separated). Empty: the client is the connection's peer and the header is ignored.
    trusted_proxies: str = ""

    # Automatic persisted queries, kept in Redis for a while after their last registration.
    apq_enabled: bool = True
    apq_ttl_s: int = Field(default=86_400, ge=60)
    # The largest document the APQ cache keeps and a manifest may register (bytes).
    persisted_document_max_bytes: int = Field(default=65_536, ge=256, le=10_000_000)
    # Only documents registered with `polygraph documents push` run.
    trusted_documents_only: bool = False

    # Agents' presence (Redis): offline this long after the last heartbeat; every replica
    # sweeps for expired heartbeats this often; a report's `details` at most this many
    # bytes of JSON; an agent offline this long has its last heartbeat forgotten.
    presence_offline_after_s: float = Field(default=30.0, ge=1, le=86_400)
    presence_sweep_s: float = Field(default=5.0, gt=0, le=3600)
    presence_forget_after_s: float = Field(default=30 * 86_400.0, ge=1, le=366 * 86_400)
    presence_details_max_bytes: int = Field(default=4096, ge=0, le=65_536)

    # Subscriptions: events a subscriber may fall behind by before its oldest are dropped.
    event_queue_size: int = Field(default=256, ge=1)

    # Metrics (TimescaleDB when the server has it, native partitions otherwise).
    # Unset DSN: the PostgreSQL one. Durations take seconds or ISO 8601 (`P1D`).
    metrics_dsn: SecretStr | None = None
    metrics_backend: Literal["auto", "timescaledb", "native"] = "auto"
    metrics_schema: str = "metrics"
    metrics_pool_max: int = Field(default=5, ge=1)
    metrics_chunk_interval: timedelta = timedelta(days=1)
    metrics_partitions_ahead: int = Field(default=3, ge=1)
    metrics_compress_after: timedelta = timedelta(days=7)
    metrics_retention: timedelta = timedelta(days=30)
    metrics_rollup_retention: timedelta = timedelta(days=400)
    metrics_max_future: timedelta = timedelta(minutes=10)
    metrics_maintenance_interval_s: float = Field(default=3600.0, gt=0)

    # Embeddings: `local` runs all-MiniLM-L6-v2 in this process (offline); `openai` calls
    # any OpenAI-compatible /v1/embeddings server at `embedding_url`.
    embedding_provider: Literal["local", "openai"] = "local"
    embedding_model: str = DEFAULT_MODEL
    embedding_dimension: int = Field(default=DEFAULT_DIMENSION, ge=1, le=4000)
    embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    embedding_url: str = "http://127.0.0.1:8080/v1"
    embedding_api_key: SecretStr = SecretStr("")
    embedding_timeout_s: float = Field(default=10.0, gt=0)
    embedding_max_retries: int = Field(default=3, ge=0, le=10)
    # ONNX Runtime threads per batch for the local model (0: one per core).
    embedding_threads: int = Field(default=0, ge=0)
    # Compute embeddings left pending (the embedder was down at write time) in the background.
    embedding_filler_enabled: bool = True
    # HNSW: graph degree and build effort (applied when `polygraph reembed` builds the
    # indexes), and candidates per query (raised per query to the page's depth).
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=128, ge=4, le=1000)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # HYBRID search: the weight of meaning against words (see stores/search/ranking.py).
    search_semantic_weight: float = Field(default=0.7, ge=0, le=1)
    # `createTask { possibleDuplicates }`: open tasks at least this similar (cosine), and
    # how long the mutation waits for the new text's embedding to find them.
    task_duplicate_threshold: float = Field(default=0.8, ge=-1, le=1)
    task_duplicate_timeout_s: float = Field(default=2.0, gt=0, le=30)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        for entry in _split(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or CIDR block") from exc
        return value

    def trusted_proxy_list(self) -> list[str]:
        return _split(self.trusted_proxies)

    def rate_limit_policy(self) -> RateLimitPolicy:
        return RateLimitPolicy(
            enabled=self.rate_limit_enabled,
            window_s=self.rate_limit_window_s,
            anonymous=self.rate_limit_anonymous,
            viewer=self.rate_limit_viewer,
            agent=self.rate_limit_agent,
            operator=self.rate_limit_operator,
            admin=self.rate_limit_admin,
            login=self.rate_limit_login,
            request=self.rate_limit_request,
            body_bytes_per_point=self.rate_limit_body_bytes_per_point,
        )

    def expensive_operation_options(self) -> ExpensiveOperationOptions:
        return ExpensiveOperationOptions(
            enabled=self.expensive_enabled,
            cost=self.expensive_cost,
            anonymous=self.expensive_concurrency_anonymous,
            per_role={
                Role.VIEWER: self.expensive_concurrency_viewer,
                Role.AGENT: self.expensive_concurrency_agent,
                Role.OPERATOR: self.expensive_concurrency_operator,
                Role.ADMIN: self.expensive_concurrency_admin,
            },
            queue=self.expensive_queue,
        )

    def refusal_lane(self) -> RefusalLane:
        return RefusalLane(delay_s=self.rate_limit_refusal_delay_s)

    def rate_limit_options(self) -> RateLimitOptions:
        return RateLimitOptions(
            fallback_retry=self.rate_limit_fallback_retry_s,
            lease_divisor=self.rate_limit_lease_divisor,
        )

    def cache_options(self) -> CacheOptions:
        return CacheOptions(
            enabled=self.cache_enabled,
            shared=self.cache_shared,
            agent_ttl_s=self.cache_agent_ttl_s,
            task_ttl_s=self.cache_task_ttl_s,
            finished_task_ttl_s=self.cache_finished_task_ttl_s,
            workflow_ttl_s=self.cache_workflow_ttl_s,
            user_ttl_s=self.cache_user_ttl_s,
            local_capacity=self.cache_local_capacity,
            query_ttl_s=self.cache_query_ttl_s,
            query_max_bytes=self.cache_query_max_bytes,
            query_local_capacity=self.cache_query_local_capacity,
            metrics_ttl_s=self.cache_metrics_ttl_s,
            metrics_closed_after_s=self.cache_metrics_closed_after_s,
            metrics_local_capacity=self.cache_metrics_local_capacity,
        )

    def apq_options(self) -> ApqOptions:
        return ApqOptions(ttl_s=self.apq_ttl_s, max_bytes=self.persisted_document_max_bytes)

    def document_options(self) -> DocumentOptions:
        return DocumentOptions(
            apq_enabled=self.apq_enabled, trusted_only=self.trusted_documents_only
        )

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else self.env != "production"

    @property
    def introspection_enabled(self) -> bool:
        if self.introspection is not None:
            return self.introspection
        return self.env != "production"

    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_body_bytes=self.max_body_bytes,
            max_document_chars=self.max_document_chars,
            max_tokens=self.max_tokens,
            max_depth=self.max_depth,
            max_aliases=self.max_aliases,
            max_root_fields=self.max_root_fields,
            max_fields=self.max_fields,
            max_list_length=self.max_list_length,
            max_cost=self.max_cost,
            deadline_s=self.request_deadline_s,
            max_response_bytes=self.max_response_bytes,
        )

    def embedder_options(self) -> EmbedderOptions:
        return EmbedderOptions(
            provider=self.embedding_provider,
            model=self.embedding_model,
            dimension=self.embedding_dimension,
            batch_size=self.embedding_batch_size,
            base_url=self.embedding_url,
            api_key=self.embedding_api_key.get_secret_value(),
            timeout=self.embedding_timeout_s,
            max_retries=self.embedding_max_retries,
            threads=self.embedding_threads,
        )

    def event_sink_options(self) -> DeliveryOptions:
        return DeliveryOptions(
            timeout_s=self.event_sink_timeout_s,
            max_attempts=self.event_sink_max_attempts,
            min_backoff_s=self.event_sink_min_backoff_s,
            max_backoff_s=max(self.event_sink_min_backoff_s, self.event_sink_max_backoff_s),
            concurrency=self.event_sink_concurrency,
            poll_s=self.event_sink_poll_s,
            idle_poll_s=max(self.event_sink_poll_s, self.event_sink_idle_poll_s),
            allow_loopback=self.event_sinks_allow_loopback,
        )

    def search_options(self) -> SearchOptions:
        return SearchOptions(
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
            ef_search=self.hnsw_ef_search,
            semantic_weight=self.search_semantic_weight,
            duplicate_threshold=self.task_duplicate_threshold,
            duplicate_embed_timeout_s=self.task_duplicate_timeout_s,
        )

    def postgres_options(self) -> PostgresOptions:
        return PostgresOptions(
            dsn=self.postgres_tls().apply(self.postgres_dsn.get_secret_value()),
            min_size=self.postgres_pool_min,
            max_size=self.postgres_pool_max,
            statement_timeout=self.postgres_statement_timeout_s,
            acquire_timeout=self.postgres_acquire_timeout_s,
            migration_lock_timeout=self.migration_lock_timeout_s,
            slow_statement_s=self.slow_store_call_s,
            replica_dsns=tuple(
                self.postgres_tls().apply(dsn.get_secret_value())
                for dsn in self.postgres_replica_dsns
            ),
            replica_max_lag_s=self.postgres_replica_max_lag_s,
            replica_check_interval_s=self.postgres_replica_check_interval_s,
        )

    def postgres_tls(self) -> PostgresTLS:
        return PostgresTLS(
            mode=self.postgres_sslmode,
            root_cert=self.postgres_sslrootcert,
            cert=self.postgres_sslcert,
            key=self.postgres_sslkey,
        )

    def graph_options(self) -> GraphOptions:
        return GraphOptions(
            uri=self.neo4j_uri,
            user=self.neo4j_user,
            password=self.neo4j_password.get_secret_value(),
            max_pool_size=self.neo4j_pool_max,
            query_timeout=self.neo4j_query_timeout_s,
            acquire_timeout=self.neo4j_acquire_timeout_s,
            tls_ca_file=self.neo4j_tls_ca_file,
            slow_query_s=self.slow_store_call_s,
        )

    def redis_options(self) -> RedisOptions:
        return RedisOptions(
            url=self.redis_url.get_secret_value(),
            max_connections=self.redis_pool_max,
            command_timeout=self.redis_command_timeout_s,
            connect_timeout=self.redis_connect_timeout_s,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
        )

    def metrics_options(self) -> MetricsOptions:
        dsn = self.metrics_dsn or self.postgres_dsn
        return MetricsOptions(
            dsn=self.postgres_tls().apply(dsn.get_secret_value()),
            backend=self.metrics_backend,
            schema=self.metrics_schema,
            min_size=min(1, self.metrics_pool_max),
            max_size=self.metrics_pool_max,
            acquire_timeout=self.postgres_acquire_timeout_s,
            chunk_interval=self.metrics_chunk_interval,
            partitions_ahead=self.metrics_partitions_ahead,
            compress_after=self.metrics_compress_after,
            retention=self.metrics_retention,
            rollup_retention=self.metrics_rollup_retention,
            max_future=self.metrics_max_future,
            maintenance_interval=self.metrics_maintenance_interval_s,
        )

    def claim_options(self) -> ClaimOptions:
        return ClaimOptions(
            lease_s=self.claim_lease_s,
            max_wait_s=self.claim_max_wait_s,
            sweep_interval_s=self.claim_sweep_interval_s,
        )

    def presence_options(self) -> PresenceOptions:
        return PresenceOptions(
            offline_after=self.presence_offline_after_s,
            forget_after=self.presence_forget_after_s,
            details_max_bytes=self.presence_details_max_bytes,
        )

    def session_options(self) -> SessionOptions:
        return SessionOptions(
            touch_interval=self.session_touch_interval_s,
            fallback_retry=self.session_fallback_retry_s,
            lifetime=self.session_lifetime_s,
        )


def _split(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]
