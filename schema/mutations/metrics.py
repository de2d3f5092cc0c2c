"""Metric mutations: record points (all or nothing) and register metric names."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import relay

from resolvers import metrics as resolve
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from schema.idempotency import idempotency_key
from schema.metrics import MetricName
from schema.relay import decode_id
from schema.scalars import JSON
from schema.user_errors import UserError, attempt
from stores.metrics.validation import MAX_POINTS_PER_REQUEST

Info = strawberry.Info[RequestContext, None]


@strawberry.input(description="One observation of a metric by an agent.")
class MetricPointInput:
    agent_id: relay.GlobalID
    name: str = strawberry.field(description="A registered metric name.")
    value: float
    time: datetime | None = strawberry.field(
        default=None, description="With a UTC offset; the server's clock when left out."
    )
    labels: JSON | None = strawberry.field(
        default=None, description="String labels; part of the point's identity."
    )


@strawberry.input
class RecordMetricsInput:
    points: list[MetricPointInput] = strawberry.field(
        description=f"At most {MAX_POINTS_PER_REQUEST}; one bad point and none is written."
    )
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class RecordMetricsPayload:
    accepted: int = strawberry.field(description="Points stored by this call.")
    duplicates: int = strawberry.field(
        description="Points already stored (same agent, name, time and labels): skipped."
    )
    user_errors: list[UserError]


@strawberry.input
class RegisterMetricInput:
    name: str
    unit: str = ""
    description: str = ""
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class RegisterMetricPayload:
    metric: MetricName | None
    user_errors: list[UserError]


@strawberry.type
class MetricMutations:
    @strawberry.mutation(
        description="Record points, all or none: each bad point gets a userError naming it "
        "(`points.3.value`). Operators, and agents for themselves."
    )
    async def record_metrics(self, info: Info, input: RecordMetricsInput) -> RecordMetricsPayload:
        ctx = info.context
        await resolve.require_recorder(ctx.stores, ctx.principal)
        if len(input.points) > MAX_POINTS_PER_REQUEST:
            error = UserError(
                field="points",
                message=f"at most {MAX_POINTS_PER_REQUEST} points per call; use POST "
                "/ingest/metrics for bulk loads",
                code=ErrorCode.BAD_USER_INPUT,
            )
            return RecordMetricsPayload(accepted=0, duplicates=0, user_errors=[error])
        errors: list[UserError] = []
        candidates: list[resolve.Candidate] = []
        for index, point in enumerate(input.points):
            try:
                agent_id = decode_id(point.agent_id, "Agent", field="agentId")
            except ClientError as exc:
                errors.append(
                    UserError(field=f"points.{index}.agentId", message=exc.message, code=exc.code)
                )
                continue
            candidates.append(
                resolve.Candidate(
                    index, agent_id, point.name, point.value, point.time, point.labels
                )
            )
        checked = await resolve.check_points(ctx.stores, ctx.principal, candidates)
        if any(r.code is ErrorCode.FORBIDDEN for r in checked.rejected):
            forbidden = next(r for r in checked.rejected if r.code is ErrorCode.FORBIDDEN)
            raise ClientError(ErrorCode.FORBIDDEN, forbidden.message)
        errors.extend(
            UserError(field=f"points.{r.index}.{r.field}", message=r.message, code=r.code)
            for r in checked.rejected
        )
        if errors:
            errors.sort(key=lambda error: int((error.field or "points.0").split(".")[1]))
            return RecordMetricsPayload(accepted=0, duplicates=0, user_errors=errors)
        result = await resolve.record_points_once(
            ctx, checked.accepted, idempotency_key=input.idempotency_key
        )
        return RecordMetricsPayload(
            accepted=result.inserted, duplicates=result.duplicates, user_errors=[]
        )

    @strawberry.mutation(
        description="Register a metric name with its unit and description, or update them. "
        "Operators and up."
    )
    async def register_metric(
        self, info: Info, input: RegisterMetricInput
    ) -> RegisterMetricPayload:
        require(info.context.principal, at_least=Role.OPERATOR)
        record, errors = await attempt(
            resolve.register_name(
                info.context,
                input.name,
                unit=input.unit,
                description=input.description,
                idempotency_key=input.idempotency_key,
            )
        )
        return RegisterMetricPayload(
            metric=MetricName.from_record(record) if record else None, user_errors=errors
        )
