"""The Redis TLS settings reach every connection each URL form makes: one server, a
Sentinel-managed master and its sentinels, every Cluster node. Nothing connects:
this checks the SSL context each connection would open with (loaded from a CA of
the test's own), so it runs without servers; tests/integration/redis/ runs a TLS
cluster and sentinel for real."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection

from stores.redis import RedisOptions, RedisStore
from stores.redis.clients import RedisClients
from tests.support.tls import Certificates, make_certificates, scratch_directory


@pytest.fixture(scope="module")
def certificates() -> Iterator[Certificates]:
    with scratch_directory() as directory:
        yield make_certificates(directory)


def options(url: str, certificates: Certificates) -> RedisOptions:
    return RedisOptions(
        url=url,
        tls_ca_file=str(certificates.ca),
        tls_cert_file=str(certificates.client_cert),
        tls_key_file=str(certificates.client_key),
    )


def clients_of(store: RedisStore) -> RedisClients:
    clients = store._clients
    assert clients is not None
    return clients


def connections(clients: RedisClients) -> dict[str, AbstractConnection]:
    """One connection (not connected) of each kind the clients would open."""
    client: Any = clients.client
    made: dict[str, AbstractConnection] = {}
    if clients.sentinel is not None:
        made["master"] = client.connection_pool.make_connection()
        sentinels: list[Any] = clients.sentinel.sentinels
        for index, sentinel in enumerate(sentinels):
            made[f"sentinel {index}"] = sentinel.connection_pool.make_connection()
    elif hasattr(client, "nodes_manager"):
        for name, node in client.nodes_manager.startup_nodes.items():
            made[f"node {name}"] = node.connection_class(**node.connection_kwargs)
    else:
        made["server"] = client.connection_pool.make_connection()
    return made


def assert_verifies_with(connection: AbstractConnection, certificates: Certificates) -> None:
    assert isinstance(connection, SSLConnection), type(connection)
    context = connection.ssl_context.get()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # redis-py adds the CA file to the system's CAs (ssl.create_default_context()).
    subjects = [str(ca["subject"]) for ca in context.get_ca_certs()]
    assert any("Polygraph test ca" in subject for subject in subjects)
    assert connection.ssl_context.certfile == str(certificates.client_cert)
    assert connection.ssl_context.keyfile == str(certificates.client_key)


@pytest.mark.parametrize(
    ("url", "kinds"),
    [
        ("rediss://127.0.0.1:6380/0", {"server"}),
        ("rediss+sentinel://127.0.0.1:26379,127.0.0.2:26379/mymaster/1", {"master", "sentinel 0", "sentinel 1"}),
        ("rediss+cluster://127.0.0.1:7000,127.0.0.1:7001", {"node 127.0.0.1:7000", "node 127.0.0.1:7001"}),
    ],
)  # fmt: skip
async def test_every_connection_of_a_tls_url_carries_the_ca_and_client_certificate(
    url: str, kinds: set[str], certificates: Certificates
) -> None:
    async with RedisStore(options(url, certificates)) as store:
        made = connections(clients_of(store))
        assert set(made) == kinds
        for connection in made.values():
            assert_verifies_with(connection, certificates)


async def test_sentinels_on_a_plain_port_can_be_named(certificates: Certificates) -> None:
    url = "rediss+sentinel://127.0.0.1:26379/mymaster?sentinel_tls=false"
    async with RedisStore(options(url, certificates)) as store:
        made = connections(clients_of(store))
        assert_verifies_with(made["master"], certificates)
        assert type(made["sentinel 0"]) is Connection


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis+sentinel://h:26379/m", "redis+cluster://h:7000"]
)
async def test_plain_urls_open_no_tls(url: str) -> None:
    async with RedisStore(RedisOptions(url=url)) as store:
        for connection in connections(clients_of(store)).values():
            assert not isinstance(connection, SSLConnection)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "redis+sentinel://h:26379/m", "redis+cluster://h:7000"]
)
def test_tls_files_with_a_plain_url_are_refused(url: str, certificates: Certificates) -> None:
    with pytest.raises(ValueError, match="TLS files are for a rediss://"):
        options(url, certificates)


def test_sentinel_tls_flag_is_checked() -> None:
    with pytest.raises(ValueError, match="sentinel_tls is true or false"):
        RedisOptions(url="rediss+sentinel://h:26379/m?sentinel_tls=maybe")
