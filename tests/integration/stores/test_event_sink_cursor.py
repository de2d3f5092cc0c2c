"""The event sink cursor: every matching audit row is queued once, including a row
whose transaction commits after a row with a higher id was already queued.

On a database of its own: no gateway's delivery worker runs there, so the test
alone moves the cursors and claims the deliveries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from stores.postgres.event_sinks import Outcome
from stores.postgres.records import WriteContext
from stores.postgres.writes import write_audit
from tests.integration.stores import store_of_its_own
from tests.support.waiting import until

CTX = WriteContext(actor_id=None, request_id="cursor-test")


@pytest.fixture
async def store(settings: Settings, profile: Profile) -> AsyncIterator[PostgresStore]:
    async with store_of_its_own(settings, profile, "polygraph_test_sink_cursor") as store:
        yield store


async def _sink(store: PostgresStore, events: list[str]) -> uuid.UUID:
    sink, _ = await store.event_sinks.create(
        CTX, url="https://hooks.example.test/in", events=events, description="", secret="s"
    )
    return sink.id


async def _queued(store: PostgresStore) -> list[int]:
    """The event ids queued so far (claiming them, which the test may do freely)."""
    return sorted(d.event_id for d in await store.event_sinks.claim_due(1000, 60.0))


async def _audit(store: PostgresStore, resource_type: str = "task") -> None:
    async with store.connection() as conn:
        await write_audit(conn, CTX, "create", resource_type, uuid.uuid4(), None, {"n": 1})


async def _past_the_horizon(store: PostgresStore) -> None:
    """Wait until every audit row written so far may be queued: rows wait until no
    older transaction runs anywhere on the server, and other tests' transactions may
    hold that horizon back for a moment."""

    async def settled() -> bool:
        async with store.connection() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT coalesce(max(xid) < pg_snapshot_xmin(pg_current_snapshot()), true)"
                    " FROM audit_log"
                )
            )

    await until(settled)


async def test_a_row_that_commits_after_a_later_id_is_still_queued(store: PostgresStore) -> None:
    await _sink(store, ["task.*"])
    async with store.connection() as early, store.connection() as late:
        # `early` takes its transaction id first, `late` writes the lower audit id, then
        # `early` writes a higher id and commits while `late` is still open: a cursor
        # over ids alone would pass `late`'s row and never come back for it.
        early_tx = early.transaction()
        await early_tx.start()
        await early.fetchval("SELECT pg_current_xact_id()")
        late_tx = late.transaction()
        await late_tx.start()
        await write_audit(late, CTX, "create", "task", uuid.uuid4(), None, {"n": "late"})
        late_id = await late.fetchval("SELECT max(id) FROM audit_log")
        await write_audit(early, CTX, "create", "task", uuid.uuid4(), None, {"n": "early"})
        early_id = await early.fetchval("SELECT max(id) FROM audit_log")
        await early_tx.commit()
        assert early_id > late_id

        # Rows are queued once no older transaction is running anywhere on the server:
        # other tests' transactions may hold that horizon back for a moment.
        assert await _queued_until(store, early_id) == [early_id]

        await late_tx.commit()
    assert await _queued_until(store, late_id) == [late_id]


async def _one_event_fanned_out(store: PostgresStore) -> uuid.UUID:
    """A sink of task events with one event queued for it."""
    sink = await _sink(store, ["task.*"])
    await _audit(store)
    await _past_the_horizon(store)
    await store.event_sinks.fan_out(100)
    return sink


async def _queued_until(store: PostgresStore, event_id: int) -> list[int]:
    """Fan out until `event_id` is queued; every id queued meanwhile, in order."""
    queued: list[int] = []

    async def arrived() -> bool:
        await store.event_sinks.fan_out(100)
        queued.extend(await _queued(store))
        return event_id in queued

    await until(arrived)
    return sorted(queued)


async def test_the_cursor_moves_in_batches_past_rows_no_sink_wants(store: PostgresStore) -> None:
    tasks_sink = await _sink(store, ["task.create"])
    for resource_type in ("task", "agent", "task", "user", "task", "task", "task"):
        await _audit(store, resource_type)
    await _past_the_horizon(store)
    for _ in range(3):
        await store.event_sinks.fan_out(2)
    claimed = await store.event_sinks.claim_due(1000, 60.0)
    assert len(claimed) == 5 and {d.sink_id for d in claimed} == {tasks_sink}
    assert len({d.event_id for d in claimed}) == 5
    assert all(d.event is not None and d.event["type"] == "task.create" for d in claimed)
    # Nothing is queued twice, and a sink created now starts from now.
    await _sink(store, ["agent.*", "task.*"])
    await store.event_sinks.fan_out(100)
    assert await _queued(store) == []


async def test_rows_restored_from_a_server_ahead_are_not_sent_again(
    store: PostgresStore,
) -> None:
    sink = await _one_event_fanned_out(store)
    assert len(await _queued(store)) == 1
    # As a dump of a busier server restores here: its rows and cursors carry
    # transaction ids this server has not reached yet.
    async with store.connection() as conn:
        ahead = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint + 1000000"
        await conn.execute(f"UPDATE audit_log SET xid = ({ahead})::text::xid8")
        await conn.execute(
            f"UPDATE event_sinks SET cursor_xid = ({ahead})::text::xid8 WHERE id = $1", sink
        )
    assert await store.event_sinks.rebase_after_restore() >= 2

    async with store.connection() as conn:
        future = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())"
        )
    assert future == 0, "a restored row would be sent again once this server reaches its xid"
    await _audit(store)
    await _past_the_horizon(store)
    await store.event_sinks.fan_out(100)
    assert len(await _queued(store)) == 1, "the sink receives what happens after the restore"


async def test_a_sink_deleted_while_its_deliveries_settle_waits_its_turn(
    store: PostgresStore,
) -> None:
    sink = await _one_event_fanned_out(store)
    [delivery] = await store.event_sinks.claim_due(1000, 60.0)

    async def waiting_on_locks(count: int) -> bool:
        async with store.connection() as conn:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        return bool(found >= count)

    # A third transaction holds the delivery, so the settle and the delete both start
    # and then wait; once it lets go, each takes what it needs. Taken in different
    # orders (the delete: sink then delivery; a settle: delivery then sink), one of
    # the two failed with a deadlock.
    async with store.connection() as holder:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "SELECT 1 FROM event_deliveries WHERE sink_id = $1 FOR UPDATE", delivery.sink_id
        )
        settling = asyncio.create_task(
            store.event_sinks.settle([Outcome(delivery.sink_id, delivery.event_id)])
        )
        await until(lambda: waiting_on_locks(1))
        deleting = asyncio.create_task(store.event_sinks.delete(CTX, sink))
        await until(lambda: waiting_on_locks(2))
        await holding.rollback()
    await settling
    assert await deleting is True
    assert [s.id for s in await store.event_sinks.list_sinks()] == []
