"""Recording and reading metrics: checks that need PostgreSQL (agents, registered
names) in front of the metrics store, and the `metric.recorded` events after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from resolvers.agent_grants import is_operator, require_acts_as
from resolvers.auth import Principal, Role, require
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError, ErrorCode
from stores.cache.aggregates import AggregateCache, question_of
from stores.metrics import (
    Aggregate,
    Fill,
    MetricPoint,
    MetricsStore,
    MetricSummary,
    RecordResult,
    Series,
    SeriesRows,
    Window,
)
from stores.metrics.buckets import choose_source
from stores.metrics.validation import (
    PointRejected,
    check_labels,
    check_name,
    check_time,
    check_value,
)
from stores.postgres import metric_names
from stores.postgres.metric_names import MetricName
from stores.postgres.options import PgConnection
from stores.postgres.records import JSON
from stores.postgres.writes import run_once

METRIC_RECORDED_CHANNEL = "metric.recorded"
# Points per event: bulk loads publish many events, each small enough to fan out.
EVENT_POINTS = 500


@dataclass(frozen=True, slots=True)
class Candidate:
    """A point as a client sent it, before any check; `index` names it in errors."""

    index: int
    agent_id: UUID
    name: str
    value: object
    time: datetime | None
    labels: object = None


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str
    message: str
    code: ErrorCode = ErrorCode.BAD_USER_INPUT


@dataclass
class Checked:
    accepted: list[MetricPoint] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def metrics_store(stores: Stores) -> MetricsStore:
    if stores.metrics is None:
        raise ClientError(ErrorCode.STORE_UNAVAILABLE, "metrics are not configured here")
    return stores.metrics


async def read_series(
    stores: Stores,
    agent_ids: Sequence[UUID],
    names: Sequence[str],
    window: Window,
    aggregate: Aggregate,
    *,
    how: Fill,
) -> Mapping[UUID, list[Series]]:
    """Each agent's series, one per name in the order of `names`."""
    return await _series_by_agent(stores, agent_ids, (tuple(names), window, aggregate, how, None))


async def read_series_rows(
    stores: Stores,
    agent_ids: Sequence[UUID],
    names: Sequence[str],
    window: Window,
    aggregate: Aggregate,
    *,
    how: Fill,
) -> SeriesRows:
    """`read_series` as rows, for an answer made straight from them: the store's own
    rows when nothing is filled and the aggregate cache does not hold the window (the
    common read), else the series' buckets (each series' rows together)."""
    if how is Fill.NONE and _closed_window_cache(stores, window) is None:
        return await metrics_store(stores).series_rows(agent_ids, names, window, aggregate)
    found = await read_series(stores, agent_ids, names, window, aggregate, how=how)
    rows = [
        (series.agent_id, series.name, bucket.time, bucket.value)
        for agent_id in agent_ids
        for series in found[agent_id]
        for bucket in series.buckets
    ]
    return SeriesRows(choose_source(window.width, aggregate, labelled=False), rows)


def _closed_window_cache(stores: Stores, window: Window) -> AggregateCache | None:
    """The aggregate cache, when it is on and holds `window` (a closed one)."""
    cache = stores.entity_cache
    if cache is None or not cache.aggregates.closed(window):
        return None
    return cache.aggregates


async def _series_by_agent(
    stores: Stores, agent_ids: Sequence[UUID], question: _Question
) -> dict[UUID, list[Series]]:
    """One store query per question, and only for agents whose answer is not cached (a
    window is cached once closed: see stores.cache.aggregates)."""
    store = metrics_store(stores)
    names, window, aggregate, how, labels = question

    async def load(ids: list[UUID]) -> dict[UUID, list[Series]]:
        series = await store.series(
            ids,
            names,
            window,
            aggregate,
            how=how,
            labels=orjson.loads(labels) if labels is not None else None,
        )
        return {agent_id: [series[(agent_id, name)] for name in names] for agent_id in ids}

    unique = list(dict.fromkeys(agent_ids))
    cache = _closed_window_cache(stores, window)
    if cache is None:
        return await load(unique)
    key = question_of(
        names,
        window.start.isoformat(),
        window.end.isoformat(),
        window.width,
        aggregate,
        how,
        labels,
    )
    return await cache.series(key, unique, load)


async def summarise(
    stores: Stores,
    agent_ids: Sequence[UUID] | None,
    names: Sequence[str] | None,
    *,
    window: timedelta,
    limit: int,
) -> list[MetricSummary]:
    return await metrics_store(stores).summary(agent_ids, names, window=window, limit=limit)


async def registered_names(stores: Stores) -> list[MetricName]:
    return await metric_names.all_names(stores.postgres)


async def register_name(
    ctx: RequestContext,
    name: str,
    *,
    unit: str,
    description: str,
    idempotency_key: str | None = None,
) -> MetricName:
    return await metric_names.register(
        ctx.stores.postgres,
        name,
        unit=unit,
        description=description,
        ctx=ctx.write_context(idempotency_key),
    )


async def require_recorder(stores: Stores, principal: Principal) -> None:
    """Operators record for any agent; below them, only a session bound to an agent
    (with its grant) records, and for that agent only (checked per point)."""
    require(principal, at_least=Role.AGENT)
    if is_operator(principal):
        return
    if principal.agent_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            "recording metrics needs an operator, or a session bound to the agent they"
            " are for: log in with `agentId`",
        )
    await require_acts_as(stores, principal, principal.agent_id, doing="recording metrics")


async def check_points(
    stores: Stores, principal: Principal, candidates: Sequence[Candidate]
) -> Checked:
    """Every check a point must pass, batched: one query for agents, one for names."""
    store = metrics_store(stores)
    options = store.options
    now = datetime.now(UTC)
    outcome = Checked()
    plausible: list[tuple[Candidate, MetricPoint]] = []
    for candidate in candidates:
        try:
            check_name(candidate.name)
            value = check_value(candidate.value)
            moment = candidate.time or now
            check_time(moment, now=now, retention=options.retention, future=options.max_future)
            labels = check_labels(candidate.labels)
        except PointRejected as exc:
            outcome.rejected.append(Rejection(candidate.index, exc.field, exc.message))
            continue
        if not is_operator(principal) and candidate.agent_id != principal.agent_id:
            outcome.rejected.append(
                Rejection(
                    candidate.index,
                    "agentId",
                    "signed in as one agent, you record metrics for that agent only",
                    ErrorCode.FORBIDDEN,
                )
            )
            continue
        point = MetricPoint(candidate.agent_id, candidate.name, moment, value, labels)
        plausible.append((candidate, point))
    if not plausible:
        return outcome
    agents = await stores.postgres.agents.by_ids(list({p.agent_id for _, p in plausible}))
    names = await metric_names.by_names(stores.postgres, [p.name for _, p in plausible])
    for candidate, point in plausible:
        if point.agent_id not in agents:
            outcome.rejected.append(
                Rejection(
                    candidate.index,
                    "agentId",
                    f"agent {point.agent_id} not found",
                    ErrorCode.NOT_FOUND,
                )
            )
        elif point.name not in names:
            outcome.rejected.append(
                Rejection(
                    candidate.index,
                    "name",
                    f"metric {point.name!r} is not registered; register it with registerMetric",
                )
            )
        else:
            outcome.accepted.append(point)
    outcome.rejected.sort(key=lambda rejection: rejection.index)
    return outcome


async def record_points(stores: Stores, points: Sequence[MetricPoint]) -> RecordResult:
    """Write checked points, end cached aggregates that late ones change, and tell
    subscribers; events are best effort."""
    result = await metrics_store(stores).record(points)
    if stores.entity_cache is not None:
        await stores.entity_cache.aggregates.recorded(points)
    if stores.events is not None:
        for start in range(0, len(points), EVENT_POINTS):
            await stores.events.publish(
                METRIC_RECORDED_CHANNEL,
                {"points": [event_of(point) for point in points[start : start + EVENT_POINTS]]},
            )
    return result


async def record_points_once(
    ctx: RequestContext, points: Sequence[MetricPoint], *, idempotency_key: str | None
) -> RecordResult:
    """`record_points` for a mutation: a retry under the same key gets the first call's
    counts. Points are idempotent by identity, so the metrics store, which may be
    another database, needs no share in the key's transaction."""

    async def record(conn: PgConnection) -> JSON:
        result = await record_points(ctx.stores, points)
        return {"received": result.received, "inserted": result.inserted}

    answer = await run_once(
        ctx.stores.postgres, ctx.write_context(idempotency_key), "metrics.record", record
    )
    return RecordResult(received=answer["received"], inserted=answer["inserted"])


def event_of(point: MetricPoint) -> dict[str, Any]:
    return {
        "agent_id": str(point.agent_id),
        "name": point.name,
        "time": point.time.isoformat(),
        "value": point.value,
        "labels": point.labels,
    }


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """`Agent.metrics` arguments: one query serves every agent asking the same thing."""

    agent_id: UUID
    names: tuple[str, ...]
    window: Window
    aggregate: Aggregate
    fill: Fill = Fill.NONE
    # Canonical JSON of the label filter, so equal filters batch together.
    labels: str | None = None


_Question = tuple[tuple[str, ...], Window, Aggregate, Fill, str | None]


async def load_series(stores: Stores, keys: Sequence[SeriesKey]) -> list[list[Series]]:
    """The batch function of the metrics loader: one round trip per distinct question."""
    groups: dict[_Question, list[UUID]] = {}
    for key in keys:
        groups.setdefault(_question(key), []).append(key.agent_id)
    found: dict[tuple[_Question, UUID], list[Series]] = {}
    for question, agent_ids in groups.items():
        by_agent = await _series_by_agent(stores, agent_ids, question)
        for agent_id in agent_ids:
            found[(question, agent_id)] = by_agent[agent_id]
    return [found[(_question(key), key.agent_id)] for key in keys]


def _question(key: SeriesKey) -> _Question:
    return (key.names, key.window, key.aggregate, key.fill, key.labels)
