"""What every resolver receives: the open stores and the request they serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.responses import Response

from resolvers.cost import OperationCost
from stores import GraphStore, PostgresStore, RedisStore
from stores.cache import EntityCache
from stores.embeddings import Embedder
from stores.metrics import MetricsStore
from stores.postgres.records import WriteContext
from stores.postgres.task_claims import DEFAULT_CLAIM_OPTIONS, ClaimOptions
from stores.redis.events import EventBus
from stores.redis.presence import PresenceStore
from stores.redis.sessions import SessionStore
from stores.search import SearchStore

if TYPE_CHECKING:
    from resolvers.auth import Principal
    from resolvers.documents import PersistedDocuments
    from resolvers.health import HealthMonitor
    from resolvers.loaders import Loaders
    from resolvers.rate_limits import RateLimits
    from resolvers.revocations import Revocations
    from resolvers.session_cache import SessionCache
    from workers.embeddings import EmbeddingFiller
    from workers.event_sinks import EventSinkDelivery
    from workers.presence import PresenceSweeper
    from workers.projector import Projector


@dataclass
class OpenCount:
    """How many of something are open now; shared, so mutable inside frozen `Stores`."""

    open: int = 0


@dataclass(frozen=True)
class Stores:
    """The stores the app lifespan opened; shared by all requests of one process."""

    postgres: PostgresStore
    graph: GraphStore
    redis: RedisStore
    probe_timeout: float = 2.0
    sessions: SessionStore | None = None
    events: EventBus | None = None
    projector: Projector | None = None
    metrics: MetricsStore | None = None
    search: SearchStore | None = None
    embedder: Embedder | None = None
    embedding_filler: EmbeddingFiller | None = None
    rate_limits: RateLimits | None = None
    documents: PersistedDocuments | None = None
    revocations: Revocations | None = None
    # Principals of recently checked session tokens; None: every request checks.
    session_cache: SessionCache | None = None
    # Agents, tasks, workflows and users by id, in two levels; None: read through.
    entity_cache: EntityCache | None = None
    # One health probe shared by every caller per interval; None: each caller probes.
    health: HealthMonitor | None = None
    # Delivers task and agent events to event sinks; None when this process does not.
    event_sinks: EventSinkDelivery | None = None
    # Leases and waits of claimNextTask (resolvers/claims.py).
    claim_options: ClaimOptions = DEFAULT_CLAIM_OPTIONS
    # Agents' live presence in Redis, and the sweep that notices them going offline.
    presence: PresenceStore | None = None
    presence_sweeper: PresenceSweeper | None = None
    # GraphQL subscriptions streaming from this process now (for metrics).
    subscriptions: OpenCount = field(default_factory=lambda: OpenCount())


@dataclass
class RequestContext:
    """Built once per operation (HTTP request or WebSocket subscription)."""

    stores: Stores
    connection: HTTPConnection
    request_id: str
    principal: Principal
    loaders: Loaders
    # Mutations wait this long, at most, for Neo4j to show their writes.
    projection_wait_s: float = 2.0
    session_ttl_s: int = 3600
    # Filled from the graphql-transport-ws `connection_init` payload.
    connection_params: dict[str, object] | None = None
    # Outbox rows this request's writes queued (see `WriteContext.outbox_ids`).
    outbox_ids: list[int] = field(default_factory=list)
    # Resource types its writes audited (see `WriteContext.audited`).
    audited: list[str] = field(default_factory=list)
    # The HTTP response's status and headers, for extensions to set (None on WebSockets).
    response: Response | None = None
    # The operation's static cost, set after validation and before execution.
    cost: OperationCost | None = None

    def write_context(self, idempotency_key: str | None = None) -> WriteContext:
        client = self.connection.client
        return WriteContext(
            actor_id=self.principal.user_id,
            request_id=self.request_id,
            client_address=client.host if client else None,
            idempotency_key=idempotency_key,
            outbox_ids=self.outbox_ids,
            audited=self.audited,
        )
