"""`/metrics`: who may read it, and what a scrape holds, parsed with the client
library's own parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores.health import CLOSE_REASONS
from tests.integration.api.conftest import Caller, data
from tests.support.serving import wait_until

TOKEN = "scrape-token-for-tests"
DASHBOARD = Path(__file__).parents[3] / "infra" / "grafana" / "polygraph-gateway.json"


@pytest.fixture(scope="module")
def scraped_app(settings: Settings) -> Iterator[TestClient]:
    own = settings.model_copy(update={"prometheus_token": SecretStr(TOKEN)})
    with TestClient(create_app(own)) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_need_the_scrape_token_not_a_user_key(
    scraped_app: TestClient, admin: Caller
) -> None:
    assert scraped_app.get("/metrics").status_code == 401
    wrong = scraped_app.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    # Even an admin's API key: metrics are for the scraper, which holds the token.
    assert scraped_app.get("/metrics", headers=admin.headers).status_code == 401
    right = scraped_app.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain; version=")


def test_without_a_token_setting_there_is_no_metrics_endpoint(client: TestClient) -> None:
    assert client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_a_scrape_counts_operations_errors_and_store_calls(
    scraped_app: TestClient, viewer: Caller, operator: Caller
) -> None:
    created = scraped_app.post(
        "/graphql",
        json={"query": 'mutation { createAgent(input: {name: "scraped"}) { agent { id } } }'},
        headers=operator.headers,
    )
    assert created.status_code == 200, created.text
    # `children` is read from Neo4j, the API key is checked against Redis limits: every
    # store's latency is timed.
    query = "query AgentsForMetrics { agents(first: 1) { totalCount edges { node { children { id } } } } }"
    for _ in range(2):
        response = scraped_app.post("/graphql", json={"query": query}, headers=viewer.headers)
        data(response.json())
    # Anonymous callers may not read the per-store health breakdown.
    refused = scraped_app.post("/graphql", json={"query": "{ health { components { name } } }"})
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    text = scraped_app.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    seen = samples(text)
    named = (("operation", "AgentsForMetrics"), ("type", "query"))
    assert seen[("polygraph_graphql_operations_total", named)] == 2
    assert seen[("polygraph_graphql_operation_duration_seconds_count", named)] == 2
    assert seen[("polygraph_graphql_errors_total", (("code", "UNAUTHENTICATED"),))] >= 1
    assert seen[("polygraph_store_calls_total", (("store", "postgres"),))] > 0
    # The API key's checks are not cached; the session cache counts sign-ins by token.
    assert ("polygraph_cache_misses_total", (("kind", "sessions"),)) in seen
    for store in ("neo4j", "redis"):
        limit = (("role", "primary"), ("server", store), ("store", store))
        assert seen[("polygraph_store_pool_max_connections", limit)] > 0
    for store in ("postgres", "neo4j", "redis"):
        assert seen[("polygraph_store_call_duration_seconds_count", (("store", store),))] > 0
    primary = (("role", "primary"), ("server", "postgres"))
    in_use = seen[
        ("polygraph_store_pool_connections", (*primary, ("state", "in_use"), ("store", "postgres")))
    ]
    assert in_use >= 0
    assert seen[("polygraph_store_pool_max_connections", (*primary, ("store", "postgres")))] > 0
    assert (
        seen[("polygraph_store_pool_connections_opened_total", (*primary, ("store", "postgres")))]
        > 0
    )
    for reason in CLOSE_REASONS:
        closed = (("reason", reason), *primary, ("store", "postgres"))
        assert seen[("polygraph_store_pool_connections_closed_total", closed)] >= 0
    assert seen[("polygraph_outbox_pending", ())] >= 0
    assert seen[("polygraph_outbox_oldest_pending_age_seconds", ())] >= 0
    assert ("polygraph_projector_applied_total", ()) in seen
    assert ("polygraph_projector_batches_total", ()) in seen
    assert ("polygraph_projector_failed_total", ()) in seen
    assert seen[("polygraph_subscriptions_open", ())] == 0
    assert ("polygraph_events_dropped_total", ()) in seen
    assert ("polygraph_log_records_dropped_total", ()) in seen


def test_open_subscriptions_are_counted_while_they_stream(
    scraped_app: TestClient, viewer: Caller
) -> None:
    def open_now() -> float:
        text = scraped_app.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        return samples(text)[("polygraph_subscriptions_open", ())]

    assert open_now() == 0
    with scraped_app.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        init = {"type": "connection_init", "payload": {"apiKey": viewer.api_key}}
        ws.send_text(json.dumps(init))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        query = "subscription { taskUpdated { change } }"
        ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        wait_until(lambda: open_now() == 1, what="the subscription to be counted")
        ws.send_text(json.dumps({"id": "1", "type": "complete"}))
    wait_until(lambda: open_now() == 0, what="the subscription to be let go")


def test_the_grafana_dashboard_uses_only_metrics_a_scrape_has(
    scraped_app: TestClient, viewer: Caller
) -> None:
    # Labelled series appear with their first sample: an operation, an error.
    query = "{ agents(first: 1) { totalCount } }"
    data(scraped_app.post("/graphql", json={"query": query}, headers=viewer.headers).json())
    scraped_app.post("/graphql", json={"query": "{ health { components { name } } }"})
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bpolygraph_[a-z_]+", expr)}
    text = scraped_app.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    exported = {name for name, _ in samples(text)}
    assert used and used <= exported, used - exported


def test_rate_limit_points_and_refusals_are_counted(settings: Settings, viewer: Caller) -> None:
    # A viewer quota that holds one request a window: the second is refused.
    own = settings.model_copy(
        update={"prometheus_token": SecretStr(TOKEN), "rate_limit_viewer": 40}
    )
    query = {"query": "{ viewer { id } }"}
    with TestClient(create_app(own)) as client:
        assert client.post("/graphql", json=query, headers=viewer.headers).status_code == 200
        refused = client.post("/graphql", json=query, headers=viewer.headers)
        assert refused.status_code == 429, refused.text
        seen = samples(client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text)
    assert seen[("polygraph_rate_limit_points_total", (("policy", "viewer"),))] >= 25
    assert seen[("polygraph_rate_limit_refusals_total", (("policy", "viewer"),))] >= 1
