"""Settings, read once from `POLYGRAPH_*` environment variables and `.env`.

Nothing else in the project reads the environment: `create_app` and the CLI
build a `Settings` and pass the pieces each component needs into its constructor.
Defaults point at the local `dev` stack, so nothing needs setting to try it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stores.graph import GraphOptions
from stores.postgres import PostgresOptions
from stores.redis import RedisOptions
from stores.redis.sessions import SessionOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="POLYGRAPH_", env_file=".env", extra="ignore", frozen=True
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    graphiql: bool = True
    # Several gateways may start at once: migrations take an advisory lock.
    migrate_on_start: bool = True

    # Which local stack `polygraph stack` and `make run` manage.
    profile: Literal["dev", "test"] = "dev"

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

    # Health probes never wait longer than this for one store.
    health_probe_timeout_s: float = Field(default=2.0, gt=0)

    # Sessions (Redis, or this process's memory while Redis is away)
    session_ttl_s: int = Field(default=3600, ge=60, le=30 * 86_400)
    # A session's expiry slides forward on use, at most once per interval.
    session_touch_interval_s: float = Field(default=5.0, ge=0)
    session_fallback_retry_s: float = Field(default=1.0, gt=0)

    # Subscriptions: events a subscriber may fall behind by before its oldest are dropped.
    event_queue_size: int = Field(default=256, ge=1)

    def postgres_options(self) -> PostgresOptions:
        return PostgresOptions(
            dsn=self.postgres_dsn.get_secret_value(),
            min_size=self.postgres_pool_min,
            max_size=self.postgres_pool_max,
            statement_timeout=self.postgres_statement_timeout_s,
            acquire_timeout=self.postgres_acquire_timeout_s,
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

    def session_options(self) -> SessionOptions:
        return SessionOptions(
            touch_interval=self.session_touch_interval_s,
            fallback_retry=self.session_fallback_retry_s,
        )
