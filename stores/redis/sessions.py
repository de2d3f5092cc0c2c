"""Sessions in Redis, with an in-process fallback while Redis is unreachable.

Layout; a token is never stored, only its SHA-256:

    {sessions}session:<sha256 of token>   hash {member, id, user, agent, ttl, seen, ends}
                                          expires with the session
    {sessions}session-id:<session id>     the token's hash, to end a session by its id
    {sessions}user:<user id>              sorted set: the user's sessions
    {sessions}agent:<agent id>            sorted set: the sessions bound to the agent

An index member is the session's fixed fields as JSON and its score the expiry
in ms, so listing a user's sessions, or many agents', reads the indexes alone:
one command for a user, one pipeline however many agents. Reads pass expired
members over by score; a session's creation prunes them, and an index expires with
its longest session. Times are epoch milliseconds from the gateway's clock.

A session slides forward on use (`ttl`) but never past `ends`, its absolute end:
however busy, a session is over once its lifetime has passed. It remembers the
API key that opened it and that key's scopes, so ending a key can end its sessions.
The scripts derive keys from the session they read, so under Redis Cluster they
need all of these keys in one slot: `{sessions}`, the hash tag every key starts
with, puts them there (on one shard; a shard serves far more session lookups than
a gateway fleet makes, see README's scale-out section).

While Redis is unreachable, sessions live in this process: those created during
the outage, and copies of those this process resolved recently, so clients that
are signed in stay signed in. When Redis answers again, the sessions created and
the logouts made meanwhile are written back to it. The price: a session revoked
through another gateway may be honoured here until Redis is back, if this process
resolved it before the outage.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

import orjson
from redis.asyncio.client import Pipeline
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError

from stores import roundtrips
from stores._secrets import digest
from stores.errors import InvalidInput, StoreRefused
from stores.ids import parse_id
from stores.redis.records import Session
from stores.redis.store import UNAVAILABLE_ERRORS, RedisStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

SESSION_KEY = "{sessions}session:"
SESSION_ID_KEY = "{sessions}session-id:"
USER_INDEX = "{sessions}user:"
AGENT_INDEX = "{sessions}agent:"

# Errors after which Redis cannot serve sessions for now; anything else is a bug. Beyond a
# lost connection, session writes fail on a read-only replica or a full memory.
_SESSIONS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS,
    ReadOnlyError,
    OutOfMemoryError,
)

# Resolves and, once `touch` ms have passed since the last push, slides the
# expiry of the session and of its index entries. Returns {member, seen} or nil.
# ARGV shared by the scripts: where the keys a session owns live.
_PREFIXES = [SESSION_KEY, SESSION_ID_KEY, USER_INDEX, AGENT_INDEX]
_PREFIX_LOCALS = """
local session_prefix, id_prefix, user_prefix, agent_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
"""

# KEYS[1]: the session. ARGV[5]: now; ARGV[6]: touch interval (ms). Once the
# interval has passed since the last push, slides the expiry of the session, of
# its id, and of its index entries, never past its absolute end (`ends`, absent
# from sessions made before there was one). Returns {member, seen}, or nil.
_RESOLVE_SCRIPT = (
    _PREFIX_LOCALS
    + """
local f = redis.call('HMGET', KEYS[1], 'member', 'seen', 'ttl', 'user', 'agent', 'id', 'ends')
if not f[1] then return false end
local now = tonumber(ARGV[5])
local ends = tonumber(f[7])
if ends and now >= ends then return false end
if now - tonumber(f[2]) < tonumber(ARGV[6]) then return {f[1], f[2]} end
local expires = now + tonumber(f[3])
if ends and expires > ends then expires = ends end
redis.call('HSET', KEYS[1], 'seen', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('PEXPIREAT', id_prefix .. f[6], expires)
local indexes = {user_prefix .. f[4]}
if f[5] ~= '' then indexes[2] = agent_prefix .. f[5] end
for _, index in ipairs(indexes) do
  redis.call('ZADD', index, 'XX', expires, f[1])
  redis.call('PEXPIREAT', index, expires, 'GT')
end
return {f[1], ARGV[5]}
"""
)

# KEYS[1]: a user's index. ARGV[5]: an API key id, ARGV[6]: an agent id ('' for
# any). Deletes the user's sessions opened with that key and bound to that agent,
# and what points at them; returns how many.
_END_MATCHING_SCRIPT = (
    _PREFIX_LOCALS
    + """
local count = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local m = cjson.decode(member)
  local key, agent = m['key'], m['agent']
  if (ARGV[5] == '' or key == ARGV[5]) and (ARGV[6] == '' or agent == ARGV[6]) then
    redis.call('DEL', session_prefix .. m['token'], id_prefix .. m['id'])
    redis.call('ZREM', KEYS[1], member)
    if type(agent) == 'string' then redis.call('ZREM', agent_prefix .. agent, member) end
    count = count + 1
  end
end
return count
"""
)

# Deletes `session` and what points at it, if ARGV[5] (an owner) is '' or owns it.
_DELETE_BODY = """
local f = redis.call('HMGET', session, 'member', 'user', 'agent', 'id')
if not f[1] then return 0 end
if ARGV[5] ~= '' and ARGV[5] ~= f[2] then return 0 end
redis.call('DEL', session, id_prefix .. f[4])
redis.call('ZREM', user_prefix .. f[2], f[1])
if f[3] ~= '' then redis.call('ZREM', agent_prefix .. f[3], f[1]) end
return 1
"""
# KEYS[1]: the session.
_DELETE_SCRIPT = _PREFIX_LOCALS + "local session = KEYS[1]\n" + _DELETE_BODY
# KEYS[1]: the session's id key.
_REVOKE_SCRIPT = (
    _PREFIX_LOCALS
    + """
local token_hash = redis.call('GET', KEYS[1])
if not token_hash then return 0 end
local session = session_prefix .. token_hash
"""
    + _DELETE_BODY
)


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """How sessions behave. Times are in seconds."""

    # A session's expiry moves forward on use, but at most once per interval.
    touch_interval: float = 5.0
    # While Redis is away, how long to serve from memory before trying it again.
    fallback_retry: float = 1.0
    # How many resolved sessions this process keeps, to serve them during an outage.
    remembered: int = 10_000
    max_ttl: int = 30 * 86_400
    # However it is used, a session ends this long after it was opened.
    lifetime: int = 86_400

    def __post_init__(self) -> None:
        if self.touch_interval < 0:
            raise ValueError("touch_interval must be 0 or more")
        if self.fallback_retry <= 0:
            raise ValueError("fallback_retry must be positive")
        if self.remembered < 0:
            raise ValueError("remembered must be 0 or more")
        if self.max_ttl < 1:
            raise ValueError("max_ttl must be at least 1")
        if self.lifetime < 1:
            raise ValueError("lifetime must be at least 1")


DEFAULT_SESSION_OPTIONS = SessionOptions()


class SessionStore:
    """Sessions: Redis while it answers, this process's memory while it does not."""

    __slots__ = (
        "_clock",
        "_fallback_active",
        "_fallback_operations",
        "_memory",
        "_options",
        "_redis",
        "_retry_at",
        "_write_back_lock",
    )

    def __init__(
        self,
        redis: RedisStore,
        options: SessionOptions = DEFAULT_SESSION_OPTIONS,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._redis = redis
        self._options = options
        # Epoch milliseconds; tests pass their own to stand at an exact moment.
        self._clock = clock or _now_ms
        self._memory = _Memory(options.remembered)
        self._fallback_active = False
        self._fallback_operations = 0
        self._retry_at = 0.0
        self._write_back_lock = asyncio.Lock()

    @property
    def fallback_active(self) -> bool:
        """True from the first failed Redis call until Redis has the memory's changes."""
        return self._fallback_active

    @property
    def fallback_operations(self) -> int:
        """Operations served from memory since this store was made."""
        return self._fallback_operations

    async def create(
        self,
        *,
        user_id: UUID,
        role: str,
        agent_id: UUID | None,
        ttl_s: int,
        api_key_id: UUID | None = None,
        scopes: Sequence[str] | None = None,
    ) -> tuple[Session, str]:
        """A new session and its token; the token is returned here and never again.

        `api_key_id` and `scopes`: the key that opened it and that key's scopes (None:
        unknown, the session's `role` is then its cap). It ends `lifetime` seconds from
        now at the latest, however it is used.
        """
        if not 1 <= ttl_s <= self._options.max_ttl:
            raise InvalidInput("ttl_s", f"must be between 1 and {self._options.max_ttl} seconds")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        entry = _Entry.new(
            token_hash=digest(token).hex(),
            user_id=user_id,
            role=role,
            agent_id=agent_id,
            api_key_id=api_key_id,
            scopes=scopes,
            ttl_ms=ttl_s * 1000,
            now_ms=now,
            ends_ms=now + self._options.lifetime * 1000,
        )

        async def in_redis() -> None:
            pipe = self._redis.client.pipeline(transaction=True)
            _queue_write(pipe, entry, now)
            roundtrips.record("redis")
            await pipe.execute()

        await self._run(in_redis, lambda: self._memory.add_pending(entry))
        return entry.session(), token

    async def resolve(self, token: str) -> Session | None:
        """The live session `token` proves, its expiry pushed forward; None if there is none."""
        if not token:
            return None
        token_hash = digest(token).hex()
        now = self._clock()
        touch_ms = int(self._options.touch_interval * 1000)

        async def in_redis() -> Session | None:
            roundtrips.record("redis")
            reply = await self._redis.script(_RESOLVE_SCRIPT)(
                keys=[_session_key(token_hash)], args=[*_PREFIXES, now, touch_ms]
            )
            if reply is None:
                self._memory.discard(token_hash)
                return None
            member, seen = reply
            entry = _Entry.from_member(member, int(seen))
            self._memory.remember(entry)
            return entry.session()

        def in_memory() -> Session | None:
            entry = self._memory.get(token_hash, now)
            if entry is None:
                return None
            if now - entry.seen_ms >= touch_ms:
                entry.seen_ms = now
            return entry.session()

        return await self._run(in_redis, in_memory)

    async def delete(self, token: str) -> bool:
        """Log out: end the session `token` proves. False if there was none."""
        token_hash = digest(token).hex()

        async def in_redis() -> bool:
            self._memory.discard(token_hash)
            roundtrips.record("redis")
            deleted = await self._redis.script(_DELETE_SCRIPT)(
                keys=[_session_key(token_hash)], args=[*_PREFIXES, ""]
            )
            return bool(deleted)

        return await self._run(in_redis, lambda: self._memory.log_out(token_hash))

    async def list_for_user(self, user_id: UUID) -> list[Session]:
        """The user's live sessions, oldest first."""
        now = self._clock()

        async def in_redis() -> list[_Entry]:
            roundtrips.record("redis")
            members = await self._redis.client.zrange(**_live_members(_user_index(user_id), now))
            # WITHSCORES: (member, score) pairs, whatever redis-py's union says.
            return _entries(cast("Sequence[tuple[bytes, float]]", members))

        entries = await self._run(in_redis, lambda: self._memory.for_user(user_id, now))
        return [entry.session() for entry in sorted(entries, key=_by_creation)]

    async def revoke(self, user_id: UUID | None, session_id: str) -> bool:
        """End a session by its public id, if `user_id` owns it or `user_id` is None.

        False if there is no such session, or someone else owns it.
        """
        now = self._clock()
        owner = str(user_id) if user_id is not None else ""

        async def in_redis() -> bool:
            self._memory.discard_id(session_id, user_id)
            roundtrips.record("redis")
            revoked = await self._redis.script(_REVOKE_SCRIPT)(
                keys=[SESSION_ID_KEY + session_id], args=[*_PREFIXES, owner]
            )
            return bool(revoked)

        def in_memory() -> bool:
            target = self._memory.by_id(session_id, now)
            if target is None or (user_id is not None and target.user_id != user_id):
                return False
            return self._memory.log_out(target.token_hash)

        return await self._run(in_redis, in_memory)

    async def for_agents(self, agent_ids: Sequence[UUID]) -> dict[UUID, list[Session]]:
        """Live sessions bound to each agent, oldest first; one round trip for all of them."""
        unique = list(dict.fromkeys(agent_ids))
        if not unique:
            return {}
        now = self._clock()

        async def in_redis() -> dict[UUID, list[_Entry]]:
            pipe = self._redis.client.pipeline(transaction=False)
            for agent_id in unique:
                pipe.zrange(**_live_members(_agent_index(agent_id), now))
            roundtrips.record("redis")
            replies = await pipe.execute()
            return {
                agent_id: _entries(members)
                for agent_id, members in zip(unique, replies, strict=True)
            }

        found = await self._run(in_redis, lambda: self._memory.for_agents(unique, now))
        return {
            agent_id: [entry.session() for entry in sorted(entries, key=_by_creation)]
            for agent_id, entries in found.items()
        }

    async def end_matching(
        self, user_id: UUID, *, api_key_id: UUID | None = None, agent_id: UUID | None = None
    ) -> int:
        """End the user's sessions opened with `api_key_id` and bound to `agent_id`
        (either, both, or neither: all of them); returns how many ended."""
        key = str(api_key_id) if api_key_id else ""
        agent = str(agent_id) if agent_id else ""
        now = self._clock()

        async def in_redis() -> int:
            self._memory.end_matching(user_id, api_key_id, agent_id, now, log_out=False)
            roundtrips.record("redis")
            ended = await self._redis.script(_END_MATCHING_SCRIPT)(
                keys=[_user_index(user_id)], args=[*_PREFIXES, key, agent]
            )
            return int(ended)

        return await self._run(
            in_redis,
            lambda: self._memory.end_matching(user_id, api_key_id, agent_id, now, log_out=True),
        )

    async def recover(self) -> bool:
        """Try Redis now, even if the retry interval has not passed; True if it is in use."""
        if not self._fallback_active:
            return True
        self._retry_at = 0.0
        return await self._redis_in_use()

    async def _run(
        self,
        in_redis: Callable[[], Awaitable[T]],
        in_memory: Callable[[], T],
    ) -> T:
        if await self._redis_in_use():
            try:
                return await in_redis()
            except _SESSIONS_UNAVAILABLE as exc:
                self._enter_fallback(exc)
            except RedisError as exc:
                raise StoreRefused(f"redis refused a session command: {exc}") from exc
        self._fallback_operations += 1
        return in_memory()

    async def _redis_in_use(self) -> bool:
        if not self._fallback_active:
            return True
        if time.monotonic() < self._retry_at:
            return False
        # Callers wait for the write-back rather than add to memory behind its back.
        async with self._write_back_lock:
            if not self._fallback_active:
                return True
            if time.monotonic() < self._retry_at:
                return False
            now = self._clock()
            created, logged_out = self._memory.backlog(now)
            pipe = self._redis.client.pipeline(transaction=False)
            for entry in created:
                _queue_write(pipe, entry, now)
            for token_hash in logged_out:
                pipe.eval(_DELETE_SCRIPT, 1, _session_key(token_hash), *_PREFIXES, "")
            roundtrips.record("redis")
            try:
                # A cluster pipeline refuses PING: nothing to write back, PING alone.
                await (pipe.execute() if created or logged_out else self._redis.client.ping())
            except _SESSIONS_UNAVAILABLE as exc:
                self._retry_at = time.monotonic() + self._options.fallback_retry
                logger.debug("redis still unreachable for sessions: %s", exc)
                return False
            self._memory.written_back(created, logged_out)
            self._fallback_active = False
        logger.warning(
            "redis answers again: sessions are back in Redis"
            " (wrote back %d sessions and %d logouts; %d operations were served from memory)",
            len(created),
            len(logged_out),
            self._fallback_operations,
        )
        return True

    def _enter_fallback(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._options.fallback_retry
        if not self._fallback_active:
            self._fallback_active = True
            logger.warning(
                "redis unreachable (%s): sessions are served from this process's memory"
                " until it answers",
                str(exc) or type(exc).__name__,
            )


@dataclass(slots=True)
class _Entry:
    """A session as both backends hold it."""

    token_hash: str
    # The fixed fields as JSON: the index member. Kept verbatim, never re-encoded,
    # so the member written at creation is the member later touched and removed.
    member: str
    id: str
    user_id: UUID
    role: str
    agent_id: UUID | None
    api_key_id: UUID | None
    scopes: tuple[str, ...] | None
    created_ms: int
    ttl_ms: int
    seen_ms: int
    # The absolute end; None for sessions made before there was one.
    ends_ms: int | None

    @property
    def expires_ms(self) -> int:
        sliding = self.seen_ms + self.ttl_ms
        return sliding if self.ends_ms is None else min(sliding, self.ends_ms)

    @classmethod
    def new(
        cls,
        *,
        token_hash: str,
        user_id: UUID,
        role: str,
        agent_id: UUID | None,
        api_key_id: UUID | None,
        scopes: Sequence[str] | None,
        ttl_ms: int,
        now_ms: int,
        ends_ms: int,
    ) -> _Entry:
        fields = {
            "id": str(uuid4()),
            "user": str(user_id),
            "role": role,
            "agent": str(agent_id) if agent_id else None,
            "key": str(api_key_id) if api_key_id else None,
            "scopes": list(scopes) if scopes is not None else None,
            "created": now_ms,
            "ttl": ttl_ms,
            "ends": ends_ms,
            "token": token_hash,
        }
        member = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
        return cls.from_member(member, now_ms)

    @classmethod
    def from_member(cls, member: str | bytes, seen_ms: int) -> _Entry:
        fields: dict[str, Any] = orjson.loads(member)
        # `key`, `scopes` and `ends` are absent from sessions made before they existed.
        key, scopes = fields.get("key"), fields.get("scopes")
        return cls(
            token_hash=fields["token"],
            member=member.decode() if isinstance(member, bytes) else member,
            id=fields["id"],
            user_id=parse_id(fields["user"]),
            role=fields["role"],
            agent_id=parse_id(fields["agent"]) if fields["agent"] else None,
            api_key_id=parse_id(key) if key else None,
            scopes=tuple(scopes) if scopes is not None else None,
            created_ms=fields["created"],
            ttl_ms=fields["ttl"],
            seen_ms=seen_ms,
            ends_ms=fields.get("ends"),
        )

    def session(self) -> Session:
        return Session(
            id=self.id,
            user_id=self.user_id,
            role=self.role,
            agent_id=self.agent_id,
            created_at=_datetime(self.created_ms),
            expires_at=_datetime(self.expires_ms),
            last_seen_at=_datetime(self.seen_ms),
            api_key_id=self.api_key_id,
            scopes=self.scopes,
            ends_at=_datetime(self.ends_ms) if self.ends_ms is not None else None,
        )


class _Memory:
    """This process's sessions for an outage, and what Redis must learn after it."""

    __slots__ = ("_capacity", "_entries", "_logged_out", "_pending")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Created during an outage: Redis has never seen them.
        self._pending: set[str] = set()
        # Logged out during an outage: Redis may still hold them.
        self._logged_out: set[str] = set()

    def remember(self, entry: _Entry) -> None:
        self._entries[entry.token_hash] = entry
        self._entries.move_to_end(entry.token_hash)
        excess = len(self._entries) - self._capacity
        if excess > 0:
            # Oldest first; sessions Redis has never seen are kept until they expire.
            evictable = (th for th in self._entries if th not in self._pending)
            for token_hash in list(itertools.islice(evictable, excess)):
                del self._entries[token_hash]

    def add_pending(self, entry: _Entry) -> None:
        self._pending.add(entry.token_hash)
        self.remember(entry)

    def get(self, token_hash: str, now_ms: int) -> _Entry | None:
        entry = self._entries.get(token_hash)
        if entry is not None and entry.expires_ms <= now_ms:
            self.discard(token_hash)
            return None
        return entry

    def discard(self, token_hash: str) -> _Entry | None:
        self._pending.discard(token_hash)
        return self._entries.pop(token_hash, None)

    def log_out(self, token_hash: str) -> bool:
        was_pending = token_hash in self._pending
        found = self.discard(token_hash) is not None
        if not was_pending:
            self._logged_out.add(token_hash)
        return found

    def by_id(self, session_id: str, now_ms: int) -> _Entry | None:
        return next((e for e in self._live(now_ms) if e.id == session_id), None)

    def discard_id(self, session_id: str, user_id: UUID | None) -> None:
        found = [
            th
            for th, e in self._entries.items()
            if e.id == session_id and (user_id is None or e.user_id == user_id)
        ]
        for token_hash in found:
            self.discard(token_hash)

    def end_matching(
        self,
        user_id: UUID,
        api_key_id: UUID | None,
        agent_id: UUID | None,
        now_ms: int,
        *,
        log_out: bool,
    ) -> int:
        """Forget the user's sessions opened with `api_key_id` and bound to `agent_id`
        (None: any); with `log_out`, Redis learns of it once it answers again."""
        matching = [
            e.token_hash
            for e in self._live(now_ms)
            if e.user_id == user_id
            and (api_key_id is None or e.api_key_id == api_key_id)
            and (agent_id is None or e.agent_id == agent_id)
        ]
        for token_hash in matching:
            if log_out:
                self.log_out(token_hash)
            else:
                self.discard(token_hash)
        return len(matching)

    def for_user(self, user_id: UUID, now_ms: int) -> list[_Entry]:
        return [e for e in self._live(now_ms) if e.user_id == user_id]

    def for_agents(self, agent_ids: Iterable[UUID], now_ms: int) -> dict[UUID, list[_Entry]]:
        found: dict[UUID, list[_Entry]] = {agent_id: [] for agent_id in agent_ids}
        for entry in self._live(now_ms):
            if entry.agent_id in found:
                found[entry.agent_id].append(entry)
        return found

    def backlog(self, now_ms: int) -> tuple[list[_Entry], list[str]]:
        created = [self._entries[th] for th in self._pending if th in self._entries]
        return [e for e in created if e.expires_ms > now_ms], list(self._logged_out)

    def written_back(self, created: Iterable[_Entry], logged_out: Iterable[str]) -> None:
        self._pending.difference_update(entry.token_hash for entry in created)
        self._logged_out.difference_update(logged_out)

    def _live(self, now_ms: int) -> list[_Entry]:
        expired = [th for th, e in self._entries.items() if e.expires_ms <= now_ms]
        for token_hash in expired:
            self.discard(token_hash)
        return list(self._entries.values())


def _queue_write(pipe: Pipeline, entry: _Entry, now_ms: int) -> None:
    key = _session_key(entry.token_hash)
    pipe.hset(
        key,
        mapping={
            "member": entry.member,
            "id": entry.id,
            "user": str(entry.user_id),
            "agent": str(entry.agent_id) if entry.agent_id else "",
            "ttl": entry.ttl_ms,
            "seen": entry.seen_ms,
            **({"ends": entry.ends_ms} if entry.ends_ms is not None else {}),
        },
    )
    pipe.pexpireat(key, entry.expires_ms)
    pipe.set(SESSION_ID_KEY + entry.id, entry.token_hash, pxat=entry.expires_ms)
    indexes = [_user_index(entry.user_id)]
    if entry.agent_id is not None:
        indexes.append(_agent_index(entry.agent_id))
    for index in indexes:
        # Over at its expiry, as a read holds it: a member scored `now_ms` goes too.
        pipe.zremrangebyscore(index, "-inf", now_ms)
        pipe.zadd(index, {entry.member: entry.expires_ms})
        # An index lives as long as its longest session: NX sets a first
        # expiry, GT only ever extends it.
        pipe.pexpireat(index, entry.expires_ms, nx=True)
        pipe.pexpireat(index, entry.expires_ms, gt=True)


def _live_members(index: str, now_ms: int) -> dict[str, Any]:
    """ZRANGE's arguments for the members of `index` still live (scored by expiry).

    A session is over at its expiry, as `resolve` and the memory fallback hold it: one
    that expires this very millisecond is not listed. Reads leave expired members in
    place: each session's creation prunes its indexes, and an index expires with its
    longest session, so a read is one command and writes nothing."""
    return {
        "name": index,
        "start": f"({now_ms}",
        "end": "+inf",
        "byscore": True,
        "withscores": True,
    }


def _entries(members: Sequence[tuple[bytes, float]]) -> list[_Entry]:
    entries = []
    for member, expires in members:
        entry = _Entry.from_member(member, 0)
        # The score is the expiry: the last touch plus the TTL, unless the absolute end
        # came first (last_seen_at then reads a little early).
        entry.seen_ms = int(expires) - entry.ttl_ms
        entries.append(entry)
    return entries


def _by_creation(entry: _Entry) -> tuple[int, str]:
    return entry.created_ms, entry.id


def _session_key(token_hash: str) -> str:
    return SESSION_KEY + token_hash


def _user_index(user_id: UUID) -> str:
    return f"{USER_INDEX}{user_id}"


def _agent_index(agent_id: UUID) -> str:
    return f"{AGENT_INDEX}{agent_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
