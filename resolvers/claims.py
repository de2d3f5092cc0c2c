"""Work distribution: agents pull tasks (claim, heartbeat) and hear when work is ready.

Only a session bound to an agent (`login` with `agentId`) whose grant still holds
claims, and it claims as that agent. PostgreSQL decides who gets which task (see
stores/postgres/task_claims.py); Redis only wakes claimers: a `task.available`
signal, published whenever a task may have become ready (created, a dependency
completed or removed, retried, its lease lapsed), makes every waiting claimer on
every replica try again. A signal lost to a Redis outage costs latency, not work:
waiting claimers also try again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from uuid import UUID

from resolvers.agent_grants import bound_agent, grant_revoked, require_claimer
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError, ErrorCode
from resolvers.live import live_events
from resolvers.tasks import TASK_AVAILABLE_CHANNEL, publish_task_changes, publish_task_update
from stores.postgres.records import Task
from stores.redis.events import Event, EventBus, Subscription

# A waiting claimer tries again this often even without a signal (pub/sub may lose one).
_RETRY_WITHOUT_SIGNAL_S = 5.0


async def claim_next_task(
    ctx: RequestContext,
    *,
    capabilities: Sequence[str] | None,
    repository: str | None,
    wait_s: float,
    lease_s: float | None,
    idempotency_key: str | None = None,
) -> Task | None:
    """The best ready task for the caller's agent, claimed; None when none came within
    `wait_s`. Without `capabilities`, the agent's registered ones."""
    doing = "claiming a task"
    agent_id = bound_agent(ctx.principal, doing=doing)
    options = ctx.stores.claim_options
    if not 0 <= wait_s <= options.max_wait_s:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            f"waitSeconds must be from 0 to {options.max_wait_s:g}",
            field="waitSeconds",
        )
    claims = ctx.stores.postgres.claims
    assert ctx.principal.user_id is not None
    # The grant and the agent's capabilities in one query.
    registered = await claims.claimer_capabilities(ctx.principal.user_id, agent_id)
    if registered is None:
        raise grant_revoked(agent_id, doing=doing)
    held = registered if capabilities is None else capabilities
    lease = options.lease_s if lease_s is None else lease_s

    async def attempt() -> Task | None:
        return await claims.claim_next(
            ctx.write_context(idempotency_key),
            agent_id,
            capabilities=held,
            repository=repository,
            lease_s=lease,
        )

    task = await attempt()
    events = ctx.stores.events
    if task is None and wait_s > 0 and events is not None:
        task = await _wait_and_claim(events, attempt, held, repository, wait_s)
    if task is not None:
        await publish_task_update(ctx.stores, task, "claimed")
    return task


async def heartbeat_task(
    ctx: RequestContext,
    task_id: UUID,
    *,
    fencing_token: int,
    lease_s: float | None,
    idempotency_key: str | None = None,
) -> Task:
    agent_id = await require_claimer(ctx, doing="extending a lease")
    lease = ctx.stores.claim_options.lease_s if lease_s is None else lease_s
    return await ctx.stores.postgres.claims.heartbeat(
        ctx.write_context(idempotency_key),
        task_id,
        fencing_token=fencing_token,
        holder_id=agent_id,
        lease_s=lease,
    )


async def task_available(
    ctx: RequestContext, *, capabilities: Sequence[str] | None, repository: str | None
) -> AsyncGenerator[Task, None]:
    """Tasks as they become ready for the caller's agent (still pending when sent)."""
    doing = "listening for work"
    agent_id = bound_agent(ctx.principal, doing=doing)
    assert ctx.principal.user_id is not None
    registered = await ctx.stores.postgres.claims.claimer_capabilities(
        ctx.principal.user_id, agent_id
    )
    if registered is None:
        raise grant_revoked(agent_id, doing=doing)
    held = frozenset(registered if capabilities is None else capabilities)
    async for signal in live_events(ctx, TASK_AVAILABLE_CHANNEL):
        if not _fits(signal, held, repository):
            continue
        # Loaded once per signal for every local subscriber (see `event_loaders`).
        task = await ctx.loaders.task_by_id.load(UUID(signal["task_id"]))
        if task is not None and task.status == "pending":
            yield task


async def announce_change(stores: Stores, tasks: Sequence[Task], change: str) -> None:
    """After tasks changed outside a request (the lease sweep): subscribers hear it, and
    claimers learn of the tasks back in the queue."""
    await publish_task_changes(stores, tasks, change, available=tasks)


async def _wait_and_claim(
    events: EventBus,
    attempt: Callable[[], Awaitable[Task | None]],
    held: Sequence[str],
    repository: str | None,
    wait_s: float,
) -> Task | None:
    deadline = time.monotonic() + wait_s
    capabilities = frozenset(held)
    async with events.subscribe(TASK_AVAILABLE_CHANNEL) as signals:
        while True:
            # Tried again once subscribed: a task announced before that is not missed.
            task = await attempt()
            remaining = deadline - time.monotonic()
            if task is not None or remaining <= 0:
                return task
            await _next_fitting(
                signals, capabilities, repository, min(remaining, _RETRY_WITHOUT_SIGNAL_S)
            )


async def _next_fitting(
    signals: Subscription, held: frozenset[str], repository: str | None, timeout_s: float
) -> None:
    """Return at the first signal of a task this claimer could take, or after `timeout_s`."""
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        async with asyncio.timeout(timeout_s):
            async for signal in signals:
                if _fits(signal, held, repository):
                    return


def _fits(signal: Event, held: frozenset[str], repository: str | None) -> bool:
    if repository is not None and signal.get("repository") != repository:
        return False
    required = signal.get("required_capabilities") or []
    return isinstance(required, list) and held.issuperset(required)
