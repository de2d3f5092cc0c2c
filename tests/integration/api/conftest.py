"""Helpers for GraphQL tests: signed-in callers of each role, and a query runner."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.settings import Settings
from stores import PostgresStore


@dataclass(frozen=True)
class Caller:
    """A user of one role with an API key, as request headers."""

    user_id: str
    role: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}


class GraphQL:
    """POSTs operations to the in-process gateway and returns the decoded body."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.last_round_trips: dict[str, int] = {}

    def __call__(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        caller: Caller | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        sent = dict(headers or {})
        if caller is not None:
            sent.update(caller.headers)
        response = self.client.post(
            "/graphql", json={"query": query, "variables": dict(variables or {})}, headers=sent
        )
        self.last_round_trips = parse_round_trips(response.headers.get("x-round-trips", ""))
        body: dict[str, Any] = response.json()
        return body


def parse_round_trips(header: str) -> dict[str, int]:
    pairs = (part.strip().split("=") for part in header.split(",") if part.strip())
    return {store: int(count) for store, count in pairs}


def data(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` of a response that must have no errors."""
    assert not body.get("errors"), body.get("errors")
    result: dict[str, Any] = body["data"]
    return result


def error_codes(body: Mapping[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


@pytest.fixture
def gql(client: TestClient) -> GraphQL:
    return GraphQL(client)


async def _make_caller(settings: Settings, role: str) -> Caller:
    async with PostgresStore(settings.postgres_options()) as postgres:
        user = await postgres.users.create_user(
            email=f"{role}-{secrets.token_hex(6)}@example.test", role=role
        )
        _, key = await postgres.users.create_api_key(user.id, name="test")
    return Caller(str(user.id), role, key)


@pytest.fixture
def make_caller(settings: Settings, client: TestClient) -> Callable[[str], Caller]:
    # `client` first: its lifespan applies the migrations the users table needs.
    def make(role: str) -> Caller:
        return asyncio.run(_make_caller(settings, role))

    return make


@pytest.fixture
def admin(make_caller: Callable[[str], Caller]) -> Caller:
    return make_caller("admin")


@pytest.fixture
def operator(make_caller: Callable[[str], Caller]) -> Caller:
    return make_caller("operator")


@pytest.fixture
def viewer(make_caller: Callable[[str], Caller]) -> Caller:
    return make_caller("viewer")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(5)}"
