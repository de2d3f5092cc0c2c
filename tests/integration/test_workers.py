"""`polygraph serve --workers 2`: both workers serve one port, connections opened
together are spread over them, a scrape of either one counts every worker's requests,
a worker that dies is replaced without losing its counts, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx2
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from tests.support.serving import free_port
from tests.support.waiting import until

TOKEN = "scrape-token-for-the-workers-test"
OPERATION = "CountedAcrossWorkers"
QUERY = f"query {OPERATION} {{ agents(first: 1) {{ totalCount }} }}"
WORKERS = 2
POOL_MAX = 3
DEADLINE_S = 8.0
# Beyond the deadline: the time to notice the exit on a loaded machine.
MARGIN_S = 10.0


async def _api_key(settings: Settings) -> str:
    async with PostgresStore(settings.postgres_options()) as postgres:
        await postgres.migrate()
        user = await postgres.users.create_user(
            email=f"{secrets.token_hex(4)}@workers.test", role="viewer"
        )
        _, key = await postgres.users.create_api_key(user.id)
    return key


def _operations_by_worker(directory: Path) -> dict[int, float]:
    """Operations each worker counted, read from its own file."""
    counted: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            _, name, labels, _ = json.loads(key)
            if name == "polygraph_graphql_operations_total" and labels["operation"] == OPERATION:
                counted[pid] = counted.get(pid, 0.0) + value
    return counted


def _live_workers(directory: Path) -> set[int]:
    return {int(path.stem.rpartition("_")[2]) for path in directory.glob("gauge_livesum_*.db")}


@pytest.fixture
async def gateway(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """`polygraph serve --workers 2` on a free port; yields its URL and metrics directory."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    log_path = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
        "POLYGRAPH_POSTGRES_POOL_MIN": "1",
        "POLYGRAPH_POSTGRES_POOL_MAX": str(POOL_MAX),
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
        "POLYGRAPH_EVENTS_NAMESPACE": f"polygraph-workers-{secrets.token_hex(4)}",
        "POLYGRAPH_RATE_LIMIT_ENABLED": "false",
        "POLYGRAPH_PROMETHEUS_TOKEN": TOKEN,
        "POLYGRAPH_SHUTDOWN_TIMEOUT_S": str(DEADLINE_S),
        "POLYGRAPH_LOG_LEVEL": "info",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
            "--workers", str(WORKERS),
            env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient(base_url=base) as http:

            async def both_ready() -> bool:
                if process.returncode is not None:
                    return True
                try:
                    live = (await http.get("/health/live")).status_code == 200
                except httpx2.HTTPError:
                    return False
                return live and len(_live_workers(metrics_dir)) == WORKERS

            await until(both_ready)
        assert process.returncode is None, log_path.read_text()
        yield base, metrics_dir

        # SIGTERM to the supervisor stops every worker within the deadline.
        workers = _live_workers(metrics_dir)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_S + MARGIN_S):
            returncode = await process.wait()
        log = log_path.read_text()
        assert returncode == 0, log
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert log.count("stores closed") >= WORKERS, log
        assert "Traceback" not in log, log
    finally:
        if process.returncode is None:
            process.kill()  # only the process this test started
            await process.wait()


async def test_a_scrape_of_any_worker_counts_every_workers_requests(
    settings: Settings, gateway: tuple[str, Path]
) -> None:
    base, metrics_dir = gateway
    key = await _api_key(settings)
    sent = 0

    async def send_batch() -> None:
        nonlocal sent

        # A connection per request, several at once: the kernel hands them to both workers.
        async def one() -> None:
            async with httpx2.AsyncClient(base_url=base) as http:
                response = await http.post(
                    "/graphql", json={"query": QUERY}, headers={"x-api-key": key}
                )
            assert response.status_code == 200, response.text
            assert "errors" not in response.json(), response.text

        await asyncio.gather(*(one() for _ in range(8)))
        sent += 8

    async def both_served() -> bool:
        await send_batch()
        counted = _operations_by_worker(metrics_dir)
        return len([pid for pid, count in counted.items() if count > 0]) == WORKERS

    await until(both_served)

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        # A fresh connection each time: any worker may answer.
        async with httpx2.AsyncClient(base_url=base) as http:
            response = await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    named = (("operation", OPERATION), ("type", "query"))
    pool_max = (
        "polygraph_store_pool_max_connections",
        (("role", "primary"), ("server", "postgres"), ("store", "postgres")),
    )

    async def both_synced() -> bool:
        # Each worker copies its pool's figures in every STATE_SYNC_S.
        return (await scrape())[pool_max] == WORKERS * POOL_MAX

    await until(both_synced)
    for _ in range(4):
        seen = await scrape()
        assert seen[("polygraph_graphql_operations_total", named)] == sent
        assert seen[("polygraph_graphql_operation_duration_seconds_count", named)] == sent
        # A gauge of live state sums over the workers alive.
        assert seen[pool_max] == WORKERS * POOL_MAX
        assert seen[("polygraph_subscriptions_open", ())] == 0
        # One database, one backlog: read, not summed.
        assert seen[("polygraph_outbox_pending", ())] >= 0

    # A worker that dies is replaced; its counts stay, its live gauges go.
    killed = next(iter(_live_workers(metrics_dir)))
    os.kill(killed, signal.SIGKILL)

    async def replaced() -> bool:
        live = _live_workers(metrics_dir)
        return killed not in live and len(live) == WORKERS

    await until(replaced)

    await until(both_synced)
    seen = await scrape()
    assert seen[("polygraph_graphql_operations_total", named)] == sent


async def test_connections_opened_together_are_spread_over_the_workers(
    settings: Settings, gateway: tuple[str, Path]
) -> None:
    base, metrics_dir = gateway
    key = await _api_key(settings)
    # Sixteen keep-alive connections opened at once, as a load generator opens them.
    # Each worker listens on a socket of its own and the kernel spreads connections
    # over them by address: all sixteen on one worker has odds of 1 in 32,768.
    clients = [httpx2.AsyncClient(base_url=base) for _ in range(16)]

    async def one(http: httpx2.AsyncClient) -> None:
        response = await http.post("/graphql", json={"query": QUERY}, headers={"x-api-key": key})
        assert response.status_code == 200, response.text

    try:
        for _ in range(3):
            await asyncio.gather(*(one(http) for http in clients))
    finally:
        for http in clients:
            await http.aclose()
    counted = _operations_by_worker(metrics_dir)
    assert sum(counted.values()) == 3 * 16
    assert len([pid for pid, count in counted.items() if count > 0]) == WORKERS, counted


async def test_workers_that_cannot_start_stop_the_server(
    settings: Settings, profile: Profile, tmp_path: Path
) -> None:
    # A database never migrated, and no migrating on start: every worker refuses to
    # serve, the same way each time, so none is replaced and the server exits 3.
    name = f"polygraph_workers_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    log_path = tmp_path / "gateway.log"
    try:
        env = {
            **os.environ,
            "POLYGRAPH_POSTGRES_DSN": profile.postgres_dsn(name),
            "POLYGRAPH_MIGRATE_ON_START": "false",
            "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
            "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
            "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
            "POLYGRAPH_EVENTS_NAMESPACE": f"polygraph-workers-{secrets.token_hex(4)}",
        }
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port()),
                "--workers", str(WORKERS),
                env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            # Only stops a broken test: the workers refuse within seconds.
            async with asyncio.timeout(120):
                returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()  # only the process this test started
                await process.wait()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    log = log_path.read_text()
    assert returncode == 3, log
    assert "POLYGRAPH_MIGRATE_ON_START is false" in log, log
    assert "failed to start; stopping every worker" in log, log
