"""`polygraph serve` stops within its deadline on SIGTERM, with a request stuck on a
PostgreSQL lock and a subscription open, and closes its stores on the way out."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx2
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresOptions, PostgresStore
from tests.support.waiting import until

DEADLINE_S = 8.0
# Beyond the deadline: the time to notice the exit on a loaded machine.
MARGIN_S = 5.0
SUBSCRIPTION = "subscription { healthUpdates(intervalSeconds: 60) { status } }"


@pytest.fixture
async def own_database(profile: Profile, stack_up: None) -> AsyncIterator[str]:
    name = f"polygraph_shutdown_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield profile.postgres_dsn(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _api_key(dsn: str) -> str:
    async with PostgresStore(PostgresOptions(dsn=dsn, min_size=0)) as postgres:
        await postgres.migrate()
        user = await postgres.users.create_user(
            email=f"{secrets.token_hex(4)}@x.test", role="viewer"
        )
        _, key = await postgres.users.create_api_key(user.id)
    return key


async def _waiting_on_a_lock(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        waiting: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'polygraph' AND wait_event_type = 'Lock')"
        )
    finally:
        await conn.close()
    return waiting


async def test_sigterm_stops_a_busy_gateway_within_its_deadline(
    settings: Settings, own_database: str, tmp_path: Path
) -> None:
    key = await _api_key(own_database)
    port = _free_port()
    log_path = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": own_database,
        # Long enough that only the shutdown can end the stuck query.
        "POLYGRAPH_POSTGRES_STATEMENT_TIMEOUT_S": "600",
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
        "POLYGRAPH_EVENTS_NAMESPACE": f"polygraph-shutdown-{secrets.token_hex(4)}",
        "POLYGRAPH_SHUTDOWN_TIMEOUT_S": str(DEADLINE_S),
        "POLYGRAPH_LOG_LEVEL": "info",
    }
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
            env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    blocker = await asyncpg.connect(own_database)
    try:
        async with httpx2.AsyncClient(base_url=base, timeout=DEADLINE_S + MARGIN_S + 30) as http:

            async def live() -> bool:
                if gateway.returncode is not None:
                    return True
                try:
                    return (await http.get("/health/live")).status_code == 200
                except httpx2.HTTPError:
                    return False

            await until(live)
            assert gateway.returncode is None, log_path.read_text()
            async with ws_connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=[Subprotocol("graphql-transport-ws")],
            ) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": key}}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(
                    json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
                )
                assert json.loads(await ws.recv())["type"] == "next"

                # A real wait in PostgreSQL: the query queues behind this lock until cancelled.
                stuck = blocker.transaction()
                await stuck.start()
                await blocker.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
                slow = asyncio.create_task(
                    http.post(
                        "/graphql",
                        json={"query": "{ agents(first: 1) { totalCount } }"},
                        headers={"x-api-key": key},
                    )
                )
                await until(lambda: _waiting_on_a_lock(own_database))

                signalled = time.monotonic()
                gateway.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(DEADLINE_S + MARGIN_S):
                        returncode = await gateway.wait()
                except TimeoutError:
                    pytest.fail(f"still running {DEADLINE_S + MARGIN_S} s after SIGTERM")
                stopped_after = time.monotonic() - signalled
                response = await slow
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
    finally:
        if gateway.returncode is None:
            gateway.kill()  # only the process this test started
            await gateway.wait()
        await blocker.close()

    log = log_path.read_text()
    # uvicorn stops gracefully, then lets SIGTERM end the process as it would have.
    assert returncode == -signal.SIGTERM, log
    assert stopped_after < DEADLINE_S + MARGIN_S
    assert response.status_code == 503
    assert response.json()["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"
    # "Service restart": the client reconnects, to another replica.
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert "cancelling 1 request(s) still running" in log
    assert "stores closed" in log
    assert "Traceback" not in log, log
    assert not [line for line in log.splitlines() if line.startswith("ERROR")], log
