"""Apollo's own tools accept Polygraph as a subgraph: `@apollo/composition` composes
it with a second subgraph, and `@apollo/gateway` answers a query that needs both,
resolving Polygraph's part of a `reviews` subgraph's objects through `_entities`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, unique
from tests.support.serving import serve_in_thread

FEDERATION_DIR = Path(__file__).parents[3] / "infra" / "federation"


def _through_apollo_gateway(url: str, api_key: str, agent_id: str, query: str) -> Any:
    node = shutil.which("node")
    assert node, "Node 20+ is needed for the federation test"
    assert (FEDERATION_DIR / "node_modules").exists(), (
        "Apollo's federation packages are not installed: run `make install-test`"
        " (or `npm ci --prefix infra/federation`)"
    )
    completed = subprocess.run(
        [node, str(FEDERATION_DIR / "check.mjs")],
        env={
            **os.environ,
            "POLYGRAPH_URL": f"{url}/graphql",
            "POLYGRAPH_API_KEY": api_key,
            "AGENT_ID": agent_id,
            "QUERY": query,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_apollo_composes_polygraph_and_resolves_its_entities(
    settings: Settings, gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    name = unique("federated")
    create = (
        'mutation($n: String!) { createAgent(input: {name: $n, role: "critic"}) { agent { id } } }'
    )
    agent_id = data(gql(create, {"n": name}, caller=operator))["createAgent"]["agent"]["id"]
    query = "{ reviews { score agent { id name role } } }"
    with serve_in_thread(create_app(settings)) as url:
        result = _through_apollo_gateway(url, viewer.api_key, agent_id, query)
    assert result == {
        "data": {
            "reviews": [{"score": 5, "agent": {"id": agent_id, "name": name, "role": "critic"}}]
        }
    }
