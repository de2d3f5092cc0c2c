"""Who is charged what: the rate limit policy by role, per user or per client address.

Every caller has one bucket: a signed-in caller the bucket of its user (shared by
all of the user's keys and sessions, with the quota of the role the credential
carries), an anonymous caller the bucket of its address. `login` has a bucket of
its own per address, charged once per `login` field an operation holds, whoever
sends it: each attempt costs a PostgreSQL query, and guessing keys must be slow.

An API key that fails to check out (with a request, or in a WebSocket's
`connection_init`) costs its address a login attempt too, after the fact: once the
address has none left, a gateway that knows it refuses the address's API keys
without asking PostgreSQL. Session tokens are checked in Redis, cheaply: not counted.

Units are cost points: a request is charged `RateLimitPolicy.request` points plus
its operation's estimated cost (`RequestContext.cost.requested`), at least 1, plus
its body's points, in one charge; a request refused for its operation's cost, or one
that never executes, is charged its own and its body's points alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass

from resolvers.auth import Principal, Role, authenticate
from resolvers.context import Stores
from resolvers.errors import ClientError, ErrorCode
from stores.redis.rate_limits import BucketState, Charge, RateDecision, RateLimitStore

ANONYMOUS_POLICY = "anonymous"
LOGIN_POLICY = "login"
# Callers whose bucket is kept at hand: past this, the lot is forgotten and built again.
_REMEMBERED_BUCKETS = 4096


@dataclass(frozen=True, kw_only=True)
class RateLimitPolicy:
    """Quotas in cost points per `window_s`; `login` counts login attempts.

    A quota is also the most one request may cost (GCRA's burst is the whole quota):
    each default holds at least the request cost limit's maximum (25,000; the standard
    introspection query is about 4,100) and a request's own points, so anything the
    cost limit lets through can run. Per minute, an anonymous address gets one
    operation at that maximum, or 1,150 of the cheapest requests; a viewer four, or
    3,800.
    """

    enabled: bool = True
    window_s: int = 60
    anonymous: int = 30_000
    viewer: int = 100_000
    agent: int = 100_000
    operator: int = 250_000
    admin: int = 250_000
    login: int = 20
    # Points every request costs besides its operation's estimate: the work of taking it
    # in, parsing and answering it, which the cost model (objects) leaves out. Measured
    # in bench/: about 1 ms a request, where S2 spends about 0.04 ms per point. A request
    # that never executes (malformed, over a limit) costs this alone.
    request: int = 25
    # One point more per this many bytes of a request's body (0: none): taking a body in
    # and parsing its document grow with its length, and a document refused unparsed
    # again (gateway.limits.known_refusals) was still read. About what parsing costs
    # at S2's 0.04 ms a point: A1's 1,000 aliases (16.5 kB, refused at the token limit)
    # cost 528.
    body_bytes_per_point: int = 32

    def __post_init__(self) -> None:
        if self.window_s < 1:
            raise ValueError("window_s must be at least 1 second")
        quotas = (self.anonymous, self.viewer, self.agent, self.operator, self.admin, self.login)
        if min(quotas) < 1:
            raise ValueError("every quota must be at least 1")
        if self.request < 0:
            raise ValueError("request must be at least 0")
        if self.body_bytes_per_point < 0:
            raise ValueError("body_bytes_per_point must be at least 0")

    def request_cost(self, operation: int = 0) -> int:
        """What a request whose operation is estimated at `operation` points is charged."""
        return max(self.request + operation, 1)

    def body_cost(self, size: int) -> int:
        """The points a body of `size` bytes adds to its request's own."""
        return size // self.body_bytes_per_point if self.body_bytes_per_point else 0

    def quota(self, role: Role | None) -> tuple[str, int]:
        """The policy name and quota of a caller with `role` (None: anonymous)."""
        if role is None:
            return ANONYMOUS_POLICY, self.anonymous
        by_role = {
            Role.VIEWER: self.viewer,
            Role.AGENT: self.agent,
            Role.OPERATOR: self.operator,
            Role.ADMIN: self.admin,
        }
        return role.value, by_role[role]


DEFAULT_POLICY = RateLimitPolicy()


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket a request is charged to, as the RateLimit headers name it."""

    policy: str
    key: str
    limit: int
    window_s: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """A charge's decision, with the buckets it concerned (in the same order)."""

    decision: RateDecision
    buckets: tuple[Bucket, ...]
    # The charges that can never fit their bucket, however long the caller waits.
    oversized: tuple[tuple[Bucket, int], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    def states(self) -> list[tuple[Bucket, BucketState]]:
        return [
            (bucket, state)
            for bucket, state in zip(self.buckets, self.decision.buckets, strict=True)
            if state is not None
        ]

    def message(self) -> str:
        """What a refused caller reads."""
        if self.oversized:
            bucket, cost = self.oversized[0]
            return (
                f"This operation costs {cost} points, more than the whole {bucket.policy!r}"
                f" quota of {bucket.limit} points per {bucket.window_s} s: it cannot run"
                " under this policy. Split it into smaller operations."
            )
        names = ", ".join(repr(b.policy) for b in self.buckets)
        return (
            f"Rate limit exceeded ({names}); retry in {self.decision.retry_after_s} s."
            " The RateLimit and RateLimit-Policy headers show the quota and what is left."
        )


def client_bucket_key(address: str | None) -> str:
    """The part of a client's address a bucket is keyed by: an IPv6 client owns its
    whole /64 (one host gets a /64, so one key per address would be one per request)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RefusalLane:
    """Refusals are held `delay_s` before they are answered, then answered one at a time,
    each after the event loop has had a turn.

    A refused caller must wait its Retry-After (a second at least) anyway; holding its
    answer a moment costs a well-behaved client nothing. A client that retries at once
    over many connections, ignoring Retry-After, is then answered a few times a second
    per connection instead of as fast as the gateway can refuse: its connections idle
    meanwhile, and the requests being served keep the loop. Past `max_waiting`,
    refusals are answered at once: a waiting refusal holds its connection and a little
    memory.
    """

    __slots__ = ("_delay_s", "_lock", "_max_waiting", "_waiting", "held")

    def __init__(self, max_waiting: int = 1024, delay_s: float = 0.0) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be 0 or more")
        self._lock = asyncio.Lock()
        self._max_waiting = max_waiting
        self._delay_s = delay_s
        self._waiting = 0
        self.held = 0

    async def wait(self) -> None:
        if self._waiting >= self._max_waiting:
            return
        self._waiting += 1
        self.held += 1
        try:
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            async with self._lock:
                await asyncio.sleep(0)
        finally:
            self._waiting -= 1


class RateLimits:
    """Charges callers against their buckets; one store round trip per call at most."""

    __slots__ = ("_buckets", "_policy", "_store", "charged", "refusals", "refused")

    def __init__(
        self, store: RateLimitStore, policy: RateLimitPolicy, refusals: RefusalLane | None = None
    ) -> None:
        self._store = store
        self._policy = policy
        self._buckets: dict[tuple[object, ...], Bucket] = {}
        self.refusals = refusals or RefusalLane()
        # For /metrics, by policy (a role, `anonymous`, `login`): points taken, and
        # requests refused for want of them.
        self.charged: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self._policy.enabled

    @property
    def store(self) -> RateLimitStore:
        return self._store

    def request_cost(self, operation: int = 0) -> int:
        return self._policy.request_cost(operation)

    def body_cost(self, size: int) -> int:
        return self._policy.body_cost(size)

    def caller_bucket(self, principal: Principal, address: str | None) -> Bucket:
        # Asked twice a request (before it is read, and with its operation's cost).
        by = (principal.role, principal.user_id, address if principal.user_id is None else None)
        bucket = self._buckets.get(by)
        if bucket is None:
            policy, limit = self._policy.quota(principal.role)
            if principal.user_id is not None:
                key = f"user:{principal.user_id}"
            else:
                key = f"ip:{client_bucket_key(address)}"
            bucket = Bucket(policy, key, limit, self._policy.window_s)
            if len(self._buckets) >= _REMEMBERED_BUCKETS:
                self._buckets.clear()
            self._buckets[by] = bucket
        return bucket

    def login_bucket(self, address: str | None) -> Bucket:
        key = f"login:{client_bucket_key(address)}"
        return Bucket(LOGIN_POLICY, key, self._policy.login, self._policy.window_s)

    def known_sign_in_refusal(self, address: str | None) -> Outcome | None:
        """A refusal if `address` is known here to have no login attempts left."""
        return self._known_refusal(self.login_bucket(address), 1)

    def known_refusal(self, principal: Principal, address: str | None, cost: int) -> Outcome | None:
        """A refusal if the caller's bucket is known here to lack `cost` points; no
        round trip."""
        bucket = self.caller_bucket(principal, address)
        if self._store.lease_holds(bucket.key, cost):
            return None
        return self._known_refusal(bucket, cost)

    def _known_refusal(self, bucket: Bucket, cost: int) -> Outcome | None:
        decision = self._store.known_refusal(
            Charge(bucket.key, bucket.limit, bucket.window_s, cost)
        )
        if decision is None:
            return None
        self.refused[bucket.policy] += 1
        return Outcome(decision, (bucket,))

    async def failed_sign_in(self, address: str | None) -> None:
        """Count a credential that did not check out against its address."""
        bucket = self.login_bucket(address)
        await self._store.charge([Charge(bucket.key, bucket.limit, bucket.window_s, 1)])

    def charge_from_lease(
        self, principal: Principal, address: str | None, cost: int
    ) -> Outcome | None:
        """`charge` of `cost` points (no logins), when this process's lease of the
        caller's bucket holds them: decided here, without a round trip or a coroutine.
        None: `charge` it. Most requests of a busy caller end here."""
        bucket = self.caller_bucket(principal, address)
        state = self._store.spend_lease(bucket.key, bucket.limit, bucket.window_s, cost)
        if state is None:
            return None
        self.charged[bucket.policy] += cost
        return Outcome(RateDecision(allowed=True, retry_after_s=0, buckets=(state,)), (bucket,))

    async def charge(
        self,
        principal: Principal,
        address: str | None,
        *,
        cost: int,
        logins: int = 0,
        minimum: int = 0,
    ) -> Outcome:
        """Charge `cost` points to the caller and `logins` attempts to its address's login
        bucket: both or neither; if neither, `minimum` points (at most `cost`) to the
        caller if they fit, in the same round trip: what a refused request still owes.
        A zero charge leaves its bucket out. A request whose cost exceeds the quota is
        told it can never run, not to wait."""
        wanted: list[tuple[Bucket, int, int]] = []
        if cost > 0:
            wanted.append((self.caller_bucket(principal, address), cost, min(minimum, cost)))
        if logins > 0:
            wanted.append((self.login_bucket(address), logins, 0))
        charges = [Charge(b.key, b.limit, b.window_s, units, least) for b, units, least in wanted]
        decision = await self._store.charge(charges)
        for bucket, units, least in wanted:
            if decision.allowed:
                self.charged[bucket.policy] += units
            else:
                self.refused[bucket.policy] += 1
                if decision.minimums_taken and least:
                    self.charged[bucket.policy] += least
        oversized = tuple((b, units) for b, units, _ in wanted if units > b.limit)
        return Outcome(decision, tuple(b for b, _, _ in wanted), oversized)


class SignInRefused(ClientError):
    """An address out of login attempts tried a credential."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, outcome.message())
        self.retry_after_s = outcome.decision.retry_after_s


async def authenticate_counted(
    stores: Stores, authorization: str | None, api_key: str | None, address: str | None
) -> Principal:
    """`authenticate`, with API keys counted against the address's login attempts: an
    address without any left is refused (`SignInRefused`) before PostgreSQL is asked,
    and a key that fails costs one. Sessions are checked in Redis, cheaply: not counted."""
    limits = stores.rate_limits
    if limits is None or not limits.enabled or not _uses_api_key(authorization, api_key):
        return await authenticate(stores, authorization, api_key)
    refused = limits.known_sign_in_refusal(address)
    if refused is not None:
        await limits.refusals.wait()
        raise SignInRefused(refused)
    try:
        return await authenticate(stores, authorization, api_key)
    except ClientError:
        await limits.failed_sign_in(address)
        raise


def _uses_api_key(authorization: str | None, api_key: str | None) -> bool:
    return bool(api_key) or (authorization or "").strip().lower().startswith("apikey ")
