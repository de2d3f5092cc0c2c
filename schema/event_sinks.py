"""Event sinks: HTTP endpoints that receive task and agent events. Admins only."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import strawberry

from resolvers import event_sinks as resolve
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from schema.idempotency import idempotency_key
from schema.user_errors import UserError, attempt
from stores.postgres import records

Info = strawberry.Info[RequestContext, None]


@strawberry.type(
    description="An HTTP endpoint that receives task and agent events as signed JSON POSTs, "
    "at least once (deduplicate by event id), retried with backoff and then dropped. The "
    "counts add up every gateway's deliveries."
)
class EventSink:
    id: strawberry.ID
    url: str
    events: list[str] = strawberry.field(description="The event patterns it receives.")
    description: str
    paused: bool
    delivered_count: int = strawberry.field(description="Events it accepted (a 2xx answer).")
    retried_count: int = strawberry.field(
        description="Failed attempts that were followed by another."
    )
    dropped_count: int = strawberry.field(description="Events given up on after every attempt.")
    pending_count: int = strawberry.field(
        description="Events matched and waiting for delivery or their next attempt."
    )
    last_delivered_at: datetime | None
    last_error: str | None = strawberry.field(description="What went wrong last, if ever.")
    last_error_at: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, sink: records.EventSink) -> EventSink:
        return cls(
            id=strawberry.ID(str(sink.id)),
            url=sink.url,
            events=list(sink.events),
            description=sink.description,
            paused=sink.paused,
            delivered_count=sink.delivered,
            retried_count=sink.retried,
            dropped_count=sink.dropped,
            pending_count=sink.pending,
            last_delivered_at=sink.last_delivered_at,
            last_error=sink.last_error,
            last_error_at=sink.last_error_at,
            created_at=sink.created_at,
        )


@strawberry.input
class CreateEventSinkInput:
    url: str = strawberry.field(
        description="http or https, at most 2048 characters. The gateway POSTs to it."
    )
    events: list[str] = strawberry.field(
        description="1 to 20 patterns: task.*, agent.*, agent_relationship.*, or one "
        "action such as task.transition or agent.update."
    )
    description: str = ""
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class CreateEventSinkPayload:
    sink: EventSink | None
    secret: str | None = strawberry.field(
        description="Signs every delivery (Polygraph-Signature). Shown only here: keep it."
    )
    user_errors: list[UserError]


@strawberry.input
class EventSinkIdInput:
    id: strawberry.ID
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class PauseEventSinkInput:
    id: strawberry.ID
    paused: bool = strawberry.field(
        default=True,
        description="False resumes it; what happened while paused is delivered then.",
    )
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class DeleteEventSinkPayload:
    deleted: bool = strawberry.field(description="False when there was no such sink.")
    user_errors: list[UserError]


@strawberry.type
class PauseEventSinkPayload:
    sink: EventSink | None
    user_errors: list[UserError]


def _sink_id(value: strawberry.ID) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{str(value)[:60]!r} is not an event sink id", field="id"
        ) from None


@strawberry.type
class EventSinkQueries:
    @strawberry.field(description="Every event sink, oldest first, with its counts. Admins.")
    async def event_sinks(self, info: Info) -> list[EventSink]:
        return [EventSink.from_record(s) for s in await resolve.list_sinks(info.context)]


@strawberry.type
class EventSinkMutations:
    @strawberry.mutation(
        description="Register an HTTP endpoint for task and agent events committed from now "
        "on; the answer holds its signing secret, shown this once. Admins; audited."
    )
    async def create_event_sink(
        self, info: Info, input: CreateEventSinkInput
    ) -> CreateEventSinkPayload:
        outcome, errors = await attempt(
            resolve.create_sink(
                info.context,
                url=input.url,
                events=input.events,
                description=input.description,
                idempotency_key=input.idempotency_key,
            )
        )
        if outcome is None:
            return CreateEventSinkPayload(sink=None, secret=None, user_errors=errors)
        sink, secret = outcome
        return CreateEventSinkPayload(
            sink=EventSink.from_record(sink), secret=secret, user_errors=errors
        )

    @strawberry.mutation(
        description="Remove an event sink and its undelivered events. Admins; audited."
    )
    async def delete_event_sink(
        self, info: Info, input: EventSinkIdInput
    ) -> DeleteEventSinkPayload:
        async def run() -> bool:
            return await resolve.delete_sink(
                info.context, _sink_id(input.id), idempotency_key=input.idempotency_key
            )

        deleted, errors = await attempt(run())
        return DeleteEventSinkPayload(deleted=bool(deleted), user_errors=errors)

    @strawberry.mutation(
        description="Pause (or resume) deliveries to an event sink. Admins; audited."
    )
    async def pause_event_sink(
        self, info: Info, input: PauseEventSinkInput
    ) -> PauseEventSinkPayload:
        async def run() -> records.EventSink:
            return await resolve.pause_sink(
                info.context,
                _sink_id(input.id),
                input.paused,
                idempotency_key=input.idempotency_key,
            )

        sink, errors = await attempt(run())
        return PauseEventSinkPayload(
            sink=None if sink is None else EventSink.from_record(sink), user_errors=errors
        )
