"""Rounds measure the servers in turn, reversing the order every other round, after
unmeasured rounds that last until the stores serve at a steady pace."""

from __future__ import annotations

from bench.harness import in_round_order, rounds_until_steady


def test_every_other_round_measures_the_servers_in_reverse() -> None:
    servers = {"gateway": 1, "gateway-before": 2, "floor": 3}
    orders = [in_round_order(servers, round_number) for round_number in range(4)]
    assert orders == [
        ["gateway", "gateway-before", "floor"],
        ["floor", "gateway-before", "gateway"],
        ["gateway", "gateway-before", "floor"],
        ["floor", "gateway-before", "gateway"],
    ]


def test_warm_up_rounds_last_until_two_rounds_in_a_row_gain_at_most_five_percent() -> None:
    # S3's rounds after the stores started: a pause in the warming (2,093 then 2,090)
    # before it went on, then steady.
    paces = [1_148, 1_666, 1_992, 2_093, 2_090, 2_400, 2_450, 2_440, 9_999]
    ran: list[int] = []

    def run_round(number: int) -> int:
        ran.append(number)
        return paces[number]

    assert rounds_until_steady(run_round, most=10) == paces[:8]
    assert ran == list(range(8))


def test_warm_up_rounds_stop_at_the_most_allowed_while_still_speeding_up() -> None:
    assert rounds_until_steady(lambda number: 1_000 * 2**number, most=3) == [1_000, 2_000, 4_000]


def test_one_warm_up_round_allowed_is_one_run() -> None:
    assert rounds_until_steady(lambda number: 500, most=1) == [500]


def test_slower_rounds_count_as_steady() -> None:
    # Noise can make the next round slower; that is not warming any more.
    paces = [3_000, 2_800, 2_900, 9_999]
    assert rounds_until_steady(lambda number: paces[number], most=10) == paces[:3]
