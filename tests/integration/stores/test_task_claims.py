"""Claims in PostgreSQL: each ready task to one claimer, leases, fencing, the sweep."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from uuid import UUID

import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from stores.errors import Conflict, InvalidInput
from stores.postgres.records import Task
from stores.postgres.task_events import replay
from stores.postgres.writes import to_json
from tests.integration.stores import (
    audit_rows,
    new_agent,
    new_ctx,
    new_task,
    outbox_rows,
    store_of_its_own,
    unique,
)
from tests.support.waiting import until

CLAIMERS = 20
TASKS = 1000


async def _claim(
    store: PostgresStore,
    agent_id: UUID,
    repository: str,
    *,
    lease_s: float = 600,
    caps: tuple[str, ...] = (),
) -> Task | None:
    return await store.claims.claim_next(
        new_ctx(), agent_id, capabilities=caps, repository=repository, lease_s=lease_s
    )


async def _bulk_tasks(store: PostgresStore, repository: str, count: int) -> None:
    # Marked embedded: a gateway another test of this worker started (the session's
    # client) fills pending embeddings, and a row it holds for a moment is one a claim
    # passes over, which would make "the highest priority left" untestable here.
    async with store.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (title, repository, priority, embedding_pending)"
            " SELECT 'bulk ' || n, $1, 1 + n % 10, false FROM generate_series(1, $2) AS n",
            repository,
            count,
        )


async def test_twenty_claimers_take_each_of_a_thousand_tasks_exactly_once(
    settings: Settings, migrated: None
) -> None:
    repository = unique("repo")
    options = replace(settings.postgres_options(), min_size=1, max_size=CLAIMERS)
    async with PostgresStore(options) as store:
        await _bulk_tasks(store, repository, TASKS)
        agents = [(await new_agent(store)).id for _ in range(CLAIMERS)]

        async def claimer(agent_id: UUID) -> list[tuple[UUID, int]]:
            taken = []
            while (task := await _claim(store, agent_id, repository)) is not None:
                assert task.assignee_id == agent_id and task.status == "assigned"
                taken.append((task.id, task.priority))
            return taken

        results = await asyncio.gather(*(claimer(agent) for agent in agents))
        claimed = Counter(task_id for taken in results for task_id, _ in taken)
        assert len(claimed) == TASKS and set(claimed.values()) == {1}
        # Every claimer got work: they pass each other instead of queueing on one row.
        assert all(results)
        # Each claimer took the highest priority left when it asked (of the rows no
        # other transaction held: claims skip those).
        for taken in results:
            priorities = [priority for _, priority in taken]
            assert priorities == sorted(priorities, reverse=True)
        async with store.connection() as conn:
            counts = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE t.fencing_token = 1 AND t.status = 'assigned') AS held,"
                " (SELECT count(*) FROM task_events e JOIN tasks x ON x.id = e.task_id"
                "  WHERE x.repository = $1 AND e.type = 'claimed') AS events,"
                " (SELECT count(*) FROM audit_log a JOIN tasks x ON x.id::text = a.resource_id"
                "  WHERE x.repository = $1 AND a.action = 'claim') AS audited"
                " FROM tasks AS t WHERE t.repository = $1",
                repository,
            )
        assert counts is not None
        assert dict(counts) == {"held": TASKS, "events": TASKS, "audited": TASKS}


async def test_a_task_is_ready_once_every_dependency_completed(store: PostgresStore) -> None:
    repository = unique("repo")
    agent = (await new_agent(store)).id
    first = await new_task(store, repository=repository, priority=1)
    second = await new_task(store, repository=repository, priority=1)
    waiting = await new_task(store, repository=repository, priority=10)
    for dependency in (first, second):
        await store.tasks.add_dependency(new_ctx(), waiting.id, dependency.id)

    claimed = await _claim(store, agent, repository)
    assert claimed is not None and claimed.id == first.id
    done = await _finish(store, claimed, agent)
    assert await store.claims.ready_dependents(done.id) == []
    claimed = await _claim(store, agent, repository)
    assert claimed is not None and claimed.id == second.id
    assert await _claim(store, agent, repository) is None
    await _finish(store, claimed, agent)
    assert [t.id for t in await store.claims.ready_dependents(second.id)] == [waiting.id]
    claimed = await _claim(store, agent, repository)
    assert claimed is not None and claimed.id == waiting.id


async def test_a_claimer_needs_every_capability_the_task_requires(store: PostgresStore) -> None:
    repository = unique("repo")
    agent = (await new_agent(store)).id
    task = await new_task(
        store, repository=repository, required_capabilities=["python", "gpu", "gpu"]
    )
    assert task.required_capabilities == ("gpu", "python")
    assert await _claim(store, agent, repository, caps=("python",)) is None
    claimed = await _claim(store, agent, repository, caps=("gpu", "python", "rust"))
    assert claimed is not None and claimed.id == task.id
    # Queued for Neo4j like every task change (the projector polls for it).
    assert (await outbox_rows(store, id=str(task.id)))[-1] == (
        "task.upserted",
        {
            "id": str(task.id), "title": task.title, "status": "assigned",
            "priority": task.priority, "assignee_id": str(agent), "workflow_id": None,
        },
    )  # fmt: skip
    with pytest.raises(InvalidInput):
        await _claim(store, agent, repository, caps=tuple(str(n) for n in range(101)))
    with pytest.raises(InvalidInput):
        await _claim(store, agent, repository, lease_s=0)


async def test_a_lapsed_lease_returns_the_task_and_a_stale_holder_is_refused(
    store: PostgresStore,
) -> None:
    repository = unique("repo")
    first, second = (await new_agent(store)).id, (await new_agent(store)).id
    task = await new_task(store, repository=repository, max_retries=1)
    held = await _claim(store, first, repository, lease_s=1)
    assert held is not None and held.fencing_token == 1
    await store.tasks.transition(
        new_ctx(), task.id, "in_progress", expected_version=None, fencing_token=1, holder_id=first
    )
    # The first claimer dies: nothing renews its lease.
    returned = await _sweep_until_returned(store, task.id)
    assert returned.status == "pending" and returned.retry_count == 1
    assert returned.assignee_id is None and returned.lease_expires_at is None

    again = await _claim(store, second, repository, lease_s=600)
    assert again is not None and again.id == task.id and again.fencing_token == 2
    for holder in (first, None):
        with pytest.raises(Conflict, match="stale"):
            await store.tasks.transition(
                new_ctx(), task.id, "in_progress", expected_version=None, fencing_token=1,
                holder_id=holder,
            )  # fmt: skip
    with pytest.raises(InvalidInput, match="fencingToken"):
        await store.tasks.transition(
            new_ctx(), task.id, "in_progress", expected_version=None, holder_id=second
        )
    beat = await store.claims.heartbeat(
        new_ctx(), task.id, fencing_token=2, holder_id=second, lease_s=900
    )
    assert beat.lease_expires_at is not None and again.lease_expires_at is not None
    assert beat.lease_expires_at > again.lease_expires_at
    done = await _finish(store, beat, second)
    assert done.status == "completed" and done.lease_expires_at is None
    # Completed once: the holder's own retry is refused too, the task is not claimed.
    with pytest.raises(Conflict):
        await store.tasks.transition(
            new_ctx(), task.id, "completed", expected_version=None, fencing_token=2,
            holder_id=second,
        )  # fmt: skip
    history = [event.type for event in (await store.tasks.events_of([task.id]))[task.id]]
    assert history == [
        "created", "claimed", "started", "lease_expired", "claimed", "heartbeat", "started",
        "completed",
    ]  # fmt: skip
    events = (await store.tasks.events_of([task.id]))[task.id]
    assert replay(task.id, events) == done


async def test_retries_are_counted_and_max_retries_fails_the_task(store: PostgresStore) -> None:
    repository = unique("repo")
    agent = (await new_agent(store)).id
    task = await new_task(store, repository=repository, max_retries=1)
    assert await _claim(store, agent, repository, lease_s=1) is not None
    assert (await _sweep_until_returned(store, task.id)).status == "pending"
    assert await _claim(store, agent, repository, lease_s=1) is not None
    failed = await _sweep_until_returned(store, task.id)
    assert failed.status == "failed" and failed.retry_count == 1
    assert failed.error_message is not None and "maxRetries 1" in failed.error_message
    assert await _claim(store, agent, repository) is None
    async with store.connection() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE resource_id = $1 AND action = 'lease_expired'",
            str(task.id),
        )
    assert audited == 2


async def test_two_sweepers_return_each_lapsed_task_once(
    settings: Settings, migrated: None
) -> None:
    repository = unique("repo")
    options = replace(settings.postgres_options(), min_size=1, max_size=4)
    async with PostgresStore(options) as store:
        await _bulk_tasks(store, repository, 50)
        agent = (await new_agent(store)).id
        while await _claim(store, agent, repository, lease_s=1) is not None:
            pass
        async with store.connection() as conn:
            await conn.execute(
                "UPDATE tasks SET lease_expires_at = now() - interval '1 second'"
                " WHERE repository = $1",
                repository,
            )
        swept = await asyncio.gather(*(_sweep_all(store) for _ in range(2)))
        mine = Counter(t.id for batch in swept for t in batch if t.repository == repository)
        # A gateway serving other tests on this database sweeps too, and may take some:
        # none is returned twice here, and the database shows each returned once.
        assert set(mine.values()) <= {1}
        async with store.connection() as conn:
            returns = await conn.fetch(
                "SELECT t.retry_count, t.status, count(e.id) AS expiries FROM tasks t"
                " LEFT JOIN task_events e ON e.task_id = t.id AND e.type = 'lease_expired'"
                " WHERE t.repository = $1 GROUP BY t.id",
                repository,
            )
        assert len(returns) == 50
        assert {(r["retry_count"], r["status"], r["expiries"]) for r in returns} == {
            (1, "pending", 1)
        }


async def _sweep_all(store: PostgresStore) -> list[Task]:
    swept: list[Task] = []
    while batch := await store.claims.expire_leases(new_ctx(actor_id=None), limit=10):
        swept.extend(batch)
    return swept


async def _sweep_until_returned(store: PostgresStore, task_id: UUID) -> Task:
    """Sweep until `task_id` comes back: its lease lapses on the database's clock."""
    found: list[Task] = []

    async def returned() -> bool:
        found.extend(t for t in await store.claims.expire_leases(new_ctx()) if t.id == task_id)
        return bool(found)

    await until(returned)
    return found[0]


async def _finish(store: PostgresStore, task: Task, agent: UUID) -> Task:
    for status in ("in_progress", "completed"):
        task = await store.tasks.transition(
            new_ctx(), task.id, status, expected_version=None,
            fencing_token=task.fencing_token, holder_id=agent,
        )  # fmt: skip
    return task


async def test_a_retried_claim_answers_the_task_the_first_claimed(store: PostgresStore) -> None:
    repository = unique("repo")
    agent = (await new_agent(store)).id
    caller = new_ctx(key=unique("claim"))

    async def claim() -> Task | None:
        keyed = new_ctx(actor_id=caller.actor_id, key=caller.idempotency_key)
        return await store.claims.claim_next(
            keyed, agent, capabilities=(), repository=repository, lease_s=600
        )

    # Nothing claimed keeps no key: the same key claims once there is work.
    assert await claim() is None
    first = await new_task(store, repository=repository)
    second = await new_task(store, repository=repository)
    claimed = await claim()
    assert claimed is not None and claimed.id in (first.id, second.id)
    again = await claim()
    assert again is not None and again.id == claimed.id and again.fencing_token == 1
    other = await _claim(store, agent, repository)
    assert other is not None and other.id != claimed.id

    beat_key = new_ctx(actor_id=caller.actor_id, key=unique("beat"))
    beat = await store.claims.heartbeat(
        beat_key, claimed.id, fencing_token=1, holder_id=agent, lease_s=900
    )
    replayed = await store.claims.heartbeat(
        new_ctx(actor_id=caller.actor_id, key=beat_key.idempotency_key),
        claimed.id, fencing_token=1, holder_id=agent, lease_s=30,
    )  # fmt: skip
    assert replayed == beat


async def test_a_claim_and_a_lapsed_lease_audit_the_task_as_other_writes_do(
    store: PostgresStore,
) -> None:
    repository = unique("repo")
    agent = (await new_agent(store)).id
    task = await new_task(store, repository=repository)
    claim_ctx = new_ctx()
    claimed = await store.claims.claim_next(
        claim_ctx, agent, capabilities=(), repository=repository, lease_s=1
    )
    assert claimed is not None and claimed.lease_expires_at is not None
    [claim] = await audit_rows(store, claim_ctx)
    # Rendered in SQL in the claiming statement, as Python renders the record elsewhere.
    assert claim["new_value"] == to_json(claimed)
    assert claim["old_value"] == {"status": "pending", "fencing_token": 0}

    returned = await _sweep_until_returned(store, task.id)
    async with store.connection() as conn:
        lapsed = await conn.fetchrow(
            "SELECT old_value, new_value FROM audit_log"
            " WHERE resource_id = $1 AND action = 'lease_expired'",
            str(task.id),
        )
    assert lapsed is not None and lapsed["new_value"] == to_json(returned)
    assert lapsed["old_value"] == {
        "status": "assigned",
        "assignee_id": str(agent),
        "lease_expires_at": to_json(claimed)["lease_expires_at"],
        "fencing_token": 1,
        "retry_count": 0,
    }


@pytest.fixture
async def leaseless(settings: Settings, profile: Profile) -> AsyncIterator[PostgresStore]:
    """A database of its own, where no other test holds a lease."""
    async with store_of_its_own(settings, profile, "polygraph_test_leases") as store:
        yield store


async def test_the_next_expiry_is_none_without_a_lease_and_never_below_zero(
    leaseless: PostgresStore,
) -> None:
    # None sends the sweeper to sleep its full interval; a 0 here made it go round
    # every 50 ms while no lease was held at all.
    assert await leaseless.claims.next_expiry_s() is None
    repository = unique("repo")
    task = await new_task(leaseless, repository=repository)
    held = await _claim(leaseless, (await new_agent(leaseless)).id, repository, lease_s=600)
    assert held is not None and held.id == task.id
    due = await leaseless.claims.next_expiry_s()
    assert due is not None and 0 < due <= 600
    async with leaseless.connection() as conn:
        await conn.execute(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 minute' WHERE id = $1",
            task.id,
        )
    assert await leaseless.claims.next_expiry_s() == 0.0
