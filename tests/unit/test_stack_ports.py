"""The local stacks' and the bench servers' ports stay clear of the ports the kernel hands
to client sockets."""

from __future__ import annotations

from pathlib import Path

from bench import harness
from infra.local.profiles import PROFILES


def _ephemeral_range() -> range:
    found = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low, high = (int(part) for part in found.read_text().split())
    return range(low, high + 1)


def test_no_server_port_is_one_a_client_connection_may_hold() -> None:
    ephemeral = _ephemeral_range()
    ports = [
        port
        for profile in PROFILES.values()
        for port in (profile.postgres_port, profile.redis_port, profile.bolt_port)
    ]
    ports += [
        harness.GATEWAY_PORT,
        harness.FLOOR_PORT,
        harness.PEER_PORT,
        harness.STOCK_GATEWAY_PORT,
        harness.CACHED_GATEWAY_PORT,
    ]
    assert len(set(ports)) == len(ports)
    assert [port for port in ports if port in ephemeral] == []
