"""Redis URLs: one server, Sentinel and Cluster (stores.redis.clients)."""

from __future__ import annotations

import pytest

from stores.redis import RedisOptions
from stores.redis.clients import parse_redis_url


def test_a_plain_url_goes_to_redis_py_as_it_is() -> None:
    for url in ("redis://:pw@127.0.0.1:6379/3", "rediss://h:6380/0", "unix:///run/redis.sock"):
        target = parse_redis_url(url)
        assert (target.topology, target.url) == ("server", url)


def test_sentinel_url_names_sentinels_service_and_database() -> None:
    target = parse_redis_url(
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
        "?sentinel_password=watch"
    )
    assert target.topology == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (target.service, target.db) == ("mymaster", 2)
    assert (target.username, target.password) == ("app", "s@cret")
    assert target.sentinel_password == "watch"
    assert "s@cret" not in repr(target) and "watch" not in repr(target)
    assert parse_redis_url("redis+sentinel://h:1/svc").db == 0


def test_cluster_url_names_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@a:7000,b:7001")
    assert target.topology == "cluster"
    assert target.nodes == (("a", 7000), ("b", 7001))
    assert target.password == "pw"
    assert parse_redis_url("redis+cluster://a").nodes == (("a", 6379),)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://h:1/0", "starts with"),
        ("redis+sentinel://h:1", "/<service name>"),
        ("redis+sentinel://h:1/svc/x", "must be a number"),
        ("redis+sentinel:///svc", "at least one host"),
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+cluster://h:port", "not host:port"),
    ],
)
def test_a_malformed_url_is_refused_with_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        RedisOptions(url=url)
