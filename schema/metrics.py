"""Metrics: series, summaries, the name registry and live points (TimescaleDB or native)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast, overload
from uuid import UUID

import orjson
import strawberry
from graphql import FieldNode, FragmentDefinitionNode
from strawberry import relay

from resolvers import metrics as resolve
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.live import live_events
from schema.relay import decode_id, encode_id, id_text, require_ids
from schema.scalars import JSON, json_object
from stores import InvalidInput
from stores.metrics import records as store
from stores.metrics.buckets import Window, format_bucket, parse_bucket
from stores.postgres.metric_names import MetricName as MetricNameRecord

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]

MetricAggregate = strawberry.enum(
    store.Aggregate,
    name="MetricAggregate",
    description="How points in a bucket combine; percentiles are exact, read from raw points.",
)
MetricFill = strawberry.enum(
    store.Fill,
    name="MetricFill",
    description="Empty buckets: left out (NONE), null, the previous value, or interpolated.",
)
MetricSource = strawberry.enum(
    store.Source,
    name="MetricSource",
    description="What answered: raw points, or the 1-minute or 1-hour rollup.",
)

MAX_SERIES = 1_000
BUCKET_HELP = "Bucket width: 30s, 5m, 1h, 1d or 1w. Buckets start at whole UTC units."


@strawberry.type(description="One bucket: its start (UTC) and the aggregate of its points.")
class MetricBucket:
    """Answered from the store's `BucketValue`s as they are (same attributes; no
    interface, so no type check): a series of hundreds of buckets builds no object per
    bucket. Give it a resolver or an interface and `MetricSeries.from_record` must map."""

    time: datetime
    value: float | None


@strawberry.type(description="An agent's metric, bucketed over a window.")
class MetricSeries:
    agent_uuid: strawberry.Private[UUID]
    name: str
    bucket: str
    aggregate: MetricAggregate  # type: ignore[valid-type]
    source: MetricSource  # type: ignore[valid-type]
    points: list[MetricBucket]
    # Made with the series (`from_record`), as text: a plain field, not a resolver call
    # per series, and no `GlobalID` to make and serialize.
    agent_id: strawberry.ID

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_uuid)

    @classmethod
    def from_record(
        cls, series: store.Series, bucket: str, aggregate: store.Aggregate
    ) -> MetricSeries:
        """`bucket` is the window's width as the API writes it (`format_bucket`),
        worked out once for every series of a request."""
        return cls(
            agent_uuid=series.agent_id,
            name=series.name,
            bucket=bucket,
            aggregate=aggregate,
            source=series.source,
            points=cast(list[MetricBucket], series.buckets),
            agent_id=id_text("Agent", series.agent_id),
        )


class MetricSeriesRows(Sequence[MetricSeries]):
    """`metricSeries`' answer as the store read it: a series per agent and name, in
    the order asked (`keys`), over the rows of their buckets. The planned executor
    completes the rows straight into the response when the selection asks only what
    they hold (gateway/engine/series.py); anything else (graphql-core's executor, a
    selection with `agent`) iterates `MetricSeries` objects, made when first asked for."""

    __slots__ = ("_made", "aggregate", "bucket", "keys", "read")

    def __init__(
        self,
        keys: list[tuple[UUID, str]],
        read: store.SeriesRows,
        bucket: str,
        aggregate: store.Aggregate,
    ) -> None:
        self.keys = keys
        self.read = read
        self.bucket = bucket
        self.aggregate = aggregate
        self._made: list[MetricSeries] | None = None

    def _series(self) -> list[MetricSeries]:
        made = self._made
        if made is None:
            buckets = self.read.buckets()
            source = self.read.source
            made = self._made = [
                MetricSeries.from_record(
                    store.Series(agent_id, name, source, buckets.get((agent_id, name), [])),
                    self.bucket,
                    self.aggregate,
                )
                for agent_id, name in self.keys
            ]
        return made

    @overload
    def __getitem__(self, index: int) -> MetricSeries: ...

    @overload
    def __getitem__(self, index: slice) -> list[MetricSeries]: ...

    def __getitem__(self, index: int | slice) -> MetricSeries | list[MetricSeries]:
        return self._series()[index]

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[MetricSeries]:
        return iter(self._series())


@strawberry.type(description="A registered metric name.")
class MetricName:
    name: str
    unit: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, record: MetricNameRecord) -> MetricName:
        return cls(
            name=record.name,
            unit=record.unit,
            description=record.description,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


@strawberry.type(description="For dashboards: an agent's latest value of a metric, and its trend.")
class MetricSummary:
    agent_uuid: strawberry.Private[UUID]
    name: str
    latest_value: float
    latest_at: datetime
    recent_average: float | None = strawberry.field(description="Mean over the last window.")
    previous_average: float | None = strawberry.field(description="Mean over the window before it.")
    trend: float | None = strawberry.field(
        description="recentAverage - previousAverage; null without both."
    )
    points: int

    @strawberry.field
    def agent_id(self) -> relay.GlobalID:
        return encode_id("Agent", self.agent_uuid)

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_uuid)


@strawberry.type(description="A point just recorded.")
class MetricPointRecorded:
    agent_uuid: strawberry.Private[UUID]
    name: str
    time: datetime
    value: float
    labels: JSON

    @strawberry.field
    def agent_id(self) -> relay.GlobalID:
        return encode_id("Agent", self.agent_uuid)


def window_of(start: datetime, end: datetime, bucket: str) -> Window:
    try:
        return Window.of(start, end, parse_bucket(bucket))
    except InvalidInput as exc:
        raise ClientError(ErrorCode.BAD_USER_INPUT, exc.message, field=exc.field) from None


def labels_key(labels: JSON | None) -> str | None:
    if not labels:
        return None
    return orjson.dumps(json_object(labels, field="labels"), option=orjson.OPT_SORT_KEYS).decode()


async def agent_metrics(info: Info, agent_id: UUID, **arguments: Any) -> MetricSeries:
    """`Agent.metrics` (its arguments by their names in the resolver), through the
    loader that batches a page of agents into one query, or answers what the page
    settled."""
    key_of, window = agent_metrics_keys(info.context, arguments)
    (series,) = await info.context.loaders.metrics_by_agent_id.load(key_of(agent_id))
    return MetricSeries.from_record(series, format_bucket(window.width), arguments["aggregate"])


def agent_metrics_keys(
    context: RequestContext, arguments: Mapping[str, Any]
) -> tuple[Callable[[UUID], resolve.SeriesKey], Window]:
    """Each agent's loader key for one `Agent.metrics` field, from the field's converted
    arguments, and its window: worked out once for a page of agents. Raises for a
    principal below viewer and for a bad bucket."""
    require(context.principal, at_least=Role.VIEWER)
    window = window_of(arguments["from_"], arguments["to"], arguments["bucket"])
    names = (arguments["name"],)
    aggregate, how = arguments["aggregate"], arguments["fill"]
    labels = labels_key(arguments["labels"])

    def key_of(agent_id: UUID) -> resolve.SeriesKey:
        return resolve.SeriesKey(agent_id, names, window, aggregate, how, labels)

    return key_of, window


def settled_agent_metrics(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], MetricSeries | None]:
    """`Agent.metrics` for a page of agents whose series the page settled."""
    key_of, window = agent_metrics_keys(context, arguments)
    aggregate = arguments["aggregate"]
    bucket = format_bucket(window.width)
    loaders = context.loaders

    def metrics_of(agent: Agent) -> MetricSeries | None:
        # The loader looked up each time, not held: see `schema/agents.py: _settled_tasks`.
        found = loaders.metrics_by_agent_id.settled(key_of(agent.record.id))
        return None if found is None else MetricSeries.from_record(found[0], bucket, aggregate)

    return metrics_of


@strawberry.type
class MetricQueries:
    @strawberry.field(
        description="Many agents' metrics over one window in one query. " + BUCKET_HELP
    )
    async def metric_series(
        self,
        info: Info,
        names: list[str],
        agents: list[relay.GlobalID],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        bucket: str = "1h",
        aggregate: MetricAggregate = store.Aggregate.AVG,  # type: ignore[valid-type]
        fill: MetricFill = store.Fill.NONE,  # type: ignore[valid-type]
    ) -> list[MetricSeries]:
        require(info.context.principal, at_least=Role.VIEWER)
        agent_ids = list(dict.fromkeys(require_ids(agents, "Agent", field="agents")))
        unique_names = list(dict.fromkeys(names))
        if len(agent_ids) * len(unique_names) > MAX_SERIES:
            raise ClientError(
                ErrorCode.BAD_USER_INPUT,
                f"at most {MAX_SERIES} series (agents x names) per request",
                field="agents",
            )
        window = window_of(from_, to, bucket)
        read = await resolve.read_series_rows(
            info.context.stores, agent_ids, unique_names, window, aggregate, how=fill
        )
        keys = [(agent_id, name) for agent_id in agent_ids for name in unique_names]
        # A sequence of them: see MetricSeriesRows.
        return cast(
            list[MetricSeries],
            MetricSeriesRows(keys, read, format_bucket(window.width), aggregate),
        )

    @strawberry.field(
        description="Latest value and trend per agent and metric, for dashboards. `window` "
        "(e.g. 1h) compares the mean of the last window with the one before it."
    )
    async def metrics_summary(
        self,
        info: Info,
        agents: list[relay.GlobalID] | None = None,
        names: list[str] | None = None,
        window: str = "1h",
        first: int = 100,
    ) -> list[MetricSummary]:
        require(info.context.principal, at_least=Role.VIEWER)
        agent_ids = require_ids(agents, "Agent", field="agents") if agents is not None else None
        if first == 0:
            return []
        try:
            width = parse_bucket(window, field="window")
        except InvalidInput as exc:
            raise ClientError(ErrorCode.BAD_USER_INPUT, exc.message, field=exc.field) from None
        rows = await resolve.summarise(
            info.context.stores, agent_ids, names, window=width, limit=first
        )
        return [
            MetricSummary(
                agent_uuid=row.agent_id,
                name=row.name,
                latest_value=row.latest_value,
                latest_at=row.latest_at,
                recent_average=row.recent_avg,
                previous_average=row.previous_avg,
                trend=row.trend,
                points=row.points,
            )
            for row in rows
        ]

    @strawberry.field(description="Registered metric names, with unit and description.")
    async def metric_names(self, info: Info) -> list[MetricName]:
        require(info.context.principal, at_least=Role.VIEWER)
        return [
            MetricName.from_record(r) for r in await resolve.registered_names(info.context.stores)
        ]


@strawberry.type
class MetricSubscriptions:
    @strawberry.subscription(
        description="Points as they are recorded, from any gateway replica. Leave an argument "
        "out to match everything."
    )
    async def metric_recorded(
        self,
        info: Info,
        agent_id: relay.GlobalID | None = None,
        names: list[str] | None = None,
    ) -> AsyncGenerator[MetricPointRecorded, None]:
        require(info.context.principal, at_least=Role.VIEWER)
        wanted_agent = decode_id(agent_id, "Agent", field="agentId") if agent_id else None
        wanted_names = set(names) if names else None
        async for event in live_events(info.context, resolve.METRIC_RECORDED_CHANNEL):
            for point in _points_of(event):
                if wanted_agent is not None and point.agent_uuid != wanted_agent:
                    continue
                if wanted_names is not None and point.name not in wanted_names:
                    continue
                yield point


def _points_of(event: dict[str, Any]) -> list[MetricPointRecorded]:
    return [
        MetricPointRecorded(
            agent_uuid=UUID(point["agent_id"]),
            name=point["name"],
            time=datetime.fromisoformat(point["time"]),
            value=point["value"],
            labels=point.get("labels") or {},
        )
        for point in event.get("points", [])
    ]
