"""The floor's subscription fan-out: one Redis subscription, one fetch per event,
the same encoded frame to every subscriber (graphql-transport-ws, as little as it needs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from starlette.websockets import WebSocket

PROTOCOL = "graphql-transport-ws"

Render = Callable[[dict[str, Any]], Awaitable[bytes | None]]


class FanOut:
    def __init__(self, redis: aioredis.Redis, channel: str, render: Render) -> None:
        self._redis = redis
        self._channel = channel
        self._render = render
        self._subscribers: dict[WebSocket, str] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                payload = await self._render(orjson.loads(message["data"]))
                if payload is None or not self._subscribers:
                    continue
                # `{"id": ..., "type": "next", "payload": ...}` built around the shared bytes.
                frames: dict[str, str] = {}
                for websocket, sub_id in list(self._subscribers.items()):
                    frame = frames.get(sub_id)
                    if frame is None:
                        frame = frames[sub_id] = (
                            (
                                b'{"id":' + orjson.dumps(sub_id) + b',"type":"next","payload":'
                            ).decode()
                            + payload.decode()
                            + "}"
                        )
                    try:
                        await websocket.send_text(frame)
                    except Exception:
                        self._subscribers.pop(websocket, None)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def serve(
        self, websocket: WebSocket, authenticate: Callable[[str], Awaitable[Any]]
    ) -> None:
        await websocket.accept(subprotocol=PROTOCOL)
        init = orjson.loads(await websocket.receive_text())
        params = init.get("payload") or {}
        try:
            await authenticate(str(params.get("authorization", "")))
        except Exception:
            await websocket.close(4403, "Forbidden")
            return
        await websocket.send_text('{"type":"connection_ack"}')
        try:
            while True:
                message = orjson.loads(await websocket.receive_text())
                kind = message.get("type")
                if kind == "subscribe":
                    self._subscribers[websocket] = str(message["id"])
                elif kind == "complete":
                    self._subscribers.pop(websocket, None)
                elif kind == "ping":
                    await websocket.send_text('{"type":"pong"}')
        finally:
            self._subscribers.pop(websocket, None)
