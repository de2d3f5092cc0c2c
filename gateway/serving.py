"""`polygraph serve`: one gateway process, or `--workers N` of them on one port.

Several workers use uvicorn's own supervisor (`uvicorn.supervisors.Multiprocess`)
rather than gunicorn: no second process manager to configure, the same HTTP stack
(uvloop, httptools) as one process, and each worker is the same `GatewayServer`, so
draining and the shutdown deadline work as they do in one process. The parent binds
the sockets and spawns the workers; each builds its own app, stores and pools.

- Each worker has a socket of its own on the port (`SO_REUSEPORT`), and the kernel
  spreads new connections across them. On one shared socket, whichever worker woke
  first took the connection: a client that opens its keep-alive connections at
  once (wrk's 16) had nearly all of them served by one worker while the other
  idled. The parent listens on every socket before the first worker starts (one
  that listened only once its worker had started would get no connection until
  then). A worker's socket is the parent's, so a replacement takes over its slot
  and what waited in its backlog. Where the option is missing, the workers share
  one socket as before.

- SIGTERM or SIGINT to the parent: each worker gets SIGTERM and shuts down as one
  process would (gateway.shutdown); the parent waits for all of them.
- A worker that dies is replaced; one that fails to start stops them all (a second
  start would fail the same way).
- Background work runs in every worker and is safe to: the projector claims outbox
  rows with `FOR UPDATE SKIP LOCKED`, the embedding filler takes a job lock for each
  pass, migrations take their locks, and the event bus and revocation listener are
  per process by design (each worker's subscribers and session cache).
- Metrics: the parent points `PROMETHEUS_MULTIPROC_DIR` at a directory of its own
  before spawning, so every worker's counters land there and a scrape of any worker
  sums them (gateway.prometheus); a worker's live gauges go when it does.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway.http_protocol import bounded_protocol
from gateway.settings import Settings
from gateway.shutdown import GatewayServer, request_grace

logger = logging.getLogger("polygraph")

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A worker builds its app (schema, embedder) before it answers the supervisor's
# health pings as started; on a loaded machine that takes more than uvicorn's 5 s.
_WORKER_HEALTHCHECK_S = 30


def gateway_server(settings: Settings, host: str, port: int) -> GatewayServer:
    """The server of one gateway process, its app built and the collector tuned."""
    from gateway.app import create_app
    from gateway.runtime import connections_the_process_can_hold, tune_gc

    app = create_app(settings)
    tune_gc()
    deadline = settings.shutdown_timeout_s
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        # httptools, with a response's writes coalesced into one (gateway/http_protocol.py).
        http=bounded_protocol(
            settings.max_header_bytes,
            settings.read_timeout_s,
            send_timeout_s=settings.send_timeout_s,
            max_connections=settings.max_connections or connections_the_process_can_hold(),
            max_connections_per_address=settings.max_connections_per_address,
            trusted_proxies=settings.trusted_proxy_list(),
        ),
        log_level=settings.log_level,
        # Our handler and format for uvicorn's records too; gateway.middleware.RequestLifecycle
        # writes the access lines, with the request's fields.
        log_config=None,
        access_log=False,
        lifespan="on",
        # X-Forwarded-For is honoured only from POLYGRAPH_TRUSTED_PROXIES (create_app);
        # uvicorn would trust it from 127.0.0.1 by default.
        proxy_headers=False,
        # A WebSocket message is bounded like an HTTP body.
        ws_max_size=settings.max_body_bytes,
        ws_per_message_deflate=settings.ws_compression,
        # A backstop only: the server drains requests itself, before this passes.
        timeout_graceful_shutdown=math.ceil(request_grace(deadline)) + 1,
    )
    return GatewayServer(config, in_flight=app.state.in_flight, deadline_s=deadline)


def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Serve until stopped; the exit status (3: the gateway refused to start)."""
    if workers <= 1:
        server = gateway_server(settings, host, port)
        server.run()
        # uvicorn's exit status when the app refused to start (see `uvicorn.run`).
        return 0 if server.started else uvicorn.config.STARTUP_FAILURE
    with _metrics_directory():
        supervisor = _Supervisor(
            uvicorn.Config(
                # Only the supervisor's settings are read from this config; each worker
                # builds its own app and server (`_Worker.target`).
                "gateway.app:create_app",
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                log_level=settings.log_level,
                timeout_worker_healthcheck=_WORKER_HEALTHCHECK_S,
            ),
            host=host,
            port=port,
        )
        supervisor.run()
    return uvicorn.config.STARTUP_FAILURE if supervisor.failed_to_start else 0


class _Worker(Process):
    """One worker process: a whole gateway, built in the child from the environment."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket], address: str) -> None:
        self._address = address
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        # Answer the supervisor's pings at once ("not started yet"): building the app
        # takes a while, and a worker that does not answer is killed as hung.
        threading.Thread(target=self.always_pong, daemon=True).start()
        try:
            from gateway.logs import configure

            settings = Settings()
            configure(settings.log_level, settings.log_format)
            host, _, port = self._address.rpartition(":")
            self._server = gateway_server(settings, host, int(port))
        except Exception:
            # A worker that cannot even be built (bad settings, a broken install) would
            # fail the same way when replaced: say so, and stop them all.
            logger.exception("a gateway worker could not be built")
            sys.exit(uvicorn.config.STARTUP_FAILURE)
        self._server.run(sockets)

    def pong(self) -> None:
        self.child_conn.recv()
        self.child_conn.send(self._server is not None and self._server.started)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor with gateway workers, and their metrics let go when they die."""

    def __init__(self, config: uvicorn.Config, *, host: str, port: int) -> None:
        if hasattr(socket, "SO_REUSEPORT"):
            sockets = _sockets_per_worker(host, port, config.workers, config.backlog)
            self._sockets_by_slot = [[sock] for sock in sockets]
        else:  # pragma: no cover - every Linux has it
            sockets = [config.bind_socket()]
            self._sockets_by_slot = [sockets] * config.workers
        super().__init__(config, sockets)
        self._address = f"{host}:{sockets[0].getsockname()[1]}"
        self.failed_to_start = False

    def _new_worker(self, slot: int) -> _Worker:
        worker = _Worker(self.config, self._sockets_by_slot[slot], self._address)
        worker.start()
        return worker

    def init_processes(self) -> None:
        self.processes = [self._new_worker(slot) for slot in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, worker in enumerate(self.processes):
            if worker.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            worker.kill()  # hung, or already gone
            worker.join()
            _forget_metrics_of(worker.pid)
            if worker.exitcode == uvicorn.config.STARTUP_FAILURE:
                logger.error("worker %s failed to start; stopping every worker", worker.pid)
                self.failed_to_start = True
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.warning("worker %s died (exit code %s); starting another", *_status(worker))
            self.processes[index] = self._new_worker(index)

    # uvicorn's SIGHUP, SIGTTIN and SIGTTOU would start plain uvicorn workers: the
    # number of workers is fixed, and a restart is a restart of the service.
    def handle_hup(self) -> None:
        logger.warning("SIGHUP ignored: restart the service to reload the gateway")

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the number of workers is set by --workers")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the number of workers is set by --workers")


def _sockets_per_worker(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """`count` listening sockets on one port with `SO_REUSEPORT`, one for each worker
    (port 0: the port the first is given)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            # Listening here, not in the worker, puts every socket in the kernel's
            # group at once: a worker still building its app already gets its share of
            # new connections (they wait in its backlog) instead of the first worker
            # to listen taking them all.
            sock.listen(backlog)
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        logger.error("cannot listen on %s:%s: %s", host, port, exc)
        sys.exit(uvicorn.config.STARTUP_FAILURE)
    logger.info("listening on http://%s:%d, %d workers", host, port, count)
    return sockets


def _status(worker: Process) -> tuple[int | None, int | None]:
    return worker.pid, worker.exitcode


def _forget_metrics_of(pid: int | None) -> None:
    """A dead worker's live gauges (open subscriptions, pool connections) leave the
    sums; its counters stay, so totals never go backwards."""
    if pid is not None and os.environ.get(MULTIPROC_DIR_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@contextmanager
def _metrics_directory() -> Iterator[Path]:
    """`PROMETHEUS_MULTIPROC_DIR` for the workers: a fresh directory of this server's,
    removed at exit; or the operator's, emptied first (files of an earlier run would
    be summed with this run's)."""
    given = os.environ.get(MULTIPROC_DIR_VARIABLE)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    own = Path(tempfile.mkdtemp(prefix="polygraph-metrics-"))
    os.environ[MULTIPROC_DIR_VARIABLE] = str(own)
    try:
        yield own
    finally:
        os.environ.pop(MULTIPROC_DIR_VARIABLE, None)
        shutil.rmtree(own, ignore_errors=True)
