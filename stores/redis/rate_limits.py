"""Rate limits in Redis: GCRA buckets, charged atomically by one Lua script, with an
in-process fallback while Redis is unreachable.

A bucket allows `limit` units per `window` seconds, all of them at once if they are
unused (a burst of the whole quota). GCRA keeps one number per bucket, its
theoretical arrival time (TAT): charging `cost` units moves the TAT forward by
`cost * window / limit`, and a charge is refused when it would put the TAT more
than `window` ahead of now. Times come from Redis's clock, so every gateway agrees.

    ratelimit:{rl}:<bucket>   the TAT in microseconds; expires once the bucket is full again

One hash tag for every bucket: a script's keys must share a slot in Redis Cluster, and
one call charges a caller's bucket and its address's together. Rate limits thus live on
one shard of a cluster: one small script call per request at most.

A request's charge names several buckets at once (a caller's bucket and the login
bucket of its address): all of them or none. A charge may name a minimum, taken
instead when the charge as a whole is refused (if every minimum fits): a request
refused for its operation's cost still pays for having been read, in the same round
trip. Charges asked for while a call is out wait for it and then go together in the
next one (at most `MAX_BATCH`), each still all or nothing, in the order asked: under
load, many requests share one round trip, and their decisions are the ones separate
calls in that order would have made.

Each answer tells this process how far ahead a bucket's TAT was, which it remembers
(as a time on its own clock, taken before the call: never later than the true TAT)
while that TAT is in the future. A charge that this TAT already refuses is refused
without a round trip: a flood of refused requests costs no Redis call until its
bucket has room for one again. That is never wrong, since a bucket's TAT only moves
forward.

A charge to one bucket that leaves it at least half full may also take a lease: a
share of the quota (`RateLimitOptions.lease_divisor`) charged in the same call and
kept in this process, which spends it on the caller's next requests without a round
trip. A lease lives as long as its units take to come back, then what is left of it
is dropped; the units it holds are in Redis's TAT already, so over time processes
together hand out no more than the quota; spent up to a lease's lifetime after Redis
counted them, one window of requests can hold, besides its quota, what each process
leased just before it (one lease per process and bucket at a time). A bucket less
than half full gets no lease: near its limit a caller is charged in Redis request by
request, exactly as without leases. A bucket's state in an answer counts the lease's
unspent units as left, as Redis would say of the bucket had they not been taken ahead.

While Redis is unreachable, buckets live in this process's memory, so each gateway
enforces the limits on its own (N replicas allow up to N times the quota) until
Redis answers again; the memory is then forgotten.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stores import roundtrips
from stores.redis.store import RedisStore

logger = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit:{rl}:"

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,
    TimeoutError,
)

# One call charges a batch of groups, each all or nothing, in turn (a later group sees
# the earlier groups' charges). KEYS: every group's buckets, one group after another.
# ARGV: per group, its number of buckets, then limit, window (us), cost, minimum and
# lease for each of them. Replies, per group: allowed, retry after (us), minimums
# taken, then per bucket TAT - now (us) and the lease taken (0 or the lease asked):
# the charged TAT when allowed (with the lease if it leaves the bucket at least half
# full); when refused, the TAT after the minimums if they were taken, the untouched
# one otherwise.
_CHARGE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local reply = {}
local key, arg = 0, 1
while arg <= #ARGV do
  local count = tonumber(ARGV[arg])
  local tats, news, mins = {}, {}, {}
  local allowed, retry, fits, wanted = 1, 0, 1, 0
  local leases = {}
  for i = 1, count do
    local at = arg + 5 * i - 4
    local limit, window = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local cost, minimum = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
    leases[i] = {tonumber(ARGV[at + 4]), window / limit, window}
    local tat = tonumber(redis.call('GET', KEYS[key + i]) or '0')
    if tat < now then tat = now end
    local new = tat + cost * window / limit
    tats[i], news[i], mins[i] = tat, new, tat + minimum * window / limit
    local wait = new - window - now
    if wait > 0 then
      allowed = 0
      if wait > retry then retry = wait end
    end
    if minimum > 0 then wanted = 1 end
    if mins[i] - window - now > 0 then fits = 0 end
  end
  local taken = 0
  if allowed == 0 then
    if wanted == 1 and fits == 1 then
      taken = 1
      news = mins
    else
      news = tats
    end
  end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = math.ceil(retry)
  reply[#reply + 1] = taken
  for i = 1, count do
    local tat = tats[i]
    local leased = 0
    if allowed == 1 and leases[i][1] > 0 then
      local further = news[i] + leases[i][1] * leases[i][2]
      if further - now <= leases[i][3] / 2 then
        news[i] = further
        leased = leases[i][1]
      end
    end
    if news[i] > tat then
      tat = news[i]
      local ttl_ms = math.ceil((tat - now) / 1000)
      redis.call('SET', KEYS[key + i], string.format('%.0f', tat), 'PX', ttl_ms)
    end
    reply[#reply + 1] = math.ceil(tat - now)
    reply[#reply + 1] = leased
  end
  key = key + count
  arg = arg + 1 + 5 * count
end
return reply
"""

# Charges waiting while a batch is in Redis go together in the next call, at most this
# many (a script runs alone in Redis: a batch must stay short).
MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class Charge:
    """`cost` units against the bucket `key`, which allows `limit` per `window_s`;
    `minimum` units (at most `cost`) instead if the call is refused; `lease` units
    more, when allowed, if the bucket stays at least half full (see the module)."""

    key: str
    limit: int
    window_s: float
    cost: int
    minimum: int = 0
    lease: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        if self.cost < 0:
            raise ValueError("cost must be 0 or more")
        if not 0 <= self.minimum <= self.cost:
            raise ValueError("minimum must be between 0 and cost")
        if self.lease < 0:
            raise ValueError("lease must be 0 or more")

    @property
    def interval_us(self) -> float:
        """How long one unit takes to come back."""
        return self.window_s * 1_000_000 / self.limit

    @property
    def window_us(self) -> float:
        return self.window_s * 1_000_000


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket after a charge: units left now, and seconds until it is full again."""

    remaining: int
    reset_s: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    """All of a call's charges were made, or none was. `retry_after_s` (0 when
    allowed) is how long until the same charges would be allowed. A bucket's state
    is None when it is unknown: a refusal made in this process knows only the
    buckets it refused."""

    allowed: bool
    retry_after_s: int
    buckets: tuple[BucketState | None, ...]
    # Refused, but the charges' minimums were taken.
    minimums_taken: bool = False


def _state(charge: Charge, ahead_us: float) -> BucketState:
    """The state of a bucket whose TAT is `ahead_us` past now."""
    return _bucket_state(charge.window_us, charge.interval_us, ahead_us)


def _bucket_state(window_us: float, interval_us: float, ahead_us: float) -> BucketState:
    ahead_us = max(ahead_us, 0.0)
    remaining = int((window_us - ahead_us) // interval_us)
    return BucketState(remaining=max(remaining, 0), reset_s=math.ceil(ahead_us / 1_000_000))


def _less(charge: Charge, units: int) -> Charge:
    """`charge` with `units` (fewer than its cost) already paid."""
    if not units:
        return charge
    return replace(charge, cost=charge.cost - units, minimum=max(charge.minimum - units, 0))


def _seconds(us: float) -> int:
    """Whole seconds for Retry-After: rounded up, at least one."""
    return max(1, math.ceil(us / 1_000_000))


@dataclass(frozen=True, kw_only=True)
class RateLimitOptions:
    """How the limiter behaves while Redis is away, and how much it remembers."""

    # While Redis is away, how long to count in memory before trying it again (seconds).
    fallback_retry: float = 1.0
    # Buckets this process keeps: the TATs it learnt, its leases, and every bucket
    # during an outage.
    remembered: int = 100_000
    # A lease is a bucket's quota divided by this (0: no leases), and is only taken
    # when it holds at least the charge that takes it: a viewer's 100,000 points a
    # minute lease 3,125, a hundred requests of `{ __typename }`.
    lease_divisor: int = 32

    def __post_init__(self) -> None:
        if self.fallback_retry <= 0:
            raise ValueError("fallback_retry must be positive")
        if self.remembered < 1:
            raise ValueError("remembered must be at least 1")
        if self.lease_divisor < 0:
            raise ValueError("lease_divisor must be 0 or more")

    def lease_for(self, charge: Charge) -> int:
        """The lease a charge to one bucket asks for along with it."""
        if not self.lease_divisor:
            return 0
        lease = charge.limit // self.lease_divisor
        return lease if lease >= charge.cost else 0


DEFAULT_RATE_LIMIT_OPTIONS = RateLimitOptions()


class _Lease:
    """Units of a bucket charged in Redis ahead of the requests that spend them here."""

    __slots__ = ("expires", "tat", "units")

    def __init__(self, units: int, tat: float, expires: float) -> None:
        self.units = units
        # The bucket's TAT had this process's requests been charged in Redis one by one,
        # on this process's clock: what answers say of the bucket.
        self.tat = tat
        self.expires = expires

    def spend(self, cost: int, limit: int, window_s: float, now: float) -> BucketState:
        """Take `cost` units from the lease of a bucket of `limit` per `window_s`; the
        bucket as charging Redis would leave it."""
        interval_us = window_s * 1_000_000 / limit
        self.units -= cost
        self.tat = max(self.tat, now) + cost * interval_us / 1e6
        return _bucket_state(window_s * 1_000_000, interval_us, (self.tat - now) * 1e6)


class RateLimitStore:
    """GCRA buckets: Redis while it answers, this process's memory while it does not."""

    __slots__ = (
        "_blocked",
        "_fallback_active",
        "_fallback_operations",
        "_leases",
        "_leasing",
        "_memory",
        "_options",
        "_queued",
        "_redis",
        "_retry_at",
        "_sender",
    )

    def __init__(
        self, redis: RedisStore, options: RateLimitOptions = DEFAULT_RATE_LIMIT_OPTIONS
    ) -> None:
        self._redis = redis
        self._options = options
        # What Redis said of buckets whose TAT is ahead: key -> TAT as monotonic time.
        self._blocked: OrderedDict[str, float] = OrderedDict()
        # Units taken ahead, by bucket key.
        self._leases: dict[str, _Lease] = {}
        # Buckets whose lease is being asked for.
        self._leasing: set[str] = set()
        # The fallback's buckets: key -> TAT in microseconds of this process's clock.
        self._memory: OrderedDict[str, float] = OrderedDict()
        self._fallback_active = False
        self._fallback_operations = 0
        self._retry_at = 0.0
        # Charges waiting for the batch in Redis to come back, and what sends them.
        self._queued: list[tuple[Sequence[Charge], asyncio.Future[list[int]]]] = []
        self._sender: asyncio.Task[None] | None = None

    @property
    def fallback_active(self) -> bool:
        """True from the first failed Redis call until Redis answers again."""
        return self._fallback_active

    @property
    def fallback_operations(self) -> int:
        """Charges decided in memory since this store was made."""
        return self._fallback_operations

    def spend_lease(self, key: str, limit: int, window_s: float, cost: int) -> BucketState | None:
        """`cost` units from this process's lease of bucket `key` (`limit` per `window_s`),
        if it holds them: the bucket's state after, as charging Redis would leave it,
        with no round trip and nothing more to build. None: `charge` decides."""
        now = time.monotonic()
        lease = self._lease_holding(key, cost, now)
        return None if lease is None else lease.spend(cost, limit, window_s, now)

    def lease_holds(self, key: str, cost: int) -> bool:
        """Whether this process's lease of bucket `key` holds `cost` units now."""
        return self._lease_holding(key, cost, time.monotonic()) is not None

    def _lease_holding(self, key: str, cost: int, now: float) -> _Lease | None:
        if not self._leases:
            return None
        lease = self._live_lease(key, now)
        return lease if lease is not None and lease.units >= cost else None

    def known_refusal(self, charge: Charge) -> RateDecision | None:
        """The refusal `charge` would get from what this process knows, without a round
        trip; None if it knows of none (which does not mean Redis would allow it)."""
        lease = self._live_lease(charge.key, time.monotonic()) if self._leases else None
        if lease is not None:
            if lease.units >= charge.cost:
                return None
            charge = _less(charge, lease.units)
        return self._refused_locally([charge])

    async def charge(self, charges: Sequence[Charge]) -> RateDecision:
        """Make every charge, or none if any bucket lacks the units; one round trip at
        most, none when a lease of this process holds the units."""
        if len(charges) == 1 and self._options.lease_divisor:
            return await self._charge_leasing(charges[0])
        decision, _ = await self._charge(charges)
        return decision

    async def _charge_leasing(self, charge: Charge) -> RateDecision:
        """One bucket's charge: from its lease if that holds enough, otherwise in Redis
        with what the lease holds taken off, and a new lease asked for along with it."""
        now = time.monotonic()
        lease = self._live_lease(charge.key, now) if self._leases else None
        held = 0
        if lease is not None:
            if lease.units >= charge.cost:
                state = lease.spend(charge.cost, charge.limit, charge.window_s, now)
                return RateDecision(allowed=True, retry_after_s=0, buckets=(state,))
            held, lease.units = lease.units, 0
        # One lease asked for at a time: requests that find the lease spent together
        # would otherwise each take one, and hold the bucket that much further ahead.
        leasing = 0 if charge.key in self._leasing else self._options.lease_for(charge)
        asked = _less(charge, held)
        if leasing:
            asked = replace(asked, lease=leasing)
            self._leasing.add(charge.key)
        try:
            decision, answer = await self._charge([asked])
        except BaseException:
            if lease is not None:
                lease.units += held
            raise
        finally:
            if leasing:
                self._leasing.discard(charge.key)
        if lease is not None and not (decision.allowed or decision.minimums_taken):
            if 0 < charge.minimum <= held:
                # The minimum was held here: taken from the lease, not asked of Redis.
                lease.units += held - charge.minimum
                decision = replace(decision, minimums_taken=True)
            else:
                lease.units += held
        if answer is None:
            return decision
        ahead_us, leased, asked_at = answer
        now = time.monotonic()
        current = self._live_lease(charge.key, now)
        if leased:
            expires = asked_at + leased * charge.interval_us / 1e6
            if current is None:
                current = self._leases[charge.key] = _Lease(0, asked_at, expires)
                self._forget_leases(now)
            current.units += leased
            current.expires = expires
        if current is None or not current.units:
            return decision
        # Redis's TAT counts the units held here as spent; answers do not.
        answered_us = ahead_us - current.units * charge.interval_us
        current.tat = max(current.tat, asked_at + answered_us / 1e6)
        return replace(decision, buckets=(_state(charge, answered_us),))

    def _live_lease(self, key: str, now: float) -> _Lease | None:
        lease = self._leases.get(key)
        if lease is not None and now >= lease.expires:
            del self._leases[key]
            return None
        return lease

    def _forget_leases(self, now: float) -> None:
        """Keep at most `remembered` leases: expired ones go first, then the oldest."""
        if len(self._leases) <= self._options.remembered:
            return
        for key in [key for key, lease in self._leases.items() if now >= lease.expires]:
            del self._leases[key]
        while len(self._leases) > self._options.remembered:
            del self._leases[next(iter(self._leases))]

    async def _charge(
        self, charges: Sequence[Charge]
    ) -> tuple[RateDecision, tuple[int, int, float] | None]:
        """The decision, and for a single charge decided in Redis, what Redis said of its
        bucket: TAT - now (us), the lease taken, and when it was asked (monotonic)."""
        if not charges:
            return RateDecision(allowed=True, retry_after_s=0, buckets=()), None
        blocked = self._refused_locally(charges)
        if blocked is not None and (
            not any(c.minimum for c in charges)
            or self._refused_locally([replace(c, cost=c.minimum) for c in charges]) is not None
        ):
            # Neither the charges nor their minimums fit: no round trip.
            return blocked, None
        asked_at = time.monotonic()
        if not self._fallback_active or asked_at >= self._retry_at:
            try:
                decision, aheads, leased = await self._charge_in_redis(charges)
            except _UNAVAILABLE_ERRORS as exc:
                self._enter_fallback(exc)
            except (RedisError, RedisClusterException) as exc:
                # Redis answered with an error (a bug, or a key of another type): count
                # this call in memory rather than fail the request over its rate limit.
                logger.error("redis refused a rate limit script: %s", exc)
            else:
                if self._fallback_active:
                    self._leave_fallback()
                self._remember(charges, aheads, asked_at)
                answer = (aheads[0], leased[0], asked_at) if len(charges) == 1 else None
                return decision, answer
        self._fallback_operations += 1
        return self._charge_in_memory(charges), None

    async def _charge_in_redis(
        self, charges: Sequence[Charge]
    ) -> tuple[RateDecision, list[int], list[int]]:
        """Charge in Redis, with whatever other charges are waiting: one script call
        serves every request that asked while the previous call was out, so under load
        a request pays for a fraction of a round trip, and alone for one, as before.
        Besides the decision: each bucket's TAT - now (us), and the lease it took."""
        waiter: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queued.append((charges, waiter))
        if self._sender is None:
            # Its own context: the call is no one request's (its round trip is counted
            # once by `_send_queued`, and in each request below).
            self._sender = asyncio.get_running_loop().create_task(
                self._send_queued(), context=contextvars.Context()
            )
        roundtrips.record("redis", observed=False)
        allowed, retry_us, taken, *per_bucket = await waiter
        aheads, leased = per_bucket[0::2], per_bucket[1::2]
        decision = RateDecision(
            allowed=bool(allowed),
            retry_after_s=0 if allowed else _seconds(retry_us),
            buckets=tuple(_state(c, a) for c, a in zip(charges, aheads, strict=True)),
            minimums_taken=bool(taken),
        )
        return decision, aheads, leased

    async def _send_queued(self) -> None:
        """Send the waiting charges, a batch per call, until none wait."""
        try:
            while self._queued:
                batch = [item for item in self._queued[:MAX_BATCH] if not item[1].done()]
                del self._queued[:MAX_BATCH]
                if not batch:
                    continue
                try:
                    replies = await self._call_script([charges for charges, _ in batch])
                except Exception as exc:
                    # Each request decides what a failure means (see `charge`).
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                except BaseException:
                    for _, waiter in batch:
                        waiter.cancel()
                    raise
                for (_, waiter), reply in zip(batch, replies, strict=True):
                    if not waiter.done():
                        waiter.set_result(reply)
        finally:
            self._sender = None
            for _, waiter in self._queued:
                waiter.cancel()
            self._queued.clear()

    async def _call_script(self, groups: Sequence[Sequence[Charge]]) -> list[list[int]]:
        """One script call charging each group all or nothing; each group's reply."""
        script = self._redis.script(_CHARGE_SCRIPT)
        keys: list[str] = []
        args: list[float | int] = []
        for charges in groups:
            args.append(len(charges))
            for charge in charges:
                keys.append(KEY_PREFIX + charge.key)
                args += [charge.limit, charge.window_us, charge.cost, charge.minimum, charge.lease]
        roundtrips.record("redis")
        reply = [int(value) for value in await script(keys=keys, args=args)]
        replies: list[list[int]] = []
        start = 0
        for charges in groups:
            end = start + 3 + 2 * len(charges)
            replies.append(reply[start:end])
            start = end
        return replies

    def _remember(self, charges: Sequence[Charge], aheads: Sequence[int], asked_at: float) -> None:
        """Note each bucket's TAT, as a time no later than the true one."""
        for charge, ahead_us in zip(charges, aheads, strict=True):
            if ahead_us > 0:
                self._blocked[charge.key] = asked_at + ahead_us / 1e6
                self._blocked.move_to_end(charge.key)
            else:
                self._blocked.pop(charge.key, None)
        while len(self._blocked) > self._options.remembered:
            self._blocked.popitem(last=False)

    def _refused_locally(self, charges: Sequence[Charge]) -> RateDecision | None:
        if not self._blocked:
            return None
        now = time.monotonic()
        retry_s = 0.0
        states: list[BucketState | None] = []
        for charge in charges:
            tat = self._blocked.get(charge.key)
            if tat is not None and tat <= now:
                del self._blocked[charge.key]
                tat = None
            if tat is None:
                states.append(None)
                continue
            ahead_us = (tat - now) * 1e6
            states.append(_state(charge, ahead_us))
            if charge.cost > 0:
                # GCRA on what is known: the charge fits once the TAT it would make is
                # no more than a window ahead.
                wait_us = ahead_us + charge.cost * charge.interval_us - charge.window_us
                retry_s = max(retry_s, wait_us / 1e6)
        if retry_s <= 0:
            return None
        return RateDecision(
            allowed=False, retry_after_s=_seconds(retry_s * 1e6), buckets=tuple(states)
        )

    def _charge_in_memory(self, charges: Sequence[Charge]) -> RateDecision:
        now = time.time() * 1e6
        tats = [max(self._memory.get(c.key, 0.0), now) for c in charges]
        news = [tat + c.cost * c.interval_us for tat, c in zip(tats, charges, strict=True)]
        waits = [new - c.window_us - now for new, c in zip(news, charges, strict=True)]
        allowed = all(wait <= 0 for wait in waits)
        taken = False
        if not allowed:
            mins = [tat + c.minimum * c.interval_us for tat, c in zip(tats, charges, strict=True)]
            taken = any(c.minimum for c in charges) and all(
                new - c.window_us - now <= 0 for new, c in zip(mins, charges, strict=True)
            )
            news = mins if taken else tats
        if allowed or taken:
            for charge, new in zip(charges, news, strict=True):
                self._memory[charge.key] = new
                self._memory.move_to_end(charge.key)
            while len(self._memory) > self._options.remembered:
                self._memory.popitem(last=False)
        return RateDecision(
            allowed=allowed,
            retry_after_s=0 if allowed else _seconds(max(waits)),
            buckets=tuple(_state(c, t - now) for c, t in zip(charges, news, strict=True)),
            minimums_taken=taken,
        )

    def _enter_fallback(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._options.fallback_retry
        if not self._fallback_active:
            self._fallback_active = True
            logger.warning(
                "redis unreachable (%s): rate limits are counted in this process's memory"
                " until it answers",
                str(exc) or type(exc).__name__,
            )

    def _leave_fallback(self) -> None:
        self._fallback_active = False
        self._memory.clear()
        logger.warning(
            "redis answers again: rate limits are back in Redis"
            " (%d charges were decided in memory)",
            self._fallback_operations,
        )
