"""`rediss+cluster://` and `rediss+sentinel://`: a Redis Cluster and a Sentinel set-up
that speak TLS only (clients must show a certificate), with a throwaway CA."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from stores.redis import RedisOptions, RedisStore
from tests.support.redis_topologies import ClusterSetup, SentinelSetup
from tests.support.tls import Certificates, make_certificates, scratch_directory

VERIFY_FAILED = "TLS certificate verification failed"


@pytest.fixture(scope="module")
def certificates() -> Iterator[Certificates]:
    with scratch_directory() as directory:
        yield make_certificates(directory)


@pytest.fixture(scope="module")
def tls_cluster(certificates: Certificates) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tls=certificates)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def tls_sentinel(certificates: Certificates) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tls=certificates)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


def options(url: str, certificates: Certificates, ca: Path) -> RedisOptions:
    return RedisOptions(
        url=url,
        tls_ca_file=str(ca),
        tls_cert_file=str(certificates.client_cert),
        tls_key_file=str(certificates.client_key),
    )


async def round_trip(store: RedisStore) -> None:
    # Keys on different slots, so more than one node answers under the cluster.
    values = {f"tls-{index}-{secrets.token_hex(4)}": str(index).encode() for index in range(8)}
    for key, value in values.items():
        await store.client.set(key, value, ex=60)
    for key, value in values.items():
        assert await store.client.get(key) == value


async def test_a_cluster_over_tls(tls_cluster: ClusterSetup, certificates: Certificates) -> None:
    assert tls_cluster.url.startswith("rediss+cluster://")
    async with RedisStore(options(tls_cluster.url, certificates, certificates.ca)) as store:
        probe = await store.probe()
        assert probe.up, probe.error
        assert probe.details == {"topology": "cluster"}
        await round_trip(store)


async def test_a_cluster_with_the_wrong_ca_is_refused_and_says_why(
    tls_cluster: ClusterSetup, certificates: Certificates
) -> None:
    async with RedisStore(options(tls_cluster.url, certificates, certificates.other_ca)) as store:
        probe = await store.probe()
    assert not probe.up
    assert probe.error is not None and probe.error.startswith(VERIFY_FAILED), probe.error


async def test_a_sentinel_master_over_tls(
    tls_sentinel: SentinelSetup, certificates: Certificates
) -> None:
    assert tls_sentinel.url.startswith("rediss+sentinel://")
    async with RedisStore(options(tls_sentinel.url, certificates, certificates.ca)) as store:
        probe = await store.probe()
        assert probe.up, probe.error
        assert probe.details == {"topology": "sentinel"}
        await round_trip(store)


async def test_a_sentinel_with_the_wrong_ca_is_refused(
    tls_sentinel: SentinelSetup, certificates: Certificates
) -> None:
    async with RedisStore(options(tls_sentinel.url, certificates, certificates.other_ca)) as store:
        probe = await store.probe()
    assert not probe.up
    assert probe.error is not None
