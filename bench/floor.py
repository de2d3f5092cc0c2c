"""The floor: one hand-written Starlette endpoint per scenario, no GraphQL.

Each endpoint does the fetches its scenario needs with the gateway's drivers
(asyncpg, the neo4j driver, redis.asyncio) as directly as it can: one batched,
prepared statement per list, independent fetches at once, orjson out. It returns
the JSON the gateway returns for the same request body (the harness checks), so
gateway/floor ratios measure what the GraphQL layer costs.

Run: `python -m bench.floor --port P --postgres-dsn D --neo4j-uri U --redis-url R`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import neo4j
import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bench.floor_ws import FanOut
from bench.ids import global_id, iso
from gateway.runtime import tune_gc
from stores.graph.queries import COLLABORATORS
from stores.metrics.buckets import HOUR, ORIGIN
from stores.metrics.records import Aggregate, Source
from stores.metrics.sql import NATIVE
from stores.metrics.sql.common import CREATE_STAGING, STAGING_COLUMNS
from stores.postgres.records import WriteContext
from stores.postgres.task_claims import CLAIMER_CAPABILITIES, claim_statement
from stores.redis.presence import LAST_KEY, REPORT_SCRIPT, SEEN_KEY, agent_key

MEDIA_TYPE = "application/graphql-response+json"
SESSION_KEY = "{sessions}session:"
USER_INDEX = "{sessions}user:"

# Every statement takes its values as parameters.
AGENT_BY_ID = "SELECT id, name, role, status, created_at FROM agents WHERE id = $1"
AGENT_PAGE = "SELECT id, name, status FROM agents ORDER BY created_at DESC, id DESC LIMIT $1"
AGENT_NAMES = "SELECT id, name FROM agents WHERE id = ANY($1::uuid[])"
TASKS_OF_AGENTS = (
    "SELECT a.id AS agent_id, t.id, t.title, t.status, t.priority"
    " FROM unnest($1::uuid[]) AS a(id) CROSS JOIN LATERAL ("
    "  SELECT id, title, status, priority FROM tasks WHERE assignee_id = a.id"
    "  ORDER BY created_at DESC, id DESC LIMIT $2) AS t"
)
TASK_BY_ID = "SELECT id, title, status FROM tasks WHERE id = $1"
# Not waiting for an embedding: the floor embeds nothing in the background; pending,
# its rows would be embedded between scenarios on its behalf.
INSERT_TASK = (
    "WITH t AS (INSERT INTO tasks (id, title, repository, priority, status, creator_id,"
    " embedding_pending) VALUES ($1, $2, $3, $4, 'pending', $5, false)"
    " RETURNING id, title, status, priority, repository, assignee_id, workflow_id, version,"
    " updated_at, to_jsonb(tasks.*) AS doc),"
    " e AS (INSERT INTO task_events (task_id, version, type, data, actor_id, created_at)"
    " SELECT id, version, 'created', doc - 'id' - 'created_at' - 'updated_at' - 'version',"
    " $5, updated_at FROM t),"
    " a AS (INSERT INTO audit_log (actor_id, action, resource_type, resource_id, new_value)"
    " SELECT $5, 'create', 'task', id::text, doc FROM t),"
    " o AS (INSERT INTO outbox (kind, payload) SELECT 'task.upserted', jsonb_build_object("
    " 'id', id, 'title', title, 'status', status, 'priority', priority,"
    " 'assignee_id', assignee_id, 'workflow_id', workflow_id) FROM t)"
    " SELECT t.id, t.title, t.status, t.priority, t.version, t.updated_at,"
    " pg_notify('polygraph_outbox', '') FROM t"
)

# P1 and P2 (bench/presence.py).
GRANT_HELD = "SELECT EXISTS (SELECT FROM agent_grants WHERE user_id = $1 AND agent_id = $2)"
OLDEST_AGENT_PAGE = "SELECT id, name FROM agents ORDER BY created_at, id LIMIT $1"

HOURLY_AVG = NATIVE.series[(Source.HOUR, Aggregate.AVG)]
KNOWN_AGENTS = "SELECT id FROM agents WHERE id = ANY($1::uuid[])"
KNOWN_METRICS = "SELECT name FROM metric_names WHERE name = ANY($1::text[])"
# The gateway's events carry at most this many points each (resolvers.metrics).
EVENT_POINTS = 500
BY_MINUTE_AVG = NATIVE.series[(Source.MINUTE, Aggregate.AVG)]
FIVE_MINUTES = timedelta(minutes=5)

NEIGHBOURHOOD = """
    MATCH (s:Agent {id: $id})
    OPTIONAL MATCH p = ANY SHORTEST (s)-[:COLLABORATES_WITH|DELEGATES_TO|PARENT_OF]-{1,2}(n:Agent)
    WHERE n <> s
    WITH s, n, length(p) AS distance
    ORDER BY distance, n.id
    LIMIT $limit
    WITH s, [x IN collect({node: n, distance: distance}) WHERE x.node IS NOT NULL] AS found
    WITH [{node: s, distance: 0}] + found AS hood
    WITH hood, [h IN hood | h.node] AS members
    CALL (members) {
        UNWIND members AS a
        MATCH (a)-[r:COLLABORATES_WITH|DELEGATES_TO|PARENT_OF]->(b:Agent)
        WHERE b IN members
        WITH a.id AS source, b.id AS target, type(r) AS type
        ORDER BY source, target, type
        RETURN collect([source, target, type]) AS edges
    }
    RETURN [[h IN hood | [h.node.id, h.distance]], edges] AS found
"""


# PostgreSQL connections the floor reads through; the bench gives the gateway's metrics
# pool as many (bench/harness.py), so S4 compares equal resources.
POOL_SIZE = 10


@dataclass(frozen=True)
class FloorConfig:
    postgres_dsn: str
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str
    redis_url: str
    events_channel: str
    metrics_channel: str = "polygraph:metric.recorded"
    presence_channel: str = "polygraph:presence.changed"
    presence_offline_after_ms: int = 30_000
    pool_size: int = POOL_SIZE


class Unauthenticated(Exception):
    pass


@dataclass
class Principal:
    user_id: str
    role: str
    # The agent a session is bound to, if any.
    agent_id: str | None = None


class Floor:
    """The stores, opened once by the lifespan, and one method per scenario."""

    def __init__(self, config: FloorConfig) -> None:
        self.config = config
        self._pool: asyncpg.Pool | None = None
        self._driver: neo4j.AsyncDriver | None = None
        self._redis: aioredis.Redis | None = None
        self.fanout: FanOut | None = None
        self._report_sha = ""

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "floor not started"
        return self._pool

    @property
    def driver(self) -> neo4j.AsyncDriver:
        assert self._driver is not None, "floor not started"
        return self._driver

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "floor not started"
        return self._redis

    async def open(self) -> None:
        async def keep_session(conn: asyncpg.Connection) -> None:
            return None

        self._pool = await asyncpg.create_pool(
            self.config.postgres_dsn,
            min_size=self.config.pool_size,
            max_size=self.config.pool_size,
            reset=keep_session,
            # The metric tables live in their own schema (POLYGRAPH_METRICS_SCHEMA).
            server_settings={"search_path": "public,metrics"},
            init=_create_staging,
        )
        self._driver = neo4j.AsyncGraphDatabase.driver(
            self.config.neo4j_uri,
            auth=(self.config.neo4j_user, self.config.neo4j_password),
            max_connection_pool_size=20,
        )
        # Blocking: a burst of WebSocket sign-ins waits for a connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(self.config.redis_url, max_connections=50)
        self._redis = aioredis.Redis(connection_pool=pool)
        self.fanout = FanOut(self.redis, self.config.events_channel, self._task_event)
        await self.fanout.start()
        self._report_sha = await self.redis.script_load(REPORT_SCRIPT)

    async def aclose(self) -> None:
        if self.fanout is not None:
            await self.fanout.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self._driver is not None:
            await self._driver.close()
        if self._pool is not None:
            await self._pool.close()

    async def principal(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated
        key = SESSION_KEY + hashlib.sha256(token.strip().encode()).hexdigest()
        member = await self.redis.hget(key, "member")
        if member is None:
            raise Unauthenticated
        fields = orjson.loads(member)
        return Principal(fields["user"], fields["role"], fields.get("agent"))

    async def cypher(self, text: str, **params: Any) -> Any:
        """The one value a query returns (every row collected into it): one Bolt record
        is far cheaper to receive than one per row."""
        async with self.driver.session(default_access_mode=neo4j.READ_ACCESS) as session:
            result = await session.run(text, params)
            record = await result.single(strict=False)
            return record[0] if record is not None else None

    async def s1(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        agent_id = _uuid_of(variables["id"], "Agent")
        row = await self.pool.fetchrow(AGENT_BY_ID, agent_id)
        node = None
        if row is not None:
            node = {
                "id": global_id("Agent", row["id"]),
                "name": row["name"],
                "role": row["role"],
                "status": row["status"].upper(),
                "createdAt": iso(row["created_at"]),
            }
        return {"data": {"node": node}}

    async def s2(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        agents = await self.pool.fetch(AGENT_PAGE, 50)
        ids = [row["id"] for row in agents]
        summary = "metricsFrom" in variables
        task_rows, links, metric_rows = await asyncio.gather(
            self.pool.fetch(TASKS_OF_AGENTS, ids, 10),
            # `Agent.collaborators`' default `first`.
            self.cypher(COLLABORATORS, ids=[str(i) for i in ids], first=10),
            self._hourly_energy(ids, variables) if summary else _no_rows(),
        )
        points: dict[UUID, list[dict[str, Any]]] = {i: [] for i in ids}
        for row in metric_rows:
            points[row["agent_id"]].append({"time": iso(row["slot"]), "value": row["value"]})
        others = list({UUID(link[1]) for link in links})
        names = {row["id"]: row["name"] for row in await self.pool.fetch(AGENT_NAMES, others)}
        tasks: dict[UUID, list[dict[str, Any]]] = {i: [] for i in ids}
        for row in task_rows:
            tasks[row["agent_id"]].append(
                {
                    "node": {
                        "id": global_id("Task", row["id"]),
                        "title": row["title"],
                        "status": row["status"].upper(),
                        "priority": row["priority"],
                    }
                }
            )
        collaborators: dict[str, list[dict[str, Any]]] = {str(i): [] for i in ids}
        for agent_id, other_id, link_type, weight in links:
            other = UUID(other_id)
            name = names.get(other)
            collaborators[agent_id].append(
                {
                    "type": link_type,
                    "weight": float(weight),
                    "agent": None
                    if name is None
                    else {"id": global_id("Agent", other), "name": name},
                }
            )
        edges = [
            {
                "node": {
                    "id": global_id("Agent", row["id"]),
                    "name": row["name"],
                    "status": row["status"].upper(),
                    "tasks": {"edges": tasks[row["id"]]},
                    "collaborators": collaborators[str(row["id"])],
                }
                | ({"metrics": {"points": points[row["id"]]}} if summary else {})
            }
            for row in agents
        ]
        return {"data": {"agents": {"edges": edges}}}

    async def s2_pg(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        agents = await self.pool.fetch(AGENT_PAGE, 50)
        task_rows = await self.pool.fetch(TASKS_OF_AGENTS, [row["id"] for row in agents], 10)
        tasks: dict[UUID, list[dict[str, Any]]] = {row["id"]: [] for row in agents}
        for row in task_rows:
            tasks[row["agent_id"]].append(
                {
                    "node": {
                        "id": global_id("Task", row["id"]),
                        "title": row["title"],
                        "status": row["status"].upper(),
                        "priority": row["priority"],
                    }
                }
            )
        edges = [
            {
                "node": {
                    "id": global_id("Agent", row["id"]),
                    "name": row["name"],
                    "status": row["status"].upper(),
                    "tasks": {"edges": tasks[row["id"]]},
                }
            }
            for row in agents
        ]
        return {"data": {"agents": {"edges": edges}}}

    async def _hourly_energy(
        self, ids: list[UUID], variables: dict[str, Any]
    ) -> list[asyncpg.Record]:
        """S2's one-hour summary: the hourly rollup, through the metrics store's own SQL."""
        start = datetime.fromisoformat(variables["metricsFrom"])
        end = datetime.fromisoformat(variables["metricsTo"])
        return await self.pool.fetch(HOURLY_AVG, ids, ["energy"], start, end, HOUR, ORIGIN)

    async def s3(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        agent_id = _uuid_of(variables["id"], "Agent")
        found = await self.cypher(NEIGHBOURHOOD, id=str(agent_id), limit=1000)
        if not found:
            return {"data": {"agentNeighbourhood": {"nodes": [], "edges": []}}}
        members, links = found
        names = {
            str(row["id"]): row["name"]
            for row in await self.pool.fetch(AGENT_NAMES, [UUID(m[0]) for m in members])
        }

        def agent(node_id: str, *, with_name: bool) -> dict[str, Any] | None:
            if node_id not in names:
                return None
            ref = {"id": global_id("Agent", node_id)}
            if with_name:
                ref["name"] = names[node_id]
            return ref

        nodes = [
            {"distance": distance, "agent": agent(node_id, with_name=True)}
            for node_id, distance in members
        ]
        edges = [
            {
                "type": edge_type,
                "source": agent(source, with_name=False),
                "target": agent(target, with_name=False),
            }
            for source, target, edge_type in links
        ]
        return {"data": {"agentNeighbourhood": {"nodes": nodes, "edges": edges}}}

    async def s4(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        """One day of `energy` for 20 agents in 5-minute buckets, from the 1-minute rollup."""
        agents = list(dict.fromkeys(_uuid_of(value, "Agent") for value in variables["agents"]))
        start = datetime.fromisoformat(variables["from"])
        end = datetime.fromisoformat(variables["to"])
        rows = await self.pool.fetch(
            BY_MINUTE_AVG, agents, ["energy"], start, end, FIVE_MINUTES, ORIGIN
        )
        points: dict[UUID, list[dict[str, Any]]] = {agent: [] for agent in agents}
        for row in rows:
            points[row["agent_id"]].append({"time": iso(row["slot"]), "value": row["value"]})
        series = [
            {"agentId": global_id("Agent", agent), "name": "energy", "points": points[agent]}
            for agent in agents
        ]
        return {"data": {"metricSeries": series}}

    async def s7(self, body: bytes, who: Principal) -> dict[str, Any]:
        """NDJSON points: the agents and names checked in one query each, then COPY into
        the staging table and the metrics store's own insert (rollups folded in), and the
        points published for `metricRecorded`."""
        if who.role not in ("agent", "operator", "admin"):
            return _forbidden()
        lines = [orjson.loads(line) for line in body.splitlines() if line.strip()]
        agents = {UUID(line["agent_id"]) for line in lines}
        known_agents, known_names = await asyncio.gather(
            self.pool.fetch(KNOWN_AGENTS, list(agents)),
            self.pool.fetch(KNOWN_METRICS, list({line["name"] for line in lines})),
        )
        agent_ids = {row["id"] for row in known_agents}
        names = {row["name"] for row in known_names}
        rows, rejections = [], []
        for number, line in enumerate(lines, start=1):
            agent_id = UUID(line["agent_id"])
            if agent_id not in agent_ids:
                rejections.append({"line": number, "field": "agentId", "reason": "no such agent"})
            elif line["name"] not in names:
                rejections.append({"line": number, "field": "name", "reason": "unknown metric"})
            else:
                labels = orjson.dumps(line.get("labels") or {}).decode()
                time = datetime.fromisoformat(line["time"])
                rows.append((time, agent_id, line["name"], float(line["value"]), labels))
        inserted = 0
        if rows:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(
                    "metric_staging", records=rows, columns=STAGING_COLUMNS
                )
                inserted = await conn.fetchval(NATIVE.insert_from_staging)
            for start in range(0, len(rows), EVENT_POINTS):
                points = [
                    {
                        "agent_id": str(agent_id),
                        "name": name,
                        "time": time.isoformat(),
                        "value": value,
                        "labels": orjson.loads(labels),
                    }
                    for time, agent_id, name, value, labels in rows[start : start + EVENT_POINTS]
                ]
                await self.redis.publish(
                    self.config.metrics_channel, orjson.dumps({"points": points})
                )
        return {
            "accepted": inserted,
            "duplicates": len(rows) - inserted,
            "rejected": len(rejections),
            "rejections": rejections,
            "rejectionsTruncated": False,
        }

    async def s5(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        data = variables["input"]
        if who.role not in ("operator", "admin"):
            return _forbidden()
        row = await self.pool.fetchrow(
            INSERT_TASK,
            _new_uuid(),
            data["title"],
            data.get("repository"),
            data.get("priority", 5),
            UUID(who.user_id),
        )
        assert row is not None
        event = {
            "task_id": str(row["id"]),
            "status": row["status"],
            "assignee_id": None,
            "change": "created",
            "version": row["version"],
            "at": iso(row["updated_at"]),
        }
        await self.redis.publish(self.config.events_channel, orjson.dumps(event))
        task = {
            "id": global_id("Task", row["id"]),
            "title": row["title"],
            "status": row["status"].upper(),
            "priority": row["priority"],
        }
        return {"data": {"createTask": {"task": task, "userErrors": []}}}

    async def c1(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        """claimNextTask: the gateway's own statements (the session's agent, its grant and
        capabilities in one; then the claim), then the task.updated event."""
        if who.agent_id is None:
            return _forbidden()
        given = variables["input"]
        user_id, agent_id = UUID(who.user_id), UUID(who.agent_id)
        async with self.pool.acquire() as conn:
            capabilities = await conn.fetchval(CLAIMER_CAPABILITIES, user_id, agent_id)
            if capabilities is None:
                return _forbidden()
            sql, values = claim_statement(
                WriteContext(actor_id=user_id, request_id=_new_uuid().hex),
                agent_id,
                capabilities=capabilities,
                repository=given.get("repository"),
                lease_s=given["leaseSeconds"],
            )
            # This pool has no jsonb codec: JSON values go as text.
            row = await conn.fetchrow(
                sql, *(orjson.dumps(v).decode() if isinstance(v, dict) else v for v in values)
            )
        if row is None:
            empty: dict[str, Any] = {"task": None, "fencingToken": None, "userErrors": []}
            return {"data": {"claimNextTask": empty}}
        event = {
            "task_id": str(row["id"]),
            "status": row["status"],
            "assignee_id": str(row["assignee_id"]),
            "change": "claimed",
            "version": row["version"],
            "at": iso(row["updated_at"]),
        }
        await self.redis.publish(self.config.events_channel, orjson.dumps(event))
        task = {
            "id": global_id("Task", row["id"]),
            "title": row["title"],
            "status": row["status"].upper(),
            "priority": row["priority"],
        }
        claim = {"task": task, "fencingToken": row["fencing_token"], "userErrors": []}
        return {"data": {"claimNextTask": claim}}

    async def p1(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        """reportPresence: the grant of the session's agent, then the store's own Lua
        script (one round trip), then an event only on a transition."""
        if who.agent_id is None:
            return _forbidden()
        user_id, agent_id = UUID(who.user_id), UUID(who.agent_id)
        if not await self.pool.fetchval(GRANT_HELD, user_id, agent_id):
            return _forbidden()
        given = variables["input"]
        activity, load = given["activity"], float(given.get("load", 0.0))
        details = orjson.dumps(given.get("details") or {})
        transition, now_ms, _, _ = await self.redis.evalsha(
            self._report_sha,
            3,
            agent_key(agent_id),
            SEEN_KEY,
            LAST_KEY,
            str(agent_id),
            activity,
            repr(load),
            details,
            self.config.presence_offline_after_ms,
        )
        seen = _iso_ms(int(now_ms))
        if transition:
            event = {"agent_id": str(agent_id), "change": transition.decode(), "at": seen}
            await self.redis.publish(self.config.presence_channel, orjson.dumps(event))
        presence = {"online": True, "lastSeenAt": seen, "activity": activity, "load": load}
        return {"data": {"reportPresence": {"presence": presence, "userErrors": []}}}

    async def p2(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        """50 agents, oldest first, and the presence of each: one pipeline for the page."""
        rows = await self.pool.fetch(OLDEST_AGENT_PAGE, 50)
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.hmget(agent_key(row["id"]), "activity", "load", "seen")
            pipe.hmget(LAST_KEY, *(str(row["id"]) for row in rows))
            *live, last = await pipe.execute()
        edges = []
        for row, (activity, load, seen), last_ms in zip(rows, live, last, strict=True):
            if seen is not None:
                presence = {
                    "online": True,
                    "lastSeenAt": _iso_ms(int(seen)),
                    "activity": activity.decode(),
                    "load": float(load),
                }
            else:
                presence = {
                    "online": False,
                    "lastSeenAt": _iso_ms(int(last_ms)) if last_ms else None,
                    "activity": None,
                    "load": None,
                }
            edges.append({"node": {"name": row["name"], "presence": presence}})
        return {"data": {"agents": {"edges": edges}}}

    async def s6(self, variables: dict[str, Any], who: Principal) -> dict[str, Any]:
        now_ms = _now_ms()
        index = USER_INDEX + who.user_id
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index, "-inf", f"({now_ms}")
            pipe.zrange(index, now_ms, "+inf", byscore=True)
            _, members = await pipe.execute()
        found = sorted((orjson.loads(m) for m in members), key=lambda f: (f["created"], f["id"]))
        sessions = [
            {"id": f["id"], "role": f["role"].upper(), "createdAt": _iso_ms(f["created"])}
            for f in found
        ]
        return {"data": {"mySessions": sessions}}

    async def _task_event(self, event: dict[str, Any]) -> bytes | None:
        row = await self.pool.fetchrow(TASK_BY_ID, UUID(event["task_id"]))
        if row is None:
            return None
        update = {
            "change": event["change"],
            "at": event["at"],
            "task": {
                "id": global_id("Task", row["id"]),
                "title": row["title"],
                "status": row["status"].upper(),
            },
        }
        return orjson.dumps({"data": {"taskUpdated": update}})


Handler = Callable[[dict[str, Any], Principal], Awaitable[dict[str, Any]]]


def _endpoint(floor: Floor, handler_name: str, round_trips: str) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        handler: Handler = getattr(floor, handler_name)
        try:
            who = await floor.principal(request.headers.get("authorization"))
        except Unauthenticated:
            return Response(
                orjson.dumps({"errors": [{"message": "Sign in first."}]}),
                401,
                media_type=MEDIA_TYPE,
            )
        body = orjson.loads(await request.body())
        result = await handler(body.get("variables") or {}, who)
        return Response(
            orjson.dumps(result), media_type=MEDIA_TYPE, headers={"x-round-trips": round_trips}
        )

    return endpoint


# What each endpoint costs, counted by hand: the same format as the gateway's header.
ROUND_TRIPS = {
    "S1": "postgres=1, redis=1",
    "S2": "neo4j=1, postgres=4, redis=1",
    "S2-pg": "postgres=2, redis=1",
    "S3": "neo4j=1, postgres=1, redis=1",
    "S4": "postgres=1, redis=1",
    "S5": "postgres=1, redis=2",
    "S6": "redis=2",
    "C1": "postgres=2, redis=2",
    "P1": "postgres=1, redis=2",
    "P2": "postgres=1, redis=2",
}


def _ingest_endpoint(floor: Floor) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        try:
            who = await floor.principal(request.headers.get("authorization"))
        except Unauthenticated:
            return Response(orjson.dumps({"errors": [{"message": "Sign in first."}]}), 401)
        result = await floor.s7(await request.body(), who)
        return Response(
            orjson.dumps(result),
            media_type="application/json",
            headers={"x-round-trips": "postgres=6, redis=2"},
        )

    return endpoint


def create_floor(config: FloorConfig) -> Starlette:
    floor = Floor(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await floor.open()
        try:
            yield
        finally:
            await floor.aclose()

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def fan_out(websocket: WebSocket) -> None:
        assert floor.fanout is not None
        with contextlib.suppress(WebSocketDisconnect):
            await floor.fanout.serve(websocket, floor.principal)

    routes: list[Route | WebSocketRoute] = [Route("/health", health)]
    routes += [
        Route(
            f"/floor/{name}",
            _endpoint(floor, name.lower().replace("-", "_"), trips),
            methods=["POST"],
        )
        for name, trips in ROUND_TRIPS.items()
    ]
    routes.append(Route("/floor/S7", _ingest_endpoint(floor), methods=["POST"]))
    routes.append(WebSocketRoute("/floor/S8", fan_out))
    # As the gateway does: a client gone mid-body (wrk at the end of a window) is no error.
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={ClientDisconnect: _client_gone}
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)


def _uuid_of(value: str, type_name: str) -> UUID:
    import base64

    decoded = base64.b64decode(value).decode()
    prefix, _, node_id = decoded.partition(":")
    if prefix != type_name:
        raise ValueError(f"not a {type_name} id: {value}")
    return UUID(node_id)


async def _create_staging(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_STAGING)


async def _no_rows() -> list[asyncpg.Record]:
    return []


def _forbidden() -> dict[str, Any]:
    return {"data": None, "errors": [{"message": "forbidden"}]}


def _new_uuid() -> UUID:
    import uuid

    return uuid.uuid4()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _iso_ms(ms: int) -> str | None:
    from datetime import UTC, datetime

    return iso(datetime.fromtimestamp(ms / 1000, tz=UTC))


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--postgres-dsn", required=True)
    parser.add_argument("--neo4j-uri", required=True)
    parser.add_argument("--neo4j-user", default="neo4j")
    parser.add_argument("--neo4j-password", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--events-channel", required=True)
    parser.add_argument("--metrics-channel", default="polygraph:metric.recorded")
    parser.add_argument("--presence-channel", default="polygraph:presence.changed")
    parser.add_argument("--presence-offline-after-ms", type=int, default=30_000)
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE)
    args = parser.parse_args(argv)
    config = FloorConfig(
        postgres_dsn=args.postgres_dsn,
        neo4j_uri=args.neo4j_uri,
        neo4j_user=args.neo4j_user,
        neo4j_password=args.neo4j_password,
        redis_url=args.redis_url,
        events_channel=args.events_channel,
        metrics_channel=args.metrics_channel,
        presence_channel=args.presence_channel,
        presence_offline_after_ms=args.presence_offline_after_ms,
        pool_size=args.pool_size,
    )
    app = create_floor(config)
    # The gateway's process settings, so the comparison is of the code, not the collector.
    tune_gc()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        lifespan="on",
        # As the gateway serves by default (POLYGRAPH_WS_COMPRESSION).
        ws_per_message_deflate=False,
    )


if __name__ == "__main__":
    main()
