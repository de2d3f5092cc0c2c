"""A TCP gate in front of a real server: open, it relays bytes both ways; closed, it
drops every connection; holding, it keeps what clients send until released. Tests use
it to take a store away and bring it back, or to catch a client mid-request, without
stopping the server other tests share."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class Gate:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.is_open = True
        self._flowing = asyncio.Event()
        self._flowing.set()
        # Set once bytes a client sent wait at the gate.
        self.held = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the gate first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Gate:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def open(self) -> None:
        self.is_open = True

    def hold(self) -> None:
        """Keep what clients send from the server until `release`."""
        self.held.clear()
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        """Refuse new connections and cut the ones relayed so far."""
        self.is_open = False
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        relays = [
            asyncio.create_task(self._send_on(reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, writer)),
        ]
        self._relays.update(relays)
        for relay in relays:
            relay.add_done_callback(self._relays.discard)

    async def _send_on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A client's bytes to the server, kept while the gate holds."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if not self._flowing.is_set():
                    self.held.set()
                    await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()
