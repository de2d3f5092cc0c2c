"""Settings, read once from `POLYGRAPH_*` environment variables and `.env`.

Nothing else in the project reads the environment: `create_app` and the CLI
build a `Settings` and pass the pieces each component needs into its constructor.
Defaults point at the local `dev` stack, so nothing needs setting to try it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.csrf import DEFAULT_REQUIRED_HEADERS
from gateway.limits.options import DEFAULT_LIMITS, RequestLimits
from stores.embeddings import DEFAULT_DIMENSION, DEFAULT_MODEL, EmbedderOptions
from stores.graph import GraphOptions
from stores.metrics import MetricsOptions
from stores.postgres import PostgresOptions
from stores.redis import RedisOptions
from stores.redis.sessions import SessionOptions
from stores.search import SearchOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POLYGRAPH_", env_file=".env", extra="ignore", frozen=True
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
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

    # Which local stack `polygraph stack` and `make run` manage.
    profile: Literal["dev", "test", "bench"] = "dev"

    # PostgreSQL (source of truth)
    postgres_dsn: SecretStr = SecretStr(
        "postgresql://polygraph:polygraph@127.0.0.1:55432/polygraph"
    )
    postgres_pool_min: int = Field(default=2, ge=0)
    postgres_pool_max: int = Field(default=10, ge=1)
    postgres_statement_timeout_s: float = Field(default=10.0, gt=0)
    postgres_acquire_timeout_s: float = Field(default=5.0, gt=0)

    # Neo4j (graph projection)
    neo4j_uri: str = "bolt://127.0.0.1:57687"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("polygraph-dev")
    neo4j_pool_max: int = Field(default=20, ge=1)
    neo4j_query_timeout_s: float = Field(default=10.0, gt=0)
    neo4j_acquire_timeout_s: float = Field(default=5.0, gt=0)

    # Redis (sessions, cache, rate limits, pub/sub)
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:56379/0")
    redis_pool_max: int = Field(default=50, ge=1)
    redis_command_timeout_s: float = Field(default=2.0, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)

    # Events between replicas travel on `<namespace>:<channel>` (pub/sub is server-wide).
    events_namespace: str = "polygraph"
    # Apply the outbox to Neo4j from this process (several replicas share the work).
    projector_enabled: bool = True
    # The longest a mutation waits for Neo4j to show its change (read your writes).
    projection_wait_s: float = Field(default=2.0, ge=0, le=30)

    # Request limits, checked before anything executes (README: "Request limits").
    max_body_bytes: int = Field(default=DEFAULT_LIMITS.max_body_bytes, ge=1024)
    max_document_chars: int = Field(default=DEFAULT_LIMITS.max_document_chars, ge=100)
    max_tokens: int = Field(default=DEFAULT_LIMITS.max_tokens, ge=10)
    max_depth: int = Field(default=DEFAULT_LIMITS.max_depth, ge=2)
    max_aliases: int = Field(default=DEFAULT_LIMITS.max_aliases, ge=1)
    max_root_fields: int = Field(default=DEFAULT_LIMITS.max_root_fields, ge=1)
    max_fields: int = Field(default=DEFAULT_LIMITS.max_fields, ge=1)
    max_list_length: int = Field(default=DEFAULT_LIMITS.max_list_length, ge=1)
    max_cost: int = Field(default=DEFAULT_LIMITS.max_cost, ge=1)
    request_deadline_s: float = Field(default=DEFAULT_LIMITS.deadline_s, gt=0)
    # Queries and mutations slower than this are logged with their name and cost.
    slow_operation_s: float = Field(default=1.0, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_LIMITS.max_response_bytes, ge=1024)
    # From SIGTERM to exit, at most: requests in flight get all but 2 s of it (at least
    # half) to finish, and are cancelled after; the stores close in the rest.
    shutdown_timeout_s: float = Field(default=10.0, gt=0, le=600)

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
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    # HYBRID search: the weight of meaning against words (see stores/search/ranking.py).
    search_semantic_weight: float = Field(default=0.7, ge=0, le=1)

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

    def search_options(self) -> SearchOptions:
        return SearchOptions(
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
            ef_search=self.hnsw_ef_search,
            semantic_weight=self.search_semantic_weight,
        )

    def postgres_options(self) -> PostgresOptions:
        return PostgresOptions(
            dsn=self.postgres_dsn.get_secret_value(),
            min_size=self.postgres_pool_min,
            max_size=self.postgres_pool_max,
            statement_timeout=self.postgres_statement_timeout_s,
            acquire_timeout=self.postgres_acquire_timeout_s,
            migration_lock_timeout=self.migration_lock_timeout_s,
        )

    def graph_options(self) -> GraphOptions:
        return GraphOptions(
            uri=self.neo4j_uri,
            user=self.neo4j_user,
            password=self.neo4j_password.get_secret_value(),
            max_pool_size=self.neo4j_pool_max,
            query_timeout=self.neo4j_query_timeout_s,
            acquire_timeout=self.neo4j_acquire_timeout_s,
        )

    def redis_options(self) -> RedisOptions:
        return RedisOptions(
            url=self.redis_url.get_secret_value(),
            max_connections=self.redis_pool_max,
            command_timeout=self.redis_command_timeout_s,
            connect_timeout=self.redis_connect_timeout_s,
        )

    def metrics_options(self) -> MetricsOptions:
        dsn = self.metrics_dsn or self.postgres_dsn
        return MetricsOptions(
            dsn=dsn.get_secret_value(),
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

    def session_options(self) -> SessionOptions:
        return SessionOptions(
            touch_interval=self.session_touch_interval_s,
            fallback_retry=self.session_fallback_retry_s,
            lifetime=self.session_lifetime_s,
        )
