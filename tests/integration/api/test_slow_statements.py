"""Slow PostgreSQL statements are logged with their text, never with the values a
client sent."""

from __future__ import annotations

import logging
import secrets

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, data

QUERY = """
query SlowOnPurpose($name: String!) {
  agents(filter: {nameContains: $name}, first: 5) { totalCount }
}
"""


def test_slow_statements_are_logged_without_values(
    settings: Settings, viewer: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    # Every statement is slow past a threshold this small.
    own = settings.model_copy(update={"slow_store_call_s": 1e-9})
    needle = f"needle-{secrets.token_hex(6)}"
    with caplog.at_level(logging.WARNING), TestClient(create_app(own)) as client:
        caplog.clear()
        response = client.post(
            "/graphql",
            json={"query": QUERY, "variables": {"name": needle}},
            headers=viewer.headers,
        )
        assert data(response.json())["agents"]["totalCount"] == 0
    messages = [record.getMessage() for record in caplog.records]
    statements = [m for m in messages if m.startswith("slow postgres call")]
    assert any("$1" in m and "agents" in m for m in statements), statements
    assert not any(needle in m for m in messages)
