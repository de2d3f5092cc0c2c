"""C1: claims per second, 20 claimers taking ready tasks from one queue.

Every claim takes a task out of the queue, so each measured run gets a queue of its
own: a fresh repository filled with ready tasks, more than the run can claim. The
figure is tasks claimed (counted in PostgreSQL) per second of the measured window,
not responses: a claimer that found the queue empty would answer fast and claim
nothing. The claimers share one agent's session (an agent-role user granted the
agent, in a session bound to it), as the worker processes of one agent would; the
floor checks the same session and grant and runs the same claim statement
(`stores.postgres.task_claims.claim_statement`).

Tasks left unclaimed are deleted after each run (they never reached the outbox, so
Neo4j never saw them); claimed ones, and the claimer, stay until the next run starts
on the dataset (`bench.dataset`), which removes them with S5's created tasks.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from gateway.settings import Settings
from stores import PostgresStore, RedisStore
from stores.postgres.inputs import AgentInput
from stores.postgres.records import WriteContext
from stores.redis.sessions import SessionStore

CLAIMERS = 20
C1_MUTATION = (
    "mutation C1($input: ClaimNextTaskInput!) { claimNextTask(input: $input) {"
    " task { id title status priority } fencingToken userErrors { field message code } } }"
)
# Longer than any run: no lease lapses while the bench measures.
LEASE_S = 3600
# Claims per second no server here reaches: the queue outlasts the run.
_CEILING_PER_S = 3000


def queue_size(seconds: float) -> int:
    return max(1000, round(_CEILING_PER_S * seconds))


def bodies(repository: str) -> list[dict[str, Any]]:
    return [
        {
            "query": C1_MUTATION,
            "variables": {"input": {"repository": repository, "leaseSeconds": LEASE_S}},
        }
    ]


def repository(label: str) -> str:
    return f"bench/claims-{label}-{secrets.token_hex(4)}"


async def claimer(settings: Settings, *, ttl_s: int = 6 * 3600) -> str:
    """A new agent, an agent-role user granted it, and a session bound to it: the token."""
    async with PostgresStore(settings.postgres_options()) as postgres:
        ctx = WriteContext(actor_id=None, request_id="bench-claims")
        agent = await postgres.agents.create(
            ctx, AgentInput(name=f"bench-claimer-{secrets.token_hex(4)}", role="worker")
        )
        user = await postgres.users.create_user(
            email=f"bench-claimer-{secrets.token_hex(6)}@polygraph.local",
            display_name="Benchmark claimer",
            role="agent",
        )
        await postgres.agent_grants.grant(ctx, user.id, agent.id)
    async with RedisStore(settings.redis_options()) as redis:
        sessions = SessionStore(redis, settings.session_options())
        _, token = await sessions.create(
            user_id=user.id, role="agent", agent_id=agent.id, ttl_s=ttl_s
        )
    return token


async def fill(settings: Settings, repository: str, count: int) -> None:
    """`count` ready tasks in `repository`, priorities 1 to 10. Not waiting for an
    embedding: fixtures, like the dataset's rows; pending, they would be embedded
    between scenarios (`Bench._settle_embeddings`) for nothing."""
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await conn.execute(
            "INSERT INTO tasks (title, repository, priority, embedding_pending)"
            " SELECT 'Claimable ' || n, $1, 1 + n % 10, false FROM generate_series(1, $2) AS n",
            repository,
            count,
        )
        await conn.execute("ANALYZE tasks")
    finally:
        await conn.close()


async def claimed(settings: Settings, repository: str) -> int:
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE repository = $1 AND fencing_token > 0", repository
        )
    finally:
        await conn.close()
    return found


async def drop_unclaimed(settings: Settings, repository: str) -> None:
    """Claims the server received before the load stopped may still be committing: a
    claim and this delete can lock the same rows in opposite orders, so a deadlock
    (PostgreSQL cancels one of the two) is retried."""
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        for attempt in range(5):
            try:
                await conn.execute(
                    "DELETE FROM tasks WHERE repository = $1 AND fencing_token = 0", repository
                )
                return
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
    finally:
        await conn.close()
