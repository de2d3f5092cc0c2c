from __future__ import annotations

import pytest

from gateway.settings import Settings
from stores import GraphOptions, PostgresOptions, PostgresStore, StoreMisuse


def test_pool_sizes_are_validated_up_front() -> None:
    with pytest.raises(ValueError, match="min_size is greater than max_size"):
        PostgresOptions(dsn="postgresql://x", min_size=5, max_size=2)


def test_graph_options_repr_hides_the_password() -> None:
    options = GraphOptions(uri="bolt://x", user="neo4j", password="s3cret")
    assert "s3cret" not in repr(options)


async def test_store_refuses_use_before_open_and_reopen_after_close() -> None:
    store = PostgresStore(PostgresOptions(dsn="postgresql://127.0.0.1:1/none", min_size=0))
    with pytest.raises(StoreMisuse, match="not open"):
        async with store.connection():
            pass
    await store.open()
    await store.aclose()
    with pytest.raises(StoreMisuse, match="cannot reopen"):
        await store.open()


def test_the_executor_setting_reaches_settings_built_with_other_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tests/conftest.py builds Settings(...) field by field; `make checks` picks the
    # executor for its second API run through the environment.
    monkeypatch.delenv("POLYGRAPH_EXECUTOR", raising=False)
    assert Settings(profile="test").executor == "planned"
    monkeypatch.setenv("POLYGRAPH_EXECUTOR", "stock")
    assert Settings(profile="test").executor == "stock"
    monkeypatch.setenv("POLYGRAPH_EXECUTOR", "fast")
    with pytest.raises(ValueError, match="executor"):
        Settings(profile="test")


@pytest.mark.parametrize("schema", ["Metrics", "metrics\n", "metrics; drop", "9metrics"])
def test_the_metrics_schema_must_be_an_identifier(schema: str) -> None:
    from stores.metrics import MetricsOptions

    with pytest.raises(ValueError, match="SQL identifier"):
        MetricsOptions(dsn="postgresql://localhost/metrics", schema=schema)
