"""The served protocol: a response's writes reach the socket as one, and nothing is lost
or reordered on the way (keep-alive, large bodies, close, WebSocket upgrade)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import Iterator

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.sync.client import connect

from gateway.http_protocol import (
    Admission,
    CoalescedWrites,
    CoalescingHttpToolsProtocol,
    ConnectionRefusal,
    OpenConnections,
    bounded_protocol,
)
from gateway.runtime import DESCRIPTORS_KEPT_FOR_THE_GATEWAY, connections_the_process_can_hold
from tests.support.serving import serve_in_thread, wait_until

LARGE = 200 * 1024


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket's transport: what reached it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False
        self.wrote = asyncio.Event()
        self.closed = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))
        self.wrote.set()

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True
        self.closed.set()

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def write_eof(self) -> None:
        self.calls.append(("write_eof", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def _next_turn() -> None:
    # A callback scheduled now runs before a sleep(0) resumes; a second turn is margin.
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_turn_reach_the_socket_as_one_write_after_it() -> None:
    socket_side = RecordingTransport()
    coalesced = CoalescedWrites(socket_side, asyncio.get_running_loop())
    coalesced.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    coalesced.write(b"ok")
    assert socket_side.calls == []
    assert coalesced.get_write_buffer_size() == 40
    await _next_turn()
    assert socket_side.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    coalesced.write(b"next")
    await _next_turn()
    assert socket_side.calls[-1] == ("write", b"next")


async def test_close_sends_what_was_written_first() -> None:
    socket_side = RecordingTransport()
    coalesced = CoalescedWrites(socket_side, asyncio.get_running_loop())
    coalesced.write(b"headers")
    coalesced.write(b"body")
    coalesced.close()
    assert socket_side.calls == [("write", b"headersbody"), ("close", b"")]
    await _next_turn()
    assert len(socket_side.calls) == 2


async def test_abort_drops_what_waits() -> None:
    socket_side = RecordingTransport()
    coalesced = CoalescedWrites(socket_side, asyncio.get_running_loop())
    coalesced.write(b"unsent")
    coalesced.abort()
    await _next_turn()
    assert socket_side.calls == [("abort", b"")]


async def test_a_large_body_goes_out_at_once() -> None:
    socket_side = RecordingTransport()
    coalesced = CoalescedWrites(socket_side, asyncio.get_running_loop())
    coalesced.write(b"headers")
    coalesced.write(b"x" * LARGE)
    assert socket_side.calls == [("write", b"headers" + b"x" * LARGE)]
    await _next_turn()
    assert len(socket_side.calls) == 1


async def test_nothing_is_written_to_a_transport_closed_under_it() -> None:
    socket_side = RecordingTransport()
    coalesced = CoalescedWrites(socket_side, asyncio.get_running_loop())
    coalesced.write(b"late")
    socket_side.closing = True
    await _next_turn()
    assert socket_side.calls == []


async def _hello(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.query_params.get('n', '')}")


async def _large(request: Request) -> Response:
    return Response(b"y" * LARGE, media_type="application/octet-stream")


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text(f"echo {text}")


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    app = Starlette(
        routes=[Route("/hello", _hello), Route("/large", _large), WebSocketRoute("/ws", _echo)]
    )
    with serve_in_thread(app) as url:
        yield url


def _read_response(conn: socket.socket, buffered: bytes) -> tuple[bytes, bytes, bytes]:
    """One HTTP/1.1 response with a content-length: (head, body, what came after it)."""
    while b"\r\n\r\n" not in buffered:
        buffered += conn.recv(65536)
    head, _, rest = buffered.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += conn.recv(65536)
    return head, rest[:length], rest[length:]


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"".join(f"GET /hello?n={n} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for n in range(3))
            + b"GET /large HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        buffered = b""
        for n in range(3):
            head, body, buffered = _read_response(conn, buffered)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert body == f"hello {n}".encode()
        head, body, buffered = _read_response(conn, buffered)
        assert b"connection: close" in head.lower()
        assert body == b"y" * LARGE
        # The server closes after the last answer, having sent all of it.
        while chunk := conn.recv(65536):
            buffered += chunk
        assert buffered == b""


def test_a_websocket_upgrades_and_talks_both_ways(served: str) -> None:
    with connect(served.replace("http://", "ws://") + "/ws") as ws:
        for n in range(3):
            ws.send(f"m{n}")
            assert ws.recv(timeout=30) == f"echo m{n}"


def test_the_served_protocol_is_the_gateways() -> None:
    from gateway.serving import gateway_server
    from gateway.settings import Settings

    # Addresses uncounted, the total still is.
    server = gateway_server(Settings(max_connections_per_address=0), "127.0.0.1", 0)
    assert isinstance(server.config.http, type)
    assert issubclass(server.config.http, CoalescingHttpToolsProtocol)
    assert server.config.http.open_connections is not None
    assert server.config.http.open_connections.max_per_address == 0
    assert server.config.http.open_connections.max_total > 0
    server = gateway_server(
        Settings(
            max_header_bytes=8192,
            read_timeout_s=5,
            send_timeout_s=9,
            max_connections=3,
            max_connections_per_address=7,
            trusted_proxies="10.0.0.0/8",
        ),
        "127.0.0.1",
        0,
    )
    protocol = server.config.http
    assert isinstance(protocol, type)
    assert issubclass(protocol, CoalescingHttpToolsProtocol)
    assert (protocol.max_head_bytes, protocol.read_timeout_s, protocol.send_timeout_s) == (
        8192,
        5,
        9,
    )
    connections = protocol.open_connections
    assert connections is not None
    assert (connections.max_per_address, connections.max_total) == (7, 3)
    assert connections.key_of(("10.1.2.3", 5000)) is None
    # By default every server counts its own connections, in all as many as the
    # process's open-files limit leaves room for.
    first = gateway_server(Settings(), "127.0.0.1", 0).config.http
    second = gateway_server(Settings(), "127.0.0.1", 0).config.http
    assert isinstance(first, type) and issubclass(first, CoalescingHttpToolsProtocol)
    assert isinstance(second, type) and issubclass(second, CoalescingHttpToolsProtocol)
    assert first.open_connections is not None
    assert first.open_connections.max_per_address == 256
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert first.open_connections.max_total == soft - DESCRIPTORS_KEPT_FOR_THE_GATEWAY
    assert first.open_connections is not second.open_connections


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def _read_then_ok(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body"):
        pass
    await _ok(scope, receive, send)


def _protocol(
    max_head_bytes: int = 4096,
    read_timeout_s: float = 30.0,
    app: ASGIApp = _ok,
    transport: RecordingTransport | None = None,
) -> tuple[CoalescingHttpToolsProtocol, RecordingTransport]:
    config = Config(app, lifespan="off", log_config=None)
    config.load()
    protocol_class = bounded_protocol(max_head_bytes, read_timeout_s)
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = transport or RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _written(transport: RecordingTransport, responses: int) -> bytes:
    """What reached the socket once `responses` status lines have (the app runs as tasks)."""
    while (written := b"".join(data for _, data in transport.calls)).count(
        b"HTTP/1.1 "
    ) < responses:
        transport.wrote.clear()
        await transport.wrote.wait()
    return written


async def test_a_head_past_the_limit_is_refused_with_431_and_the_connection_closed() -> None:
    protocol, transport = _protocol()
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nx-junk: ")
    # Sent a kilobyte at a time, it never completes: refused once past the limit.
    for _ in range(5):
        protocol.data_received(b"y" * 1000)
    # Written and closed at once, not in a later turn.
    written = b"".join(data for _, data in transport.calls)
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head
    (error,) = orjson.loads(body)["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "POLYGRAPH_MAX_HEADER_BYTES",
        "value": 5000,
        "maximum": 4096,
    }
    assert error["message"] == (
        "The request line and headers are over 5,000 bytes; the limit is 4,096"
        " (POLYGRAPH_MAX_HEADER_BYTES). Send a long document in a POST body, not in the"
        " query string or a header."
    )
    assert transport.calls[-1] == ("close", b"")


async def test_a_head_is_not_charged_for_the_request_before_it() -> None:
    protocol, transport = _protocol()
    # One chunk: a whole request with 2 kB of headers, and the start of the next.
    first = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 2000 + b"\r\n\r\n"
    protocol.data_received(first + b"GET / HTTP/1.1\r\nhost: x\r\nx-junk: ")
    await _written(transport, 1)
    # 3 kB more of the second head: within the limit, though the chunks together are not.
    protocol.data_received(b"y" * 3000)
    protocol.data_received(b"\r\n\r\n")
    written = await _written(transport, 2)
    assert written.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b" 431 " not in written


async def _closed(transport: RecordingTransport) -> None:
    # The limit only stops a broken test.
    async with asyncio.timeout(60):
        await transport.closed.wait()


async def test_a_head_that_does_not_arrive_in_time_gets_408_and_the_connection_closed() -> None:
    protocol, transport = _protocol(read_timeout_s=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n")
    await _closed(transport)
    written = b"".join(data for _, data in transport.calls)
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    (error,) = orjson.loads(body)["errors"]
    assert error["extensions"] == {"code": "REQUEST_TIMEOUT"}
    assert "POLYGRAPH_READ_TIMEOUT_S" in error["message"]


async def test_a_head_sent_a_byte_every_loop_turn_still_gets_408() -> None:
    protocol, transport = _protocol(max_head_bytes=1 << 20, read_timeout_s=0.05)
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nx-junk: ")
    sent = 0
    # Each read re-arms the timer; one armed past its time must still fire.
    while not transport.closed.is_set():
        assert sent < 1 << 20, "the head reached its size limit first"
        protocol.data_received(b"y")
        sent += 1
        await asyncio.sleep(0)
    assert b"".join(data for _, data in transport.calls).startswith(b"HTTP/1.1 408 ")


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    _, transport = _protocol(read_timeout_s=0.05)
    await _closed(transport)
    assert transport.calls == [("close", b"")]


async def test_a_body_that_stops_coming_closes_the_connection() -> None:
    protocol, transport = _protocol(read_timeout_s=0.05, app=_read_then_ok)
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n123")
    await _closed(transport)
    assert b"HTTP/1.1 " not in b"".join(data for _, data in transport.calls)


async def test_a_trickled_body_is_due_by_its_pace_not_by_its_last_byte() -> None:
    protocol, transport = _protocol(read_timeout_s=30.0, app=_read_then_ok)
    rate = protocol.min_bytes_per_s
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"
    began = protocol.loop.time()
    protocol.data_received(head + b"1" * 4096)
    assert protocol._read_timer is not None
    first_due = protocol._read_timer.when()
    # Due the timeout after the body began, plus a second for the bytes it has sent.
    assert began + 30.0 <= first_due <= protocol.loop.time() + 30.0 + (len(head) + 4096) / rate
    await asyncio.sleep(0.05)
    # No pause is long, yet later bytes move the deadline only by what they buy: a byte
    # each 1/4096 s, not each 30 s.
    for _ in range(3):
        protocol.data_received(b"2")
    assert protocol._read_timer.when() == pytest.approx(first_due + 3 / rate)
    assert protocol._read_timer.when() < protocol.loop.time() + 30.0
    # Enough bytes, and the pause bound is the nearer one again.
    protocol.data_received(b"3" * 4096 * 8)
    assert protocol._read_timer.when() <= protocol.loop.time() + 30.0
    assert transport.calls == []


async def test_a_body_slower_than_its_pace_closes_the_connection() -> None:
    protocol, transport = _protocol(read_timeout_s=0.05, app=_read_then_ok)
    # A byte buys a nanosecond: a byte each loop turn is far too slow, though it never
    # pauses for long.
    protocol.min_bytes_per_s = 1e9
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n1")
    sent = 1
    while not transport.closed.is_set():
        assert sent < 100_000, "the whole body arrived first"
        protocol.data_received(b"2")
        sent += 1
        await asyncio.sleep(0)
    assert b"HTTP/1.1 " not in b"".join(data for _, data in transport.calls)


async def test_a_request_that_arrives_whole_keeps_no_timer() -> None:
    protocol, transport = _protocol(app=_read_then_ok)
    assert protocol._read_timer is not None  # the first request is awaited
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n123")
    assert protocol._read_timer is None
    await _written(transport, 1)
    # One in two reads: timed until its body is whole.
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n1")
    assert protocol._read_timer is not None
    protocol.data_received(b"23")
    assert protocol._read_timer is None
    assert (await _written(transport, 2)).count(b"HTTP/1.1 200 OK\r\n") == 2


def test_a_head_within_the_limit_is_served(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"GET /hello?n=1 HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 900_000 + b"\r\n\r\n"
        )
        head, body, _ = _read_response(conn, b"")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == b"hello 1"


def test_connections_are_counted_by_address_and_an_ipv6_clients_64() -> None:
    connections = OpenConnections(max_per_address=2, exempt=["192.0.2.0/24", "2001:db8:1::/48"])
    assert connections.key_of(("198.51.100.7", 1)) == "198.51.100.7"
    assert connections.key_of(("2001:db8:2:3::1", 1)) == "2001:db8:2:3::/64"
    assert connections.key_of(("2001:db8:2:3::ffff", 1)) == "2001:db8:2:3::/64"
    assert connections.key_of(("::ffff:198.51.100.7", 1)) == "198.51.100.7"
    # Trusted proxies, and a Unix socket's peer, are not counted by address.
    assert connections.key_of(("192.0.2.9", 1)) is None
    assert connections.key_of(("2001:db8:1:5::1", 1)) is None
    assert connections.key_of(None) is None
    one, other = ("2001:db8:2:3::1", 1), ("2001:db8:2:3::2", 2)
    first, second = connections.admit(one), connections.admit(other)
    assert isinstance(first, Admission) and isinstance(second, Admission)
    refused = connections.admit(one)
    assert isinstance(refused, ConnectionRefusal)
    assert (refused.status, refused.maximum) == (b"429 Too Many Requests", 2)
    assert isinstance(connections.admit(("198.51.100.7", 1)), Admission)
    for _ in range(5):
        assert isinstance(connections.admit(("192.0.2.9", 1)), Admission)
    first.release()
    first.release()  # once only
    assert connections.open("2001:db8:2:3::/64") == 1
    assert connections.total == 7
    second.release()
    # Nothing is kept for an address with no connection open.
    assert connections.open("2001:db8:2:3::/64") == 0
    assert "2001:db8:2:3::/64" not in connections._by_address


def test_connections_past_the_total_are_refused_from_any_address() -> None:
    connections = OpenConnections(max_total=2, max_per_address=5)
    admitted = [connections.admit((f"198.51.100.{n}", 1)) for n in (1, 2)]
    refused = connections.admit(("198.51.100.3", 1))
    assert isinstance(refused, ConnectionRefusal)
    assert refused.status == b"503 Service Unavailable"
    assert refused.error()["extensions"] == {
        "code": "OVERLOADED",
        "limit": "POLYGRAPH_MAX_CONNECTIONS",
        "maximum": 2,
    }
    # The refused one was not counted against its address.
    assert connections.open("198.51.100.3") == 0
    first = admitted[0]
    assert isinstance(first, Admission)
    first.release()
    assert isinstance(connections.admit(("198.51.100.3", 1)), Admission)


def test_the_process_raises_its_open_files_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
        held = connections_the_process_can_hold()
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == (hard if hard != resource.RLIM_INFINITY else raised)
        assert held == raised - DESCRIPTORS_KEPT_FOR_THE_GATEWAY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[int, OpenConnections]]:
    """A server that lets one address hold two connections."""
    protocol = bounded_protocol(4096, 30.0, max_connections_per_address=2)
    assert protocol.open_connections is not None
    app = Starlette(routes=[Route("/hello", _hello), WebSocketRoute("/ws", _echo)])
    with serve_in_thread(app, http=protocol) as url:
        yield int(url.rsplit(":", 1)[1]), protocol.open_connections


def _hello_on(conn: socket.socket, n: int) -> bytes:
    conn.sendall(f"GET /hello?n={n} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    head, body, _ = _read_response(conn, b"")
    assert head.startswith(b"HTTP/1.1 200 ")
    return body


def _refused(port: int) -> tuple[bytes, dict[str, object]]:
    """A connection past the limit: sends its request at once, as a client does, and
    reads the whole answer, then the end of the connection (no reset)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /hello?n=9 HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body, rest = _read_response(conn, b"")
        while chunk := conn.recv(65536):
            rest += chunk
        assert rest == b""
    (error,) = orjson.loads(body)["errors"]
    return head, error


def test_an_address_past_its_connections_is_answered_429_and_closed(
    limited: tuple[int, OpenConnections],
) -> None:
    port, connections = limited
    with (
        socket.create_connection(("127.0.0.1", port)) as first,
        socket.create_connection(("127.0.0.1", port)) as second,
    ):
        assert _hello_on(first, 1) == b"hello 1"
        assert _hello_on(second, 2) == b"hello 2"
        head, error = _refused(port)
        assert head.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        lines = head.split(b"\r\n")
        assert b"retry-after: 1" in lines
        assert b"connection: close" in lines
        assert error["extensions"] == {
            "code": "RATE_LIMITED",
            "limit": "POLYGRAPH_MAX_CONNECTIONS_PER_ADDRESS",
            "maximum": 2,
        }
        assert "2 are open" in str(error["message"])
        # The two admitted keep serving.
        assert _hello_on(first, 3) == b"hello 3"
    # Once one closes, a new connection is served.
    wait_until(lambda: connections.open("127.0.0.1") == 0, what="both connections released")
    with socket.create_connection(("127.0.0.1", port)) as again:
        assert _hello_on(again, 4) == b"hello 4"


def test_a_websocket_stays_counted_until_it_closes(
    limited: tuple[int, OpenConnections],
) -> None:
    port, connections = limited
    wait_until(lambda: connections.open("127.0.0.1") == 0, what="earlier connections released")
    url = f"ws://127.0.0.1:{port}/ws"
    with connect(url) as first_ws:
        with connect(url) as second_ws:
            first_ws.send("a")
            assert first_ws.recv(timeout=30) == "echo a"
            head, _ = _refused(port)
            assert head.startswith(b"HTTP/1.1 429 ")
            second_ws.send("b")
            assert second_ws.recv(timeout=30) == "echo b"
        wait_until(lambda: connections.open("127.0.0.1") == 1, what="the WebSocket released")
        with socket.create_connection(("127.0.0.1", port)) as conn:
            assert _hello_on(conn, 5) == b"hello 5"
    wait_until(lambda: connections.open("127.0.0.1") == 0, what="every connection released")


@contextlib.contextmanager
def _two_connections_served(protocol: type[CoalescingHttpToolsProtocol]) -> Iterator[int]:
    """Serves with `protocol`; two connections open and answered; yields the port."""
    app = Starlette(routes=[Route("/hello", _hello)])
    with serve_in_thread(app, http=protocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", port)) as first,
            socket.create_connection(("127.0.0.1", port)) as second,
        ):
            assert _hello_on(first, 1) == b"hello 1"
            assert _hello_on(second, 2) == b"hello 2"
            yield port


def test_a_trusted_proxys_connections_are_not_counted() -> None:
    protocol = bounded_protocol(
        4096, 30.0, max_connections_per_address=1, trusted_proxies=["127.0.0.0/8"]
    )
    with _two_connections_served(protocol):
        pass


class BufferingTransport(RecordingTransport):
    """A socket whose buffer holds `buffered` bytes the client has not taken."""

    buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _look_again(protocol: CoalescingHttpToolsProtocol) -> None:
    """What the send timer does when it fires, without waiting for it."""
    timer = protocol._send_timer
    assert timer is not None, "no look is due"
    timer.cancel()
    protocol._check_sending()


async def test_a_response_waiting_for_its_client_must_be_taken_at_a_pace() -> None:
    protocol, transport = _protocol(transport=BufferingTransport())
    assert isinstance(transport, BufferingTransport)
    share = int(protocol.send_timeout_s * protocol.min_bytes_per_s)
    transport.buffered = 10_000_000
    protocol.pause_writing()
    # Its share taken in each look: kept, and looked at again.
    for _ in range(3):
        transport.buffered -= share
        _look_again(protocol)
    assert ("abort", b"") not in transport.calls
    # Drained below the low mark: no more looks.
    protocol.resume_writing()
    assert protocol._send_timer is None
    protocol.pause_writing()
    # Less than its share since the last look: aborted, what waited dropped.
    transport.buffered -= share - 1
    _look_again(protocol)
    assert transport.calls == [("abort", b"")]
    assert protocol._send_timer is None


async def test_a_small_rest_taken_whole_is_enough() -> None:
    protocol, transport = _protocol(transport=BufferingTransport())
    assert isinstance(transport, BufferingTransport)
    transport.buffered = 100
    protocol.pause_writing()
    transport.buffered = 0
    _look_again(protocol)
    assert transport.calls == []


async def _ten_megabytes(request: Request) -> Response:
    return Response(b"y" * 10_000_000, media_type="application/octet-stream")


def test_a_client_that_does_not_read_its_response_is_dropped() -> None:
    protocol = bounded_protocol(4096, 30.0, send_timeout_s=0.2, max_connections_per_address=8)
    connections = protocol.open_connections
    assert connections is not None
    app = Starlette(routes=[Route("/big", _ten_megabytes)])
    with serve_in_thread(app, http=protocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.connect(("127.0.0.1", port))
            conn.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            wait_until(lambda: connections.open("127.0.0.1") == 1, what="the request")
            # The client keeps its socket open and reads nothing: the server lets go.
            wait_until(lambda: connections.open("127.0.0.1") == 0, what="the connection dropped")
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(1 << 20):
                    received += len(chunk)
            assert received < 10_000_000


def test_a_connection_past_the_servers_total_is_answered_503_and_closed() -> None:
    protocol = bounded_protocol(4096, 30.0, max_connections=2)
    with _two_connections_served(protocol) as port:
        head, error = _refused(port)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1" in head.split(b"\r\n")
    assert error["extensions"] == {
        "code": "OVERLOADED",
        "limit": "POLYGRAPH_MAX_CONNECTIONS",
        "maximum": 2,
    }


async def test_refusals_linger_a_few_at_a_time() -> None:
    config = Config(_ok, lifespan="off", log_config=None)
    config.load()
    protocol_class = bounded_protocol(4096, 30.0, max_connections=1)
    connections = protocol_class.open_connections
    assert connections is not None
    connections.max_lingering = 1

    def connect() -> tuple[CoalescingHttpToolsProtocol, RecordingTransport]:
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        return protocol, transport

    admitted, _ = connect()
    lingering, first_refused = connect()
    # Answered, its sending side shut, and kept a moment for what the client sends.
    assert [call for call, _ in first_refused.calls] == ["write", "write_eof"]
    assert b" 503 " in first_refused.calls[0][1]
    assert connections.lingering == 1
    # Another while that one lingers: answered and closed at once.
    _, second_refused = connect()
    assert [call for call, _ in second_refused.calls] == ["write", "close"]
    assert b" 503 " in second_refused.calls[0][1]
    lingering.connection_lost(None)
    assert connections.lingering == 0
    admitted.connection_lost(None)
    assert connections.total == 0
