"""Delivery of task and agent events to the HTTP endpoints admins register (event sinks).

Best effort, beside the writes: a mutation never waits for a sink, and a sink that is
down costs it nothing. Every gateway runs this loop; replicas share the work through
the queue in PostgreSQL (`stores/postgres/event_sinks.py`: `FOR UPDATE SKIP LOCKED`
and a lease per attempt), so a restart or a crashed replica loses nothing, and an
event may arrive twice (at least once: receivers deduplicate by its id).

Each POST carries one event as JSON, signed like Stripe's and GitHub's webhooks:
`Polygraph-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
the sink's secret, so a receiver can check the sender and refuse old replays. A
2xx answer delivers; anything else, or no answer within the timeout, is retried
after an exponential pause with jitter, and after `max_attempts` the event is
dropped. Each outcome is counted per sink (here for Prometheus, in PostgreSQL for
the `eventSinks` query) and failures are logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import orjson

from stores import PostgresStore, StoreUnavailable
from stores.postgres.event_sinks import Delivery, Outcome, refused_reason
from workers._loop import BackgroundLoop

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Polygraph-Signature"
EVENT_ID_HEADER = "Polygraph-Event-Id"
EVENT_TYPE_HEADER = "Polygraph-Event-Type"
_USER_AGENT = "Polygraph-Event-Sinks/1"
# A sink's answer matters only by its status; its body is not read.
_ERROR_LENGTH = 300
_PAUSE_AFTER_FAILURE_S = 5.0


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    # The longest one delivery attempt may take, connecting included.
    timeout_s: float = 5.0
    # Attempts per event, the first included; then it is dropped.
    max_attempts: int = 8
    # The pause before retry n is min_backoff_s * 2^(n-1), at most max_backoff_s,
    # times a random factor between 0.5 and 1 (so sinks that failed together do not
    # all come back together).
    min_backoff_s: float = 1.0
    max_backoff_s: float = 600.0
    # Attempts in flight at once from this process.
    concurrency: int = 8
    # After a look that found nothing to do: the pause before the next, at least
    # `poll_s` and at most `idle_poll_s`, ended early by `wake()` (an operation that
    # wrote through this process; the outbox NOTIFY of another replica's write, heard
    # by the projector's listener; resuming a sink). So a write's events go within
    # `poll_s` as ever, an idle gateway looks every `idle_poll_s`, and a retry that
    # falls due meanwhile may start up to that late.
    poll_s: float = 1.0
    idle_poll_s: float = 10.0
    # Deliver to loopback and link-local addresses (tests, a receiver on the same host).
    allow_loopback: bool = False

    @property
    def batch_size(self) -> int:
        """Events queued per sink per round."""
        return self.concurrency * 4

    @property
    def per_sink(self) -> int:
        """Attempts in flight for one sink: half the slots, so that a sink that keeps
        its attempts waiting leaves the rest to the others."""
        return max(1, self.concurrency // 2)

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery is hidden from other replicas: past its attempt's
        end, with room for recording it."""
        return self.timeout_s + 30.0


@dataclass(slots=True)
class SinkCounts:
    """One sink's outcomes in this process, for Prometheus."""

    delivered: int = 0
    retried: int = 0
    dropped: int = 0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Polygraph-Signature` value for `body` sent at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff_s(attempts: int, options: DeliveryOptions) -> float:
    """The pause after the `attempts`-th failed attempt."""
    doubled = options.min_backoff_s * 2.0 ** min(attempts - 1, 30)
    return min(options.max_backoff_s, doubled) * random.uniform(0.5, 1.0)


class EventSinkDelivery(BackgroundLoop):
    """Queues new events for each sink and delivers those that are due, until stopped."""

    def __init__(
        self,
        postgres: PostgresStore,
        options: DeliveryOptions,
        *,
        stop_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(what="event sink delivery", stop_timeout_s=stop_timeout_s)
        self._postgres = postgres
        self.options = options
        self._client: httpx.AsyncClient | None = None
        self._failing = False
        # Attempts in flight per sink: at most `options.per_sink` each.
        self._attempting: Counter[UUID] = Counter()
        self.counts: dict[UUID, SinkCounts] = {}

    async def _run(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.options.timeout_s),
            limits=httpx.Limits(max_connections=self.options.concurrency),
            follow_redirects=False,
            # No proxy or .netrc credentials from the environment reach a sink.
            trust_env=False,
            headers={"user-agent": _USER_AGENT, "content-type": "application/json"},
        )
        # Attempts run side by side and are recorded as each ends, while free slots are
        # filled with more: a sink that keeps its attempts waiting for the timeout takes
        # up its slots, not everyone's turn.
        in_flight: set[asyncio.Task[Outcome]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    await self._step(in_flight)
                except StoreUnavailable as exc:
                    self._failed(f"PostgreSQL is unavailable ({exc.reason})")
                    await self._sleep(_PAUSE_AFTER_FAILURE_S)
                    continue
                except Exception:
                    logger.exception("event sink delivery failed; it is tried again")
                    self._failing = True
                    await self._sleep(_PAUSE_AFTER_FAILURE_S)
                    continue
                if self._failing:
                    logger.info("event sink delivery resumed")
                    self._failing = False
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            self._attempting.clear()
            client, self._client = self._client, None
            await client.aclose()

    async def _step(self, in_flight: set[asyncio.Task[Outcome]]) -> None:
        """Queue new events and start due attempts in the free slots, then record those
        that end within `poll_s` (attempts a failed record leaves are tried again after
        their lease)."""
        room = self.options.concurrency - len(in_flight)
        if room > 0:
            # Sinks another replica is queueing for are skipped, not waited for; their
            # deliveries are claimed all the same.
            await self._postgres.event_sinks.fan_out(self.options.batch_size)
            per_sink = self.options.per_sink
            full = [sink for sink, count in self._attempting.items() if count >= per_sink]
            claimed = await self._postgres.event_sinks.claim_due(
                room, self.options.lease_s, skip_sinks=full
            )
            excess = []
            for delivery in claimed:
                if self._attempting[delivery.sink_id] >= per_sink:
                    excess.append(delivery)
                    continue
                self._attempting[delivery.sink_id] += 1
                in_flight.add(asyncio.create_task(self._attempt(delivery)))
            await self._postgres.event_sinks.release(excess)
        if not in_flight:
            await self._idle()
            return
        done, _ = await asyncio.wait(
            in_flight, timeout=self.options.poll_s, return_when=asyncio.FIRST_COMPLETED
        )
        in_flight.difference_update(done)
        outcomes = [task.result() for task in done]
        for outcome in outcomes:
            self._attempting[outcome.sink_id] -= 1
        self._attempting += Counter()  # drops the sinks with none left
        await self._postgres.event_sinks.settle(outcomes)
        self._count(outcomes)

    async def _attempt(self, delivery: Delivery) -> Outcome:
        if delivery.event is None:
            gone = "the event's audit row no longer exists"
            return Outcome(delivery.sink_id, delivery.event_id, error=gone)
        error: str | None
        try:
            async with asyncio.timeout(self.options.timeout_s):
                error = await self._post(delivery, delivery.event)
        except TimeoutError:
            error = f"no answer within {self.options.timeout_s:g} s"
        except Exception as exc:
            # Such as a URL the HTTP client cannot use: a failed attempt like any other,
            # so that the event is dropped in the end rather than tried forever.
            logger.warning("event sink %s: attempt failed", delivery.sink_id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]
        if error is None:
            return Outcome(delivery.sink_id, delivery.event_id)
        if delivery.attempts >= self.options.max_attempts:
            return Outcome(delivery.sink_id, delivery.event_id, error=error)
        retry_in_s = backoff_s(delivery.attempts, self.options)
        return Outcome(delivery.sink_id, delivery.event_id, error=error, retry_in_s=retry_in_s)

    async def _post(self, delivery: Delivery, event: dict[str, object]) -> str | None:
        """Send one event; None when the sink took it, otherwise what went wrong."""
        assert self._client is not None
        refusal = await self._refused(delivery.url)
        if refusal is not None:
            return refusal
        body = orjson.dumps(event)
        headers = {
            SIGNATURE_HEADER: sign(delivery.secret, int(time.time()), body),
            EVENT_ID_HEADER: str(event["id"]),
            EVENT_TYPE_HEADER: str(event["type"]),
        }
        try:
            # Streamed, and closed unread: a sink cannot make the gateway read a large answer.
            async with self._client.stream(
                "POST", delivery.url, content=body, headers=headers
            ) as response:
                if 200 <= response.status_code < 300:
                    return None
                return f"HTTP {response.status_code} {response.reason_phrase}"[:_ERROR_LENGTH]
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]

    async def _refused(self, url: str) -> str | None:
        """Why `url`'s host may not be reached, checked on every attempt since a name
        can come to resolve elsewhere; None when it may."""
        if self.options.allow_loopback:
            return None
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or (443 if parts.scheme == "https" else 80)
            )
        except OSError as exc:
            return f"cannot resolve {host}: {exc}"[:_ERROR_LENGTH]
        for info in infos:
            reason = refused_reason(str(info[4][0]))
            if reason is not None:
                return f"{host} {reason}"[:_ERROR_LENGTH]
        return None

    def _count(self, outcomes: list[Outcome]) -> None:
        failures: Counter[UUID] = Counter()
        drops: Counter[UUID] = Counter()
        last_error: dict[UUID, str] = {}
        for outcome in outcomes:
            counts = self.counts.setdefault(outcome.sink_id, SinkCounts())
            if outcome.error is None:
                counts.delivered += 1
                continue
            last_error[outcome.sink_id] = outcome.error
            if outcome.retry_in_s is None:
                counts.dropped += 1
                drops[outcome.sink_id] += 1
            else:
                counts.retried += 1
                failures[outcome.sink_id] += 1
        for sink_id, error in last_error.items():
            logger.warning(
                "event sink %s: %d attempts failed and will be retried, %d events dropped"
                " after %d attempts; last error: %s",
                sink_id,
                failures[sink_id],
                drops[sink_id],
                self.options.max_attempts,
                error,
            )

    def _failed(self, message: str) -> None:
        if not self._failing:
            logger.warning("event sink delivery paused: %s", message)
            self._failing = True

    async def _idle(self) -> None:
        # Not woken before `poll_s`: a storm of writes that queue nothing for any sink
        # (or none is registered) costs no more than one look every `poll_s`.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.options.poll_s)
        await self._sleep(max(0.0, self.options.idle_poll_s - self.options.poll_s))

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()
