"""Agents' live presence: heartbeats in Redis with a time to live, never in PostgreSQL.

    {presence}:agent:<id>   hash: activity, load, details, seen (ms); expires
                            `offline_after` after the last heartbeat
    {presence}:seen         sorted set: agent id -> last heartbeat (ms), the online set
    {presence}:last         hash: agent id -> last heartbeat (ms), kept after expiry
                            until the agent has been offline `forget_after`
    {presence}:forget-cursor  where the last pass over `{presence}:last` stopped

Every key shares the `{presence}` hash tag, so under Redis Cluster they live in one
slot and each script below runs atomically on one node. Times come from the Redis
server's clock (`TIME`), so replicas with skewed clocks agree on who is online.

Going offline is noticed by a sweep, not by keyspace notifications: each replica
calls `sweep()` every few seconds; the script takes the agents whose last heartbeat
is `offline_after` old out of `{presence}:seen` and returns them, so exactly one
replica claims each expiry and announces it. Keyspace notifications would need
`notify-keyspace-events` set on the server (often refused by managed Redis), reach
every replica at once (N announcements), fire only when Redis gets round to deleting
the key, and be lost for good by a replica that is reconnecting; a sweep that misses
a turn is caught up by the next one. The same sweeps forget the last heartbeat of
agents long gone, a slice of `{presence}:last` at a time (`forget`).

Presence is not the source of truth for anything durable: losing it (a Redis restart)
shows agents offline until their next heartbeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from redis.exceptions import RedisClusterException, RedisError

from stores import roundtrips
from stores.errors import InvalidInput, StoreUnavailable
from stores.ids import parse_id
from stores.redis.records import Presence, PresenceChange
from stores.redis.store import NAME, RedisStore

_TAG = "{presence}"
SEEN_KEY = f"{_TAG}:seen"
LAST_KEY = f"{_TAG}:last"
FORGET_CURSOR_KEY = f"{_TAG}:forget-cursor"

# KEYS: agent hash, seen set, last-seen hash. ARGV: agent id, activity, load, details,
# offline_after ms. Returns [transition, now ms, previous activity or false, previous
# heartbeat ms or false]; transition is `online` (was not in the online set),
# `returned` (its last heartbeat had expired but no sweep had announced it yet: it went
# offline and came back), `activity` (a new activity) or `` (a heartbeat, nothing new).
REPORT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[5])
local previous = redis.call('ZSCORE', KEYS[2], ARGV[1])
local activity = redis.call('HGET', KEYS[1], 'activity')
redis.call('HSET', KEYS[1], 'activity', ARGV[2], 'load', ARGV[3], 'details', ARGV[4], 'seen', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], now)
local transition = ''
if not previous then
    transition = 'online'
elseif tonumber(previous) + ttl <= now then
    transition = 'returned'
elseif activity ~= ARGV[2] then
    transition = 'activity'
end
return {transition, now, activity, previous}
"""

# KEYS: seen set. ARGV: offline_after ms, most to take. Returns [now ms, id, last ms, ...].
_SWEEP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'WITHSCORES',
    'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #stale, 2 do
    redis.call('ZREM', KEYS[1], stale[i])
end
table.insert(stale, 1, now)
return stale
"""

# KEYS: last-seen hash, cursor. ARGV: ms offline (since the last heartbeat) after which
# an entry goes, entries to look at (a hint, as HSCAN's COUNT is). One HSCAN step per
# call, so no call blocks Redis for long however many agents were ever seen; the cursor
# is shared, so every replica's sweeps move the same pass along. Returns the number
# forgotten and whether the pass is complete.
_FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local cursor = redis.call('GET', KEYS[2]) or '0'
local reply = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', tonumber(ARGV[2]))
local entries = reply[2]
local forgotten = 0
for i = 1, #entries, 2 do
    if tonumber(entries[i + 1]) <= cutoff then
        redis.call('HDEL', KEYS[1], entries[i])
        forgotten = forgotten + 1
    end
end
if reply[1] == '0' then
    redis.call('DEL', KEYS[2])
else
    redis.call('SET', KEYS[2], reply[1])
end
return {forgotten, reply[1] == '0' and 1 or 0}
"""

# KEYS: seen set. ARGV: offline_after ms, most to return. Most recent heartbeat first.
_ONLINE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call(
    'ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. (now - tonumber(ARGV[1])), 'LIMIT', 0,
    tonumber(ARGV[2]))
"""

MAX_ACTIVITY = 200
_UNAVAILABLE = (RedisError, RedisClusterException, OSError, TimeoutError)

# Where transitions are announced to every replica (stores.redis.events).
PRESENCE_CHANNEL = "presence.changed"


def change_event(change: PresenceChange) -> dict[str, Any]:
    """A transition as an event on `PRESENCE_CHANNEL`; `change_from_event` reads it back."""
    presence = change.presence
    return {
        "agent_id": str(change.agent_id),
        "change": change.change,
        "at": change.at.isoformat(),
        "online": presence.online,
        "last_seen_at": presence.last_seen_at.isoformat() if presence.last_seen_at else None,
        "activity": presence.activity,
        "load": presence.load,
    }


def change_from_event(event: dict[str, Any]) -> PresenceChange:
    seen = event["last_seen_at"]
    return PresenceChange(
        agent_id=parse_id(event["agent_id"]),
        change=event["change"],
        at=datetime.fromisoformat(event["at"]),
        presence=Presence(
            online=event["online"],
            last_seen_at=datetime.fromisoformat(seen) if seen else None,
            activity=event["activity"],
            load=event["load"],
        ),
    )


@dataclass(frozen=True, kw_only=True)
class PresenceOptions:
    """`offline_after`: seconds without a heartbeat before an agent is offline;
    `forget_after`: seconds an agent stays offline before its last heartbeat is
    forgotten (`lastSeenAt` null again); `details_max_bytes`: a report's details, as
    JSON; `sweep_batch`: expiries one sweep claims at most, and last-seen entries it
    looks at."""

    offline_after: float = 30.0
    forget_after: float = 30 * 86_400.0
    details_max_bytes: int = 4096
    sweep_batch: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.offline_after <= 86_400:
            raise ValueError("offline_after must be 1 to 86400 seconds")
        if not 1 <= self.forget_after <= 366 * 86_400:
            raise ValueError("forget_after must be 1 second to 366 days")
        if self.details_max_bytes < 0:
            raise ValueError("details_max_bytes must be 0 or more")
        if self.sweep_batch < 1:
            raise ValueError("sweep_batch must be at least 1")

    @property
    def offline_after_ms(self) -> int:
        return int(self.offline_after * 1000)

    @property
    def forget_after_ms(self) -> int:
        return int(self.forget_after * 1000)


class PresenceStore:
    """Presence on the Redis store's connections (it opens nothing of its own)."""

    __slots__ = ("_options", "_redis")

    def __init__(self, redis: RedisStore, options: PresenceOptions | None = None) -> None:
        self._redis = redis
        self._options = options or PresenceOptions()

    @property
    def options(self) -> PresenceOptions:
        return self._options

    async def report(
        self, agent_id: UUID, *, activity: str, load: float, details: dict[str, Any]
    ) -> tuple[Presence, list[PresenceChange]]:
        """Record a heartbeat; returns the presence now and the transitions it made (none
        for a plain heartbeat; `offline` then `online` for an agent whose expiry no sweep
        had announced yet)."""
        encoded = self._checked(activity, load, details)
        reply = await self._run(
            REPORT_SCRIPT,
            keys=[agent_key(agent_id), SEEN_KEY, LAST_KEY],
            args=[str(agent_id), activity, repr(float(load)), encoded, self._ttl_ms],
        )
        transition, now_ms, _, previous_ms = reply
        now = _time(int(now_ms))
        presence = Presence(True, now, activity, float(load), details)
        if transition == b"online":
            return presence, [PresenceChange(agent_id, "online", now, presence)]
        if transition == b"returned":
            went = _time(int(previous_ms) + self._ttl_ms)
            return presence, [
                PresenceChange(agent_id, "offline", went, Presence(False, _time(int(previous_ms)))),
                PresenceChange(agent_id, "online", now, presence),
            ]
        if transition == b"activity":
            return presence, [PresenceChange(agent_id, "activity", now, presence)]
        return presence, []

    async def read(self, agent_ids: Sequence[UUID]) -> dict[UUID, Presence]:
        """Every agent's presence, in one round trip for the lot."""
        if not agent_ids:
            return {}
        try:
            pipe = self._redis.client.pipeline(transaction=False)
            for agent_id in agent_ids:
                pipe.hmget(agent_key(agent_id), "activity", "load", "details", "seen")
            pipe.hmget(LAST_KEY, *(str(agent_id) for agent_id in agent_ids))
            roundtrips.record("redis")
            *live, last = await pipe.execute()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(NAME, str(exc) or type(exc).__name__) from exc
        found: dict[UUID, Presence] = {}
        for agent_id, (activity, load, details, seen), last_ms in zip(
            agent_ids, live, last, strict=True
        ):
            if seen is not None:
                found[agent_id] = Presence(
                    True, _time(int(seen)), activity.decode(), float(load), orjson.loads(details)
                )
            else:
                found[agent_id] = Presence(False, _time(int(last_ms)) if last_ms else None)
        return found

    async def online_ids(self, limit: int) -> list[UUID]:
        """Agents online now, the most recent heartbeat first, at most `limit`."""
        reply = await self._run(_ONLINE, keys=[SEEN_KEY], args=[self._ttl_ms, limit])
        return [parse_id(member.decode()) for member in reply]

    async def sweep(self) -> list[PresenceChange]:
        """Claim the agents whose heartbeats have expired: each is returned to exactly
        one caller, whichever replica sweeps first."""
        now_ms, *stale = await self._run(
            _SWEEP, keys=[SEEN_KEY], args=[self._ttl_ms, self._options.sweep_batch]
        )
        changes = []
        for member, seen in zip(stale[::2], stale[1::2], strict=True):
            last = int(float(seen))
            changes.append(
                PresenceChange(
                    parse_id(member.decode()),
                    "offline",
                    _time(min(last + self._ttl_ms, int(now_ms))),
                    Presence(False, _time(last)),
                )
            )
        return changes

    async def forget(self) -> tuple[int, bool]:
        """One step of the pass that forgets agents offline for `forget_after`: how many
        it forgot, and whether the pass is complete (the next step starts another)."""
        forgotten, complete = await self._run(
            _FORGET,
            keys=[LAST_KEY, FORGET_CURSOR_KEY],
            args=[self._ttl_ms + self._options.forget_after_ms, self._options.sweep_batch],
        )
        return int(forgotten), bool(complete)

    def _checked(self, activity: str, load: float, details: dict[str, Any]) -> bytes:
        """The details as JSON, once every field is within bounds."""
        if not isinstance(activity, str) or not activity.strip() or len(activity) > MAX_ACTIVITY:
            raise InvalidInput("activity", f"must be 1 to {MAX_ACTIVITY} characters")
        if isinstance(load, bool) or not isinstance(load, int | float) or not 0 <= load <= 1:
            raise InvalidInput("load", "must be a number from 0 (idle) to 1 (fully loaded)")
        if not isinstance(details, dict):
            raise InvalidInput("details", "must be a JSON object")
        encoded = orjson.dumps(details)
        if len(encoded) > self._options.details_max_bytes:
            raise InvalidInput(
                "details", f"must be at most {self._options.details_max_bytes} bytes of JSON"
            )
        return encoded

    @property
    def _ttl_ms(self) -> int:
        return self._options.offline_after_ms

    async def _run(self, source: str, *, keys: list[str], args: list[Any]) -> Any:
        script = self._redis.script(source)
        roundtrips.record("redis")
        try:
            return await script(keys=keys, args=args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(NAME, str(exc) or type(exc).__name__) from exc


def agent_key(agent_id: UUID) -> str:
    return f"{_TAG}:agent:{agent_id}"


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
