"""Rounds measure the servers in turn, reversing the order every other round."""

from __future__ import annotations

from bench.harness import in_round_order


def test_every_other_round_measures_the_servers_in_reverse() -> None:
    servers = {"gateway": 1, "gateway-before": 2, "floor": 3}
    orders = [in_round_order(servers, round_number) for round_number in range(4)]
    assert orders == [
        ["gateway", "gateway-before", "floor"],
        ["floor", "gateway-before", "gateway"],
        ["gateway", "gateway-before", "floor"],
        ["floor", "gateway-before", "gateway"],
    ]
