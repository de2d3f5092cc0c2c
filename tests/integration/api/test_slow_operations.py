"""Operations slower than POLYGRAPH_SLOW_OPERATION_S are logged with name and cost."""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller

QUERY = "query Roster { agents(first: 3) { edges { node { name } } } }"


def _slow_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "polygraph.slow"]


def test_a_slow_operation_is_logged_with_its_name_and_cost(
    settings: Settings, viewer: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    # Every operation is slower than a nanosecond.
    hasty = settings.model_copy(update={"slow_operation_s": 1e-9})
    with TestClient(create_app(hasty)) as client, caplog.at_level(logging.WARNING):
        # The second time on the prepared path (gateway/prepared.py): logged alike.
        for _ in range(2):
            response = client.post("/graphql", json={"query": QUERY}, headers=viewer.headers)
            assert response.status_code == 200
            cost = response.json()["extensions"]["cost"]
    messages = _slow_records(caplog)
    assert len(messages) == 2
    for message in messages:
        assert message.startswith("slow query Roster: ")
        assert f"estimated cost {cost['requested']}," in message


def test_operations_under_the_threshold_are_not(
    settings: Settings, viewer: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    patient = settings.model_copy(update={"slow_operation_s": 3600})
    with TestClient(create_app(patient)) as client, caplog.at_level(logging.WARNING):
        assert client.post("/graphql", json={"query": QUERY}, headers=viewer.headers).is_success
    assert _slow_records(caplog) == []
