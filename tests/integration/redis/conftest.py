"""Redis Sentinel and Redis Cluster of the tests' own, and a gateway served over them."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.context import Stores
from resolvers.tasks import TASK_UPDATED_CHANNEL
from stores import PostgresStore
from tests.integration.api.conftest import Caller, data
from tests.support.redis_topologies import ClusterSetup, SentinelSetup
from tests.support.serving import serve_in_thread, wait_until


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelSetup]:
    setup = SentinelSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    setup = ClusterSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


async def _make_operator(settings: Settings) -> Caller:
    async with PostgresStore(settings.postgres_options()) as postgres:
        user = await postgres.users.create_user(
            email=f"operator-{secrets.token_hex(6)}@example.test", role="operator"
        )
        _, key = await postgres.users.create_api_key(user.id, name="test")
    return Caller(str(user.id), "operator", key)


@pytest.fixture
def operator(settings: Settings, client: TestClient) -> Caller:
    # `client` first: its lifespan applies the migrations the users table needs.
    return asyncio.run(_make_operator(settings))


LOGIN = "mutation($key: String!) { login(input: {apiKey: $key}) { token session { id } } }"
CREATE_TASK = "mutation($t: String!) { createTask(input: {title: $t}) { task { id } } }"


@dataclass
class Gateway:
    """A gateway served over real sockets, and the app behind it."""

    base: str
    app: Starlette

    @property
    def stores(self) -> Stores:
        stores: Stores = self.app.state.stores
        return stores

    def post(self, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
        return httpx2.post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables},
            headers=headers,
            timeout=10,
        )

    def login(self, caller: Caller) -> str:
        body = self.post(LOGIN, {"key": caller.api_key}, {}).json()
        token: str = data(body)["login"]["token"]
        return token

    def viewer_status(self, token: str) -> int:
        response = self.post("{ viewer { id } }", {}, {"authorization": f"Bearer {token}"})
        status: int = response.status_code
        return status

    @contextmanager
    def task_updates(self, caller: Caller) -> Iterator[ClientConnection]:
        """A WebSocket subscribed to every task update, once the bus listens for them."""
        url = self.base.replace("http", "ws") + "/graphql"
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": caller.api_key}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            query = "subscription { taskUpdated { change task { title } } }"
            ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            bus = self.stores.events
            assert bus is not None
            wait_until(lambda: bus.subscribers(TASK_UPDATED_CHANNEL) == 1, what="a subscriber")
            yield ws

    def created_title_arrives(self, ws: ClientConnection, caller: Caller) -> bool:
        """Create a task and report whether the subscription delivers its event.

        Pub/sub delivers at most once: an event published while the bus reconnects is
        gone, so callers that just moved Redis under the bus retry this until it holds."""
        title = f"seen-{secrets.token_hex(4)}"
        data(self.post(CREATE_TASK, {"t": title}, caller.headers).json())
        while True:
            try:
                message = json.loads(ws.recv(timeout=2))
            except TimeoutError:
                return False
            update = message["payload"]["data"]["taskUpdated"] if message["type"] == "next" else {}
            if update.get("task", {}).get("title") == title:
                return True


@contextmanager
def gateway_over(settings: Settings, redis_url: str) -> Iterator[Gateway]:
    own = settings.model_copy(
        update={
            "redis_url": SecretStr(redis_url),
            "events_namespace": f"polygraph-test-{secrets.token_hex(4)}",
        }
    )
    app = create_app(own)
    with serve_in_thread(app) as base:
        yield Gateway(base, app)
