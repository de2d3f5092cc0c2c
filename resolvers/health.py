"""Three-tier health from a live probe of every store, shared by everyone who asks.

Probing costs every store a round trip (PostgreSQL a transaction), and anyone may
ask for health, anonymously and as often as they like. So one probe serves every
caller within a process for `min_interval_s` (default 1 s): a caller who asks for
a fresher report gets that one, callers arriving while a probe runs wait for it,
and subscriptions tick no faster than the interval. However many ask, a process
probes at most once per interval.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from resolvers.context import Stores
from stores import ProbeResult


class HealthTier(enum.Enum):
    HEALTHY = "healthy"
    MODERATE = "moderate"
    CRITICAL = "critical"


# PostgreSQL is the source of truth: without it nothing works. The others degrade.
_CRITICAL_STORES = frozenset({"postgres"})


@dataclass(frozen=True)
class HealthReport:
    status: HealthTier
    components: tuple[ProbeResult, ...]
    checked_at: float


DEFAULT_MIN_INTERVAL_S = 1.0


class HealthMonitor:
    """The latest report, probed again once it is `min_interval_s` old and asked for."""

    __slots__ = ("_last", "_last_at", "_min_interval_s", "_probing", "probes")

    def __init__(self, *, min_interval_s: float = DEFAULT_MIN_INTERVAL_S) -> None:
        if min_interval_s <= 0:
            raise ValueError("min_interval_s must be positive")
        self._min_interval_s = min_interval_s
        self._last: HealthReport | None = None
        self._last_at = 0.0
        self._probing: asyncio.Task[HealthReport] | None = None
        # Probes run so far (for tests and metrics).
        self.probes = 0

    @property
    def min_interval_s(self) -> float:
        return self._min_interval_s

    async def report(self, stores: Stores, *, max_age_s: float | None = None) -> HealthReport:
        """A report at most `max_age_s` old (never less than the floor)."""
        max_age = max(max_age_s or 0.0, self._min_interval_s)
        if self._last is not None and time.monotonic() - self._last_at < max_age:
            return self._last
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe(stores), name="polygraph-health")
        # Shielded: a caller that gives up does not cancel the probe the others wait for.
        return await asyncio.shield(self._probing)

    async def _probe(self, stores: Stores) -> HealthReport:
        try:
            self.probes += 1
            report = await check_health(stores)
            self._last, self._last_at = report, time.monotonic()
            return report
        finally:
            self._probing = None


MAX_INTERVAL_S = 3600.0


def update_interval(stores: Stores, requested_s: float) -> float:
    """A subscriber's interval: what it asked for, between the floor and an hour."""
    floor = stores.health.min_interval_s if stores.health else DEFAULT_MIN_INTERVAL_S
    return min(max(requested_s, floor), MAX_INTERVAL_S)


async def current_health(stores: Stores, *, max_age_s: float | None = None) -> HealthReport:
    """The shared report where the process has a monitor, a fresh probe otherwise."""
    if stores.health is None:
        return await check_health(stores)
    return await stores.health.report(stores, max_age_s=max_age_s)


async def check_health(stores: Stores) -> HealthReport:
    checks = [
        _bounded(stores.postgres.probe(), "postgres", stores.probe_timeout),
        _bounded(stores.graph.probe(), "neo4j", stores.probe_timeout),
        _bounded(stores.redis.probe(), "redis", stores.probe_timeout),
    ]
    if stores.metrics is not None:
        # Its details say which path runs: {"backend": "timescaledb" | "native"}.
        checks.append(_bounded(stores.metrics.probe(), "metrics", stores.probe_timeout))
    probes = await asyncio.gather(*checks)
    components = tuple(
        [
            *[
                _with_cache_state(await _with_sessions_fallback(probe, stores), stores)
                for probe in probes
            ],
            # Read replicas as their background check found them: one down or lagging
            # is skipped (reads go to the primary), so the gateway is only `moderate`.
            *stores.postgres.replica_probes(),
        ]
    )
    return HealthReport(tier_of(components), components, time.time())


def tier_of(probes: Sequence[ProbeResult]) -> HealthTier:
    down = {probe.store for probe in probes if not probe.up}
    if down & _CRITICAL_STORES:
        return HealthTier.CRITICAL
    if down:
        return HealthTier.MODERATE
    return HealthTier.HEALTHY


async def _with_sessions_fallback(probe: ProbeResult, stores: Stores) -> ProbeResult:
    sessions = stores.sessions
    if probe.store != "redis" or sessions is None or not sessions.fallback_active:
        return probe
    # Redis answers the probe: move the sessions back now rather than on their next use.
    if probe.up and await sessions.recover():
        return probe
    detail = f"active; {sessions.fallback_operations} operations served from memory"
    return replace(probe, details={**probe.details, "sessions_fallback": detail})


def _with_cache_state(probe: ProbeResult, stores: Stores) -> ProbeResult:
    """Redis's details say when the entity cache runs on its memory level alone."""
    cache = stores.entity_cache
    if probe.store != "redis" or cache is None or cache.shared is None:
        return probe
    if probe.up and cache.shared_available:
        return replace(probe, details={**probe.details, "cache": "memory and redis"})
    return replace(probe, details={**probe.details, "cache": "memory only"})


async def _bounded(
    probe: Coroutine[Any, Any, ProbeResult], store: str, within: float
) -> ProbeResult:
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(probe, within)
    except TimeoutError:
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return ProbeResult(store, False, elapsed, error=f"no answer within {within:g}s")
