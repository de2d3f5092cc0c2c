"""P1 and P2: agents' presence (issue 15).

P1: 1,000 simulated agents send `reportPresence` heartbeats at full speed, each
request from the session bound to its agent (wrk pairs every body with its own
Authorization header). The figure is heartbeats accepted per second. The agents
are one agent-role user granted 1,000 agents, with one session bound to each, as a
fleet of workers signed in for the agents they run would be.

P2: `agents(first: 50)` with every agent's presence, from the operator's session.
The reporting agents are every other one of the oldest 2 * P1_AGENTS (the default
order is oldest first), so P2's page holds agents online and agents never seen, and
the check compares both kinds. The bench's servers keep presence for
`OFFLINE_AFTER_S`, longer than the presence scenarios run, so P2's page stays the
same from the check to the last round.
"""

from __future__ import annotations

import secrets
from typing import Any
from uuid import UUID

import asyncpg

from gateway.settings import Settings
from stores import PostgresStore, RedisStore
from stores.redis.sessions import SessionStore

SCENARIOS = ("P1", "P2")
P1_AGENTS = 1000
OFFLINE_AFTER_S = 600
P1_MUTATION = (
    "mutation P1($input: ReportPresenceInput!) { reportPresence(input: $input) {"
    " presence { online lastSeenAt activity load } userErrors { field message code } } }"
)
P2_QUERY = (
    "query P2 { agents(first: 50) { edges { node {"
    " name presence { online lastSeenAt activity load } } } } }"
)
# The oldest agents first: `agents`' default order (created_at, then id).
OLDEST_AGENTS = "SELECT id FROM agents ORDER BY created_at, id LIMIT $1"


def reporting_agents(oldest: list[UUID]) -> list[UUID]:
    """Every other agent, so that a page of the oldest has both kinds."""
    return oldest[::2]


async def reporters(settings: Settings, count: int = P1_AGENTS) -> list[tuple[UUID, str]]:
    """`count` agents, each with a session bound to it: (agent id, token)."""
    suffix = secrets.token_hex(6)
    async with PostgresStore(settings.postgres_options()) as postgres:
        user = await postgres.users.create_user(
            email=f"bench-presence-{suffix}@polygraph.local",
            display_name="Benchmark presence reporters",
            role="agent",
        )
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        oldest = [row["id"] for row in await conn.fetch(OLDEST_AGENTS, 2 * count)]
        agents = reporting_agents(oldest)
        # One statement for the 1,000 grants (grantAgentAccess audits each one by one).
        await conn.execute(
            "INSERT INTO agent_grants (user_id, agent_id)"
            " SELECT $1, a FROM unnest($2::uuid[]) AS a ON CONFLICT DO NOTHING",
            user.id,
            agents,
        )
    finally:
        await conn.close()
    async with RedisStore(settings.redis_options()) as redis:
        sessions = SessionStore(redis, settings.session_options())
        found = []
        for agent_id in agents:
            _, token = await sessions.create(
                user_id=user.id, role="agent", agent_id=agent_id, ttl_s=6 * 3600
            )
            found.append((agent_id, token))
    return found


def heartbeat(index: int) -> dict[str, Any]:
    """One agent's heartbeat: the same activity every time (a plain heartbeat, no
    transition once the agent is online), a load that varies."""
    return {
        "query": P1_MUTATION,
        "variables": {
            "input": {
                "activity": "benchmarking",
                "load": round((index % 10) / 10, 1),
                "details": {"worker": index},
            }
        },
    }


def heartbeats(reporting: list[tuple[UUID, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """P1's bodies and the Authorization header of each."""
    return (
        [heartbeat(i) for i in range(len(reporting))],
        [f"Bearer {token}" for _, token in reporting],
    )


def page_body() -> dict[str, Any]:
    return {"query": P2_QUERY, "variables": {}}
