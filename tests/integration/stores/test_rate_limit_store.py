"""GCRA buckets in Redis: all-or-nothing charges, concurrent charges batched into
shared calls, refusals without round trips once a bucket is known to be empty, and
counting in memory while Redis is away."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from gateway.settings import Settings
from stores import RedisStore, roundtrips
from stores.redis.rate_limits import (
    KEY_PREFIX,
    MAX_BATCH,
    BucketState,
    Charge,
    RateLimitOptions,
    RateLimitStore,
)
from tests.support.gate import Gate
from tests.support.waiting import until


def _key() -> str:
    return f"test:{secrets.token_hex(6)}"


@pytest.fixture
def limiter(redis: RedisStore) -> RateLimitStore:
    return RateLimitStore(redis)


async def test_a_bucket_allows_its_quota_at_once_then_refuses(limiter: RateLimitStore) -> None:
    key = _key()
    decisions = [await limiter.charge([Charge(key, 3, 60, 1)]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.buckets[0] for d in decisions[:3]] == [
        BucketState(remaining=2, reset_s=20),
        BucketState(remaining=1, reset_s=40),
        BucketState(remaining=0, reset_s=60),
    ]
    # One unit comes back every 20 s.
    assert 19 <= decisions[3].retry_after_s <= 20


async def test_charges_to_several_buckets_are_all_or_nothing(
    limiter: RateLimitStore, redis: RedisStore
) -> None:
    roomy, tight = _key(), _key()
    assert (await limiter.charge([Charge(tight, 2, 60, 2)])).allowed
    refused = await limiter.charge([Charge(roomy, 100, 60, 5), Charge(tight, 2, 60, 1)])
    assert not refused.allowed
    # The roomy bucket was not charged for the refused call.
    assert await redis.client.get(KEY_PREFIX + roomy) is None
    allowed = await limiter.charge([Charge(roomy, 100, 60, 5)])
    assert allowed.buckets[0] == BucketState(remaining=95, reset_s=3)


async def test_a_charge_larger_than_the_quota_is_refused(limiter: RateLimitStore) -> None:
    decision = await limiter.charge([Charge(_key(), 10, 60, 11)])
    assert not decision.allowed
    assert decision.buckets[0] == BucketState(remaining=10, reset_s=0)


async def test_a_refused_charge_takes_its_minimum_if_it_fits(
    limiter: RateLimitStore, redis: RedisStore
) -> None:
    key, login = _key(), _key()
    # Ten units: eight refused, the minimum of three taken instead, in the same call.
    assert (await limiter.charge([Charge(key, 10, 60, 8)])).allowed
    with roundtrips.counting() as trips:
        refused = await limiter.charge([Charge(key, 10, 60, 8, minimum=1), Charge(login, 2, 60, 3)])
    assert trips == {"redis": 1}
    assert not refused.allowed and refused.minimums_taken
    assert refused.buckets[0] == BucketState(remaining=1, reset_s=54)
    # The bucket without a minimum was left alone.
    assert refused.buckets[1] == BucketState(remaining=2, reset_s=0)
    assert await redis.client.get(KEY_PREFIX + login) is None
    # A minimum that does not fit either: nothing taken, and known without a round trip.
    with roundtrips.counting() as trips:
        again = await limiter.charge([Charge(key, 10, 60, 5, minimum=2)])
    assert not again.allowed and not again.minimums_taken
    assert trips == {}


async def test_concurrent_charges_share_calls_and_decide_in_the_order_asked(
    limiter: RateLimitStore, redis: RedisStore
) -> None:
    shared, tight, roomy = _key(), _key(), _key()
    calls: list[int] = []

    def count_calls(store: str, count: int, seconds: float | None) -> None:
        if store == "redis" and count:
            calls.append(count)

    async def charge(charges: list[Charge]) -> tuple[bool, dict[str, int]]:
        with roundtrips.counting() as trips:
            decision = await limiter.charge(charges)
        return decision.allowed, dict(trips)

    # Emptied by another process: this one does not know, Redis decides.
    assert (await RateLimitStore(redis).charge([Charge(tight, 1, 60, 1)])).allowed
    roundtrips.add_observer(count_calls)
    try:
        # 2 x MAX_BATCH requests at once, five units in the shared bucket: the first
        # five asked get one each. One of them also names the empty bucket: refused
        # whole, its unit in the shared bucket is left for the next in line.
        asked = [[Charge(shared, 5, 60, 1)] for _ in range(2 * MAX_BATCH)]
        asked[1] = [Charge(roomy, 5, 60, 1), Charge(shared, 5, 60, 1), Charge(tight, 1, 60, 1)]
        outcomes = await asyncio.gather(*(charge(charges) for charges in asked))
    finally:
        roundtrips.remove_observer(count_calls)
    assert [allowed for allowed, _ in outcomes[:7]] == [True, False, True, True, True, True, False]
    assert not any(allowed for allowed, _ in outcomes[7:])
    assert await redis.client.get(KEY_PREFIX + roomy) is None
    # Each request waited on one round trip; the process made far fewer.
    assert all(trips == {"redis": 1} for _, trips in outcomes)
    assert 2 <= len(calls) <= 3


async def test_units_come_back_as_the_window_passes(limiter: RateLimitStore) -> None:
    key = _key()
    # Two units per 200 ms: one back every 100 ms.
    assert (await limiter.charge([Charge(key, 2, 0.2, 2)])).allowed
    assert not (await limiter.charge([Charge(key, 2, 0.2, 1)])).allowed

    async def allowed_again() -> bool:
        return (await limiter.charge([Charge(key, 2, 0.2, 1)])).allowed

    await until(allowed_again)


async def test_a_known_empty_bucket_is_refused_without_a_round_trip(
    limiter: RateLimitStore,
) -> None:
    key = _key()
    with roundtrips.counting() as counter:
        # The charge that empties the bucket tells this process so.
        assert (await limiter.charge([Charge(key, 1, 60, 1)])).allowed
        first = await limiter.charge([Charge(key, 1, 60, 1)])
        second = await limiter.charge([Charge(key, 1, 60, 1)])
    assert not first.allowed and not second.allowed
    assert counter["redis"] == 1
    assert 0 < second.retry_after_s <= first.retry_after_s <= 60
    # Another bucket in the same call is unknown here, not made up.
    mixed = await limiter.charge([Charge(key, 1, 60, 1), Charge(_key(), 5, 60, 1)])
    assert not mixed.allowed and mixed.buckets[1] is None


async def test_a_bucket_known_to_lack_a_charge_is_refused_without_a_round_trip(
    limiter: RateLimitStore,
) -> None:
    key = _key()
    # 1,000 units a second: one back every millisecond.
    assert (await limiter.charge([Charge(key, 1000, 1, 1000)])).allowed
    emptied = time.monotonic()
    await until(lambda: time.monotonic() > emptied + 0.005)
    # Some units are back, not the 900 this needs: the TAT Redis gave says so.
    with roundtrips.counting() as counter:
        refused = await limiter.charge([Charge(key, 1000, 1, 900)])
    assert not refused.allowed and counter["redis"] == 0
    assert refused.retry_after_s == 1
    assert refused.buckets[0] is not None and refused.buckets[0].remaining < 900


@pytest.fixture
async def gated_redis(settings: Settings) -> AsyncIterator[tuple[Gate, RedisStore]]:
    target = urlsplit(settings.redis_url.get_secret_value())
    assert target.hostname and target.port
    async with Gate(target.hostname, target.port) as gate:
        options = replace(
            settings.redis_options(),
            url=f"redis://127.0.0.1:{gate.port}{target.path}",
            command_timeout=0.5,
            connect_timeout=0.5,
        )
        async with RedisStore(options) as redis:
            yield gate, redis


async def test_limits_are_counted_in_memory_while_redis_is_away(
    gated_redis: tuple[Gate, RedisStore], redis: RedisStore
) -> None:
    gate, through_gate = gated_redis
    limiter = RateLimitStore(through_gate, RateLimitOptions(fallback_retry=0.05))
    key = _key()
    assert (await limiter.charge([Charge(key, 3, 60, 1)])).allowed

    gate.close()
    during = [await limiter.charge([Charge(key, 3, 60, 1)]) for _ in range(4)]
    assert limiter.fallback_active
    # Memory starts from a full bucket: what Redis counted is out of reach.
    assert [d.allowed for d in during] == [True, True, True, False]
    assert during[3].retry_after_s >= 1
    # Minimums hold in memory too: refused for five, one taken.
    fallback = await limiter.charge([Charge(_key(), 3, 60, 5, minimum=1)])
    assert not fallback.allowed and fallback.minimums_taken
    assert fallback.buckets[0] == BucketState(remaining=2, reset_s=20)

    gate.open()

    async def back_in_redis() -> bool:
        await limiter.charge([Charge(_key(), 3, 60, 1)])
        return not limiter.fallback_active

    await until(back_in_redis)
    # Redis's count resumes where it was: one unit used before the outage.
    after = await limiter.charge([Charge(key, 3, 60, 1)])
    assert after.allowed and after.buckets[0] == BucketState(remaining=1, reset_s=40)
    assert limiter.fallback_operations >= 4
    assert await redis.client.exists(KEY_PREFIX + key)


async def test_a_batch_that_fails_is_decided_in_memory_charge_by_charge(
    gated_redis: tuple[Gate, RedisStore],
) -> None:
    gate, through_gate = gated_redis
    limiter = RateLimitStore(through_gate, RateLimitOptions(fallback_retry=60))
    key = _key()
    assert (await limiter.charge([Charge(_key(), 3, 60, 1)])).allowed
    gate.close()
    # Sent together while Redis is away: every request gets its own decision, in order.
    decisions = await asyncio.gather(*(limiter.charge([Charge(key, 3, 60, 1)]) for _ in range(5)))
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert limiter.fallback_active and limiter.fallback_operations == 5


async def test_a_redis_error_is_decided_in_memory_not_raised(
    limiter: RateLimitStore, redis: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    key = _key()
    # A key of another type: the script's GET fails with WRONGTYPE.
    await redis.client.hset(KEY_PREFIX + key, "field", "1")
    decisions = [await limiter.charge([Charge(key, 1, 60, 1)]) for _ in range(2)]
    assert [d.allowed for d in decisions] == [True, False]
    assert not limiter.fallback_active
    assert "redis refused a rate limit script" in caplog.text


# Leases: 320 units a day lend 10 (320 // 32); a unit comes back every 270 s, so
# none does while a test runs, however loaded the machine.
LENDING = RateLimitOptions(lease_divisor=32)
DAY_S = 86_400


def _daily(key: str, cost: int, minimum: int = 0) -> Charge:
    return Charge(key, 320, DAY_S, cost, minimum)


async def _units_ahead(redis: RedisStore, key: str) -> float:
    """How many units Redis counts as spent in the bucket `key` of `_daily`."""
    stored = await redis.client.get(KEY_PREFIX + key)
    assert stored is not None
    seconds, micros = await redis.client.time()
    return (float(stored) - (seconds * 1_000_000 + micros)) / (DAY_S * 1_000_000 / 320)


async def test_a_roomy_bucket_lends_a_lease_spent_without_round_trips(redis: RedisStore) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    with roundtrips.counting() as trips:
        first = await limiter.charge([_daily(key, 2)])
    assert trips == {"redis": 1}
    # Redis counts the lease as spent already; the answer counts the charge alone.
    assert round(await _units_ahead(redis, key)) == 2 + 10
    assert first.buckets[0] == BucketState(remaining=318, reset_s=540)
    with roundtrips.counting() as trips:
        spent = [await limiter.charge([_daily(key, 2)]) for _ in range(5)]
    assert trips == {}
    assert all(d.allowed for d in spent)
    assert [d.buckets[0].remaining for d in spent if d.buckets[0]] == [316, 314, 312, 310, 308]
    # The lease is spent: the next charge asks Redis, and takes another.
    with roundtrips.counting() as trips:
        again = await limiter.charge([_daily(key, 2)])
    assert trips == {"redis": 1} and again.buckets[0] == BucketState(remaining=306, reset_s=3780)
    assert round(await _units_ahead(redis, key)) == 14 + 10


async def test_a_lease_spent_directly_answers_as_its_charge_would(redis: RedisStore) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    # No lease yet: `charge` decides.
    assert limiter.spend_lease(key, 320, DAY_S, 2) is None
    assert not limiter.lease_holds(key, 2)
    await limiter.charge([_daily(key, 2)])
    assert limiter.lease_holds(key, 10) and not limiter.lease_holds(key, 11)
    with roundtrips.counting() as trips:
        spent = [limiter.spend_lease(key, 320, DAY_S, 2) for _ in range(5)]
    assert trips == {}
    # As `test_a_roomy_bucket_lends_a_lease_spent_without_round_trips` charges them.
    assert [state.remaining for state in spent if state] == [316, 314, 312, 310, 308]
    assert limiter.spend_lease(key, 320, DAY_S, 2) is None
    assert round(await _units_ahead(redis, key)) == 2 + 10


async def test_concurrent_charges_take_one_lease_between_them(redis: RedisStore) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    decisions = await asyncio.gather(*(limiter.charge([_daily(key, 2)]) for _ in range(8)))
    assert all(d.allowed for d in decisions)
    # Eight charges went to Redis together; only the first asked for a lease.
    assert round(await _units_ahead(redis, key)) == 8 * 2 + 10


async def test_a_bucket_less_than_half_full_lends_nothing(redis: RedisStore) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    # 150 of 320 spent: a lease of 10 after a charge of 2 would leave 158, under half.
    assert (await limiter.charge([_daily(key, 150)])).allowed
    for expected in (168, 166):
        with roundtrips.counting() as trips:
            decision = await limiter.charge([_daily(key, 2)])
        assert trips == {"redis": 1}
        assert decision.buckets[0] is not None and decision.buckets[0].remaining == expected
    assert round(await _units_ahead(redis, key)) == 154


async def test_a_lease_short_of_a_charge_pays_part_of_it(redis: RedisStore) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    await limiter.charge([_daily(key, 2)])
    await limiter.charge([_daily(key, 4)])
    # Four units held here, nine asked: Redis is charged five, and lends ten more.
    with roundtrips.counting() as trips:
        decision = await limiter.charge([_daily(key, 9)])
    assert trips == {"redis": 1}
    assert decision.buckets[0] is not None and decision.buckets[0].remaining == 320 - 15
    assert round(await _units_ahead(redis, key)) == 15 + 10


async def test_a_refused_charge_gives_the_lease_back_or_takes_its_minimum_from_it(
    redis: RedisStore,
) -> None:
    limiter, key = RateLimitStore(redis, LENDING), _key()
    await limiter.charge([_daily(key, 2)])
    # Another process spends all but a unit of what Redis has left (308).
    assert (await RateLimitStore(redis).charge([_daily(key, 307)])).allowed
    # Ten held, forty asked: Redis lacks the other thirty, and the ten stay here.
    refused = await limiter.charge([_daily(key, 40)])
    assert not refused.allowed and not refused.minimums_taken
    with roundtrips.counting() as trips:
        assert (await limiter.charge([_daily(key, 6)])).allowed
    assert trips == {}
    # Four held: a charge refused (known here: Redis said how far ahead the bucket is)
    # takes its minimum of three from them.
    with roundtrips.counting() as trips:
        minimum = await limiter.charge([_daily(key, 40, minimum=3)])
    assert not minimum.allowed and minimum.minimums_taken and trips == {}
    with roundtrips.counting() as trips:
        assert (await limiter.charge([_daily(key, 1)])).allowed
    assert trips == {}
    # Redis's last unit, then nothing.
    assert (await limiter.charge([_daily(key, 1)])).allowed
    assert not (await limiter.charge([_daily(key, 1)])).allowed


async def test_processes_sharing_a_bucket_never_get_more_than_its_quota(
    redis: RedisStore,
) -> None:
    first, second, key = RateLimitStore(redis, LENDING), RateLimitStore(redis, LENDING), _key()
    allowed = 0
    for _ in range(400):
        for limiter in (first, second):
            allowed += (await limiter.charge([_daily(key, 1)])).allowed
    # What each lease held was spent by its process; no unit twice, none left over.
    assert allowed == 320


async def test_a_lease_ends_once_its_units_would_have_come_back(redis: RedisStore) -> None:
    # 320,000 units a second lend 10,000, which take 1/32 s to come back.
    limiter, key = RateLimitStore(redis, LENDING), _key()
    charge = Charge(key, 320_000, 1, 1)
    assert (await limiter.charge([charge])).allowed
    charged = 1

    async def asks_redis() -> bool:
        nonlocal charged
        with roundtrips.counting() as trips:
            assert (await limiter.charge([charge])).allowed
        charged += 1
        return bool(trips)

    await until(asks_redis)
    # Asked again with most of the lease unspent: it had ended, not run out.
    assert charged < 10_000
