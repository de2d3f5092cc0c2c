"""The sockets `polygraph serve --workers N` hands its workers."""

from __future__ import annotations

import select
import socket

from gateway.serving import _sockets_per_worker

CLIENTS = 64


def test_every_workers_socket_takes_connections_before_any_worker_starts() -> None:
    # No worker has accepted yet: connections wait in the backlogs the kernel chose.
    # Had only one socket been listening, it would have taken all of them.
    listeners = _sockets_per_worker("127.0.0.1", 0, 2, backlog=CLIENTS)
    clients: list[socket.socket] = []
    try:
        port = listeners[0].getsockname()[1]
        assert {sock.getsockname()[1] for sock in listeners} == {port}
        for sock in listeners:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        for _ in range(CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        taken = _accept_all(listeners, CLIENTS)
        # The kernel spreads by address: all 64 on one socket has odds of 1 in 2**63.
        assert all(count > 0 for count in taken), taken
    finally:
        for sock in clients + listeners:
            sock.close()


def _accept_all(listeners: list[socket.socket], expected: int) -> list[int]:
    """How many of `expected` connections each listener had waiting (a handshake may
    finish in the kernel after its client's connect returned: wait for each)."""
    taken = [0] * len(listeners)
    while sum(taken) < expected:
        ready, _, _ = select.select(listeners, [], [])
        for sock in ready:
            connection, _ = sock.accept()
            connection.close()
            taken[listeners.index(sock)] += 1
    return taken
