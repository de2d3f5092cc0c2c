"""Expensive operations per caller: at most its role's limit executing, a bounded queue
behind them, RATE_LIMITED (429, never a 500) past it; cheap operations and other
callers never wait.

Each test runs its own gateway in which `{ agents(first: 5) ... }` (cost 11) is
expensive and `{ __typename }` (cost 0) is not. A slot is held by the test itself, on
the gateway's event loop, so nothing depends on how long an operation takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx2
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.limits.concurrency import ExpensiveOperations, caller_key
from gateway.settings import Settings
from resolvers.auth import ANONYMOUS, Role
from tests.integration.api.conftest import Caller
from tests.support.waiting import until

EXPENSIVE = "{ agents(first: 5) { edges { node { id } } } }"
CHEAP = "{ __typename }"


@contextmanager
def gateway(settings: Settings, **update: Any) -> Iterator[TestClient]:
    limited = settings.model_copy(
        update={
            "projector_enabled": False,
            "embedding_filler_enabled": False,
            "expensive_cost": 2,
            "expensive_concurrency_viewer": 1,
            **update,
        }
    )
    with TestClient(create_app(limited), client=("198.51.100.7", 50000)) as client:
        yield client


def _gate(client: TestClient) -> ExpensiveOperations:
    gate = client.app.state.expensive_operations  # type: ignore[attr-defined]
    assert isinstance(gate, ExpensiveOperations)
    return gate


def _hold(client: TestClient, key: str, role: Role | None) -> None:
    """Take one of the caller's slots on the gateway's own loop, as an operation does."""
    client.portal.call(_gate(client).acquire, key, role)  # type: ignore[union-attr]


def _release(client: TestClient, key: str) -> None:
    client.portal.call(_gate(client).release, key)  # type: ignore[union-attr]


def _post(client: TestClient, query: str, caller: Caller) -> httpx2.Response:
    return client.post("/graphql", json={"query": query}, headers=caller.headers)


def _key(caller: Caller) -> str:
    return f"user:{caller.user_id}"


def test_past_its_limit_and_queue_a_viewer_is_refused_with_429(
    settings: Settings, viewer: Caller, operator: Caller
) -> None:
    with gateway(settings, expensive_queue=0) as client:
        _hold(client, _key(viewer), Role.VIEWER)

        refused = _post(client, EXPENSIVE, viewer)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert "data" not in body or body["data"] is None
        [error] = body["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert "POLYGRAPH_EXPENSIVE_CONCURRENCY" in error["message"]
        assert _gate(client).refused == 1

        # Cheap operations of the same caller, and other callers' expensive ones, run.
        cheap = _post(client, CHEAP, viewer)
        assert cheap.status_code == 200, cheap.text
        assert cheap.json()["data"] == {"__typename": "Query"}
        other = _post(client, EXPENSIVE, operator)
        assert other.status_code == 200, other.text
        assert "errors" not in other.json()

        _release(client, _key(viewer))
        again = _post(client, EXPENSIVE, viewer)
        assert again.status_code == 200, again.text
        assert "errors" not in again.json()
        assert _gate(client).running(_key(viewer)) == 0


def test_a_queued_operation_runs_when_a_slot_frees(settings: Settings, viewer: Caller) -> None:
    with gateway(settings, expensive_queue=1) as client, ThreadPoolExecutor(1) as pool:
        gate = _gate(client)
        key = _key(viewer)
        _hold(client, key, Role.VIEWER)
        queued = pool.submit(_post, client, EXPENSIVE, viewer)
        asyncio.run(until(lambda: gate.waiting(key) == 1))

        # The queue holds one: the next is refused.
        full = _post(client, EXPENSIVE, viewer)
        assert full.status_code == 429
        assert full.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"

        _release(client, key)
        answer = queued.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]["agents"]["edges"]) <= 5
        assert gate.waited == 1
        asyncio.run(until(lambda: gate.running(key) == 0 and gate.waiting(key) == 0))


def test_operators_may_run_more_at_once_than_viewers(settings: Settings, operator: Caller) -> None:
    """The role decides the limit: one operator slot held leaves it fifteen more."""
    with gateway(settings, expensive_queue=0) as client:
        _hold(client, _key(operator), Role.OPERATOR)
        answer = _post(client, EXPENSIVE, operator)
        assert answer.status_code == 200, answer.text
        assert "errors" not in answer.json()
        _release(client, _key(operator))


def test_anonymous_callers_are_counted_by_address(settings: Settings) -> None:
    """Anonymous: one at a time per address (`health`, 11, is expensive here)."""
    address = caller_key(ANONYMOUS, "198.51.100.7")
    with gateway(settings, expensive_queue=0) as client:
        _hold(client, address, None)
        refused = client.post("/graphql", json={"query": "{ health { status } }"})
        cheap = client.post("/graphql", json={"query": CHEAP})
        _release(client, address)
        after = client.post("/graphql", json={"query": "{ health { status } }"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert cheap.status_code == 200, cheap.text
    assert after.status_code == 200, after.text
    assert after.json()["data"]["health"]["status"]
