"""A real gateway on a real socket, in a thread of the test process, so a test can talk
to it over HTTP and WebSocket and still read its state."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from gateway.http_protocol import CoalescingHttpToolsProtocol


def free_port() -> int:
    """A port the kernel hands out now: in the ephemeral range, where no stack or bench
    server listens (infra/local/profiles.py, bench/harness.py)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 60.0) -> None:
    """For synchronous tests: return once `check()` holds; the limit only stops a broken test."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def serve_in_thread(
    app: ASGIApp, http: type[CoalescingHttpToolsProtocol] = CoalescingHttpToolsProtocol
) -> Iterator[str]:
    """Serve `app` with uvicorn (lifespan included) until the block ends; yields its URL.
    `http` is the protocol `polygraph serve` runs, or one `bounded_protocol` made."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            http=http,
            lifespan="on",
            log_config=None,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="the gateway to start")
        assert thread.is_alive(), "the gateway stopped while starting; see the log above"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
