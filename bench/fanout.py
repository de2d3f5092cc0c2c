"""S8's load generator, run as its own process: WebSocket subscribers and a publisher.

Reads a JSON spec on stdin (see `bench.loadgen.run_fanout`), opens the subscribers
(graphql-transport-ws), publishes task events to Redis at a fixed rate (each
carrying its publish time as `at`), and prints one JSON line: events delivered,
the measured seconds, delivery latency percentiles, events lost, and one sample
payload for the harness's equality check.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from bench.stats import percentile

WARM_UP_S = 1.0
DRAIN_S = 3.0


class Subscribers:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.delivered = 0
        self.errors = 0
        self.last_at = 0.0
        self.counting: set[str] = set()
        self.sample: dict[str, Any] | None = None

    async def read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            received = time.time()
            message = orjson.loads(raw)
            if message.get("type") != "next":
                if message.get("type") in ("error", "complete"):
                    self.errors += 1
                continue
            payload = message["payload"]
            if payload.get("errors"):
                self.errors += 1
                continue
            if self.sample is None:
                self.sample = payload
            at = payload["data"]["taskUpdated"]["at"]
            if at in self.counting:
                self.delivered += 1
                self.last_at = received
                sent = datetime.fromisoformat(at).timestamp()
                self.latencies_ms.append((received - sent) * 1000)


async def _subscribe(spec: dict[str, Any], subscribers: Subscribers) -> ClientConnection:
    ws = await connect(spec["url"], subprotocols=["graphql-transport-ws"], max_queue=None)  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": spec["authorization"]}})
    )
    ack = orjson.loads(await ws.recv())
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"not acknowledged: {ack}")
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": spec["query"]}}))
    return ws


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    subscribers = Subscribers()
    sockets = await asyncio.gather(
        *(_subscribe(spec, subscribers) for _ in range(spec["subscribers"]))
    )
    readers = [asyncio.create_task(subscribers.read(ws)) for ws in sockets]
    redis = aioredis.from_url(spec["redis_url"])
    task_ids: list[str] = spec["task_ids"]
    interval = 1.0 / spec["rate"]
    sequence = 0

    async def publish(until: float, counted: bool) -> int:
        nonlocal sequence
        sent = 0
        next_at = time.monotonic()
        while time.monotonic() < until:
            at = datetime.now(UTC).isoformat()
            if counted:
                subscribers.counting.add(at)
            event = {
                "task_id": task_ids[sequence % len(task_ids)],
                "status": "pending",
                "assignee_id": None,
                "change": "updated",
                "version": 1,
                "at": at,
            }
            sequence += 1
            await redis.publish(spec["channel"], orjson.dumps(event))
            sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        return sent

    try:
        await asyncio.sleep(0.5)  # subscriptions reach Redis
        await publish(time.monotonic() + WARM_UP_S, counted=False)
        started = time.time()
        sent = await publish(time.monotonic() + spec["seconds"], counted=True)
        expected = sent * len(sockets)
        deadline = time.monotonic() + DRAIN_S
        while subscribers.delivered < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        seconds = max(subscribers.last_at, time.time() - DRAIN_S) - started
    finally:
        for ws in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await redis.aclose()
    latencies = subscribers.latencies_ms
    return {
        "delivered": subscribers.delivered,
        "expected": expected,
        "seconds": max(seconds, 1e-9),
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "errors": subscribers.errors + max(0, expected - subscribers.delivered),
        "sample": subscribers.sample,
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
