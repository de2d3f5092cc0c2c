"""Entity-cache invalidation across replicas: how long after a change the other
replica's memory level has dropped its copy.

    python -m bench.invalidation [--samples N] [--profile bench|test|dev]

Two entity caches, each with its own PostgreSQL listener connection and memory, as
two gateways have, share Redis and a database of their own
(`polygraph_bench_invalidation`, recreated). Each sample puts one agent in both
caches, updates it with plain SQL on a third connection, and times from sending the
UPDATE to the second cache dropping its copy (so the commit's own round trip is
included: an upper bound). Results go to bench/results/invalidation.{json,md};
the target is a p99 within 100 ms. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson

from bench.report import RESULTS_DIR
from gateway.settings import Settings
from infra.local import stack
from infra.local.profiles import Profile, get_profile
from stores import PostgresStore, RedisStore
from stores.cache import CacheOptions, EntityCache
from stores.postgres.inputs import AgentInput
from stores.postgres.records import WriteContext

DATABASE = "polygraph_bench_invalidation"
TARGET_P99_MS = 100.0


def run(
    samples: int = 500,
    profile_name: str = "bench",
    results_dir: Path = RESULTS_DIR,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure, write invalidation.{json,md} to results_dir, return the results. Whatever
    part of the stack this had to start is stopped at the end."""
    profile = get_profile(profile_name)
    password = Settings().neo4j_password.get_secret_value()
    with stack.running(profile, neo4j_password=password, say=say):
        results = asyncio.run(_measure(profile, samples, say))
    results["command"] = (
        f"python -m bench.invalidation --samples={samples} --profile={profile_name}"
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "invalidation.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2)
    )
    (results_dir / "invalidation.md").write_text(markdown(results))
    return results


async def _measure(profile: Profile, samples: int, say: Callable[[str], None]) -> dict[str, Any]:
    admin = await asyncpg.connect(profile.postgres_dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    settings = Settings(
        profile="dev",
        postgres_dsn=profile.postgres_dsn(DATABASE),
        redis_url=profile.redis_url(0),
    )
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        RedisStore(settings.redis_options()) as redis,
    ):
        await postgres.migrate()
        ctx = WriteContext(actor_id=None, request_id="bench-invalidation")
        agent_ids = [
            (await postgres.agents.create(ctx, AgentInput(name=f"cached-{uuid4()}"))).id
            for _ in range(min(samples, 100))
        ]
        first = EntityCache(postgres, redis, CacheOptions())
        second = EntityCache(postgres, redis, CacheOptions())
        await first.start()
        await second.start()
        dropped: dict[UUID, asyncio.Future[float]] = {}

        def on_dropped(kind: str, ids: list[UUID] | None) -> None:
            for entity_id in ids or []:
                waiter = dropped.get(entity_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(time.perf_counter())

        second.on_dropped = on_dropped
        latencies_ms: list[float] = []
        try:
            say(f"invalidation: {samples} changes, two caches")
            loop = asyncio.get_running_loop()
            for sample in range(samples):
                agent_id = agent_ids[sample % len(agent_ids)]
                for cache in (first, second):
                    assert agent_id in await cache.agents.by_ids([agent_id])
                dropped[agent_id] = loop.create_future()
                async with postgres.connection() as conn:
                    sent = time.perf_counter()
                    await conn.execute(
                        "UPDATE agents SET notes = $2 WHERE id = $1", agent_id, str(sample)
                    )
                arrived = await asyncio.wait_for(dropped[agent_id], 30)
                del dropped[agent_id]
                latencies_ms.append((arrived - sent) * 1000)
        finally:
            await first.aclose()
            await second.aclose()
    return summary(latencies_ms)


def summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies_ms)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(quantile(0.95), 3),
        "p99_ms": round(quantile(0.99), 3),
        "max_ms": round(ordered[-1], 3),
        "target_p99_ms": TARGET_P99_MS,
        "met": quantile(0.99) <= TARGET_P99_MS,
    }


def markdown(results: dict[str, Any]) -> str:
    verdict = "met" if results["met"] else "**missed**"
    return (
        "# Polygraph benchmark: entity-cache invalidation\n\n"
        f"Run {results['measured_at']} with `{results.get('command', '')}`.\n\n"
        "Two entity caches with their own PostgreSQL listener and memory (as two gateways"
        " have) hold an agent; plain SQL updates it; timed from sending the UPDATE to the"
        " second cache dropping its copy.\n\n"
        "| samples | p50 ms | p95 ms | p99 ms | max ms | target |\n"
        "|---:|---:|---:|---:|---:|---|\n"
        f"| {results['samples']} | {results['p50_ms']:.2f} | {results['p95_ms']:.2f}"
        f" | {results['p99_ms']:.2f} | {results['max_ms']:.2f}"
        f" | p99 within {results['target_p99_ms']:g} ms: {verdict} |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.invalidation", description=__doc__)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--profile", default="bench", choices=["bench", "test", "dev"])
    args = parser.parse_args(argv)
    results = run(args.samples, args.profile)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
