"""compose.yaml, checked against the Compose specification's schema and read for the
start order and store settings README promises."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.unit.deploy.conftest import REPO_ROOT, run_tool, tool

COMPOSE = REPO_ROOT / "compose.yaml"
STORES = ("postgres", "neo4j", "redis")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def validate(path: Path) -> tuple[int, str]:
    result = run_tool(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)
    )
    return result.returncode, result.stdout + result.stderr


def test_compose_file_follows_the_compose_specification() -> None:
    code, output = validate(COMPOSE)
    assert code == 0, output


def test_the_schema_check_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("depends_on:", "depend_on:", 1))
    code, output = validate(broken)
    assert code != 0 and "depend_on" in output


def test_the_gateway_starts_once_every_store_is_healthy() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    assert gateway["depends_on"] == {store: {"condition": "service_healthy"} for store in STORES}
    for store in STORES:
        assert services[store]["healthcheck"]["test"], store
    assert gateway["build"]["context"] == "."
    assert gateway["environment"]["POLYGRAPH_MIGRATE_ON_START"] == "true"


def test_images_are_pinned_to_versions() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        if name == "gateway":
            continue
        tag = image.rpartition(":")[2]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), image


def test_stores_run_as_readme_says() -> None:
    services = compose()["services"]
    # TimescaleDB and pgvector in one server: the hypertable path, not the fallback.
    assert services["postgres"]["image"].startswith("timescale/timescaledb-ha:")
    assert services["gateway"]["environment"]["POLYGRAPH_METRICS_BACKEND"] == "timescaledb"
    assert (
        services["neo4j"]["image"].startswith("neo4j:5.")
        and "community" in (services["neo4j"]["image"])
    )
    neo4j_env = services["neo4j"]["environment"]
    assert neo4j_env["NEO4J_server_bolt_connection__keep__alive__type"] == "STREAMING"
    redis = services["redis"]
    assert redis["image"].startswith("redis:7.")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_the_gateway_has_time_to_drain_before_it_is_killed() -> None:
    gateway = compose()["services"]["gateway"]
    grace = int(gateway["stop_grace_period"].removesuffix("s"))
    assert grace > float(gateway["environment"]["POLYGRAPH_SHUTDOWN_TIMEOUT_S"])
