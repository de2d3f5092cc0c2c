"""TLS to PostgreSQL and Redis, with verification on, against servers of the test's
own that present a certificate from a throwaway CA (tests/support/tls.py). The
settings go through `Settings`, as an operator's environment would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore, RedisStore, StoreUnavailable
from stores.redis import RedisOptions
from tests.support.tls import (
    CERT_DATABASE,
    Certificates,
    TlsPostgres,
    TlsRedis,
    make_certificates,
    tls_postgres,
    tls_redis,
)

VERIFY_FAILED = "TLS certificate verification failed"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def pg_server(certificates: Certificates) -> Iterator[TlsPostgres]:
    with tls_postgres(certificates) as server:
        yield server


@pytest.fixture(scope="module")
def redis_server(certificates: Certificates) -> Iterator[TlsRedis]:
    with tls_redis(certificates) as server:
        yield server


def pg_settings(server: TlsPostgres, ca: Path, **more: Any) -> Settings:
    return Settings(
        postgres_dsn=server.dsn(more.pop("host", "127.0.0.1"), more.pop("database", "postgres")),
        postgres_sslmode=more.pop("mode", "verify-full"),
        postgres_sslrootcert=str(ca),
        postgres_pool_min=0,
        postgres_acquire_timeout_s=10,
        **more,
    )


def redis_options(server: TlsRedis, certificates: Certificates, ca: Path) -> RedisOptions:
    return Settings(
        redis_url=server.url,
        redis_tls_ca_file=str(ca),
        redis_tls_cert_file=str(certificates.client_cert),
        redis_tls_key_file=str(certificates.client_key),
    ).redis_options()


async def test_postgres_verify_full_connects_over_tls(
    pg_server: TlsPostgres, certificates: Certificates
) -> None:
    settings = pg_settings(pg_server, certificates.ca)
    async with PostgresStore(settings.postgres_options()) as store:
        probe = await store.probe()
        async with store.connection() as conn:
            row = await conn.fetchrow(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
    assert probe.up, probe.error
    assert row is not None and row["ssl"] is True and row["version"].startswith("TLSv1.")


async def test_postgres_with_the_wrong_ca_is_refused_and_says_why(
    pg_server: TlsPostgres, certificates: Certificates
) -> None:
    settings = pg_settings(pg_server, certificates.other_ca)
    async with PostgresStore(settings.postgres_options()) as store:
        probe = await store.probe()
        with pytest.raises(StoreUnavailable) as refused:
            async with store.connection():
                pass
    assert not probe.up and probe.error is not None and VERIFY_FAILED in probe.error
    assert str(refused.value).startswith(f"postgres is unavailable: {VERIFY_FAILED}")
    assert "self-signed certificate in certificate chain" in str(refused.value)


async def test_postgres_verify_full_checks_the_host_name(
    pg_server: TlsPostgres, certificates: Certificates
) -> None:
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2.
    for mode, up in (("verify-full", False), ("verify-ca", True)):
        settings = pg_settings(pg_server, certificates.ca, host="127.0.0.2", mode=mode)
        async with PostgresStore(settings.postgres_options()) as store:
            probe = await store.probe()
        assert probe.up is up, (mode, probe.error)
        if not up:
            assert probe.error is not None and "not valid for '127.0.0.2'" in probe.error


async def test_postgres_client_certificate(
    pg_server: TlsPostgres, certificates: Certificates
) -> None:
    without = pg_settings(pg_server, certificates.ca, database=CERT_DATABASE)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="client cert"):
        await asyncpg.connect(without.postgres_options().dsn)
    settings = pg_settings(
        pg_server,
        certificates.ca,
        database=CERT_DATABASE,
        postgres_sslcert=str(certificates.client_cert),
        postgres_sslkey=str(certificates.client_key),
    )
    async with (
        PostgresStore(settings.postgres_options()) as store,
        store.connection() as conn,
    ):
        client = await conn.fetchval(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
    assert client == "/CN=polygraph"


async def test_redis_over_tls_with_a_client_certificate(
    redis_server: TlsRedis, certificates: Certificates
) -> None:
    async with RedisStore(redis_options(redis_server, certificates, certificates.ca)) as store:
        probe = await store.probe()
        await store.client.set("tls-test", b"over tls")
        assert await store.client.get("tls-test") == b"over tls"
    assert probe.up, probe.error


async def test_redis_with_the_wrong_ca_is_refused_and_says_why(
    redis_server: TlsRedis, certificates: Certificates
) -> None:
    options = redis_options(redis_server, certificates, certificates.other_ca)
    async with RedisStore(options) as store:
        probe = await store.probe()
    assert not probe.up and probe.error is not None
    assert probe.error.startswith(VERIFY_FAILED), probe.error


async def test_redis_without_a_client_certificate_is_refused(
    redis_server: TlsRedis, certificates: Certificates
) -> None:
    options = RedisOptions(url=redis_server.url, tls_ca_file=str(certificates.ca))
    async with RedisStore(options) as store:
        probe = await store.probe()
    # Under TLS 1.3 the server asks for the certificate after the handshake, so the
    # refusal arrives as an alert or as a reset connection, whichever is read first.
    assert not probe.up and probe.error, probe


def test_the_gateway_reports_a_wrong_ca_as_store_unavailable(
    pg_server: TlsPostgres,
    redis_server: TlsRedis,
    certificates: Certificates,
    profile: Profile,
    stack_up: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = pg_settings(
        pg_server,
        certificates.other_ca,
        neo4j_uri=profile.bolt_uri,
        redis_url=redis_server.url,
        redis_tls_ca_file=str(certificates.other_ca),
        redis_tls_cert_file=str(certificates.client_cert),
        redis_tls_key_file=str(certificates.client_key),
        events_namespace="polygraph-test-tls",
        projector_enabled=False,
        embedding_filler_enabled=False,
    )
    with TestClient(create_app(settings)) as client:
        # Well formed, so the gateway has to ask PostgreSQL about it.
        key = "pg_abcdefgh_" + "x" * 43
        response = client.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"X-Api-Key": key}
        )
        assert response.status_code == 503
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "STORE_UNAVAILABLE"
        # Clients learn which store is down, not why: the reason is for the operator,
        # in the log and in each store's probe.
        assert "postgres is unavailable" in error["message"]
        assert VERIFY_FAILED not in error["message"]
        assert any(VERIFY_FAILED in record.getMessage() for record in caplog.records)

        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "critical"
        # The breakdown /health shows signed-in callers: each store's probe.
        stores = client.app.state.stores  # type: ignore[attr-defined]
        assert client.portal is not None
        postgres = client.portal.call(stores.postgres.probe)
        redis = client.portal.call(stores.redis.probe)
    assert postgres.error is not None and VERIFY_FAILED in postgres.error
    assert redis.error is not None and redis.error.startswith(VERIFY_FAILED)
