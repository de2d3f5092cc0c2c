"""Redis Sentinel and Redis Cluster set-ups from Debian's `redis-server`, for tests.

Each runs on free ports in a temporary directory, and is started and stopped by the
test that uses it; nothing is left behind. Every wait is on a condition the servers
report, never on the clock.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from infra.local._process import require_commands
from tests.support.tls import Certificates

# Only stops a broken set-up; a healthy one is ready as soon as its condition holds.
_LIMIT_S = 60.0
# A cluster node also listens on its port + 10000 (the cluster bus): both must be free.
_CLUSTER_BUS_OFFSET = 10_000
_PORT_RANGE = range(20_000, 30_000)


def wait_for(condition: Callable[[], bool], what: str, *, limit_s: float = _LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not _holds(condition):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit_s:g} s")
        time.sleep(0.05)


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports that are free, with their cluster bus ports (+10000) free too."""
    found: list[int] = []
    while len(found) < count:
        port = random.choice(_PORT_RANGE)
        if port not in found and _port_free(port) and _port_free(port + _CLUSTER_BUS_OFFSET):
            found.append(port)
    return found


def tls_config(certificates: Certificates) -> list[str]:
    """TLS only, on every link: clients (who must show a certificate from the CA),
    the cluster bus and replication, where a server is the client of another."""
    return [
        f"tls-cert-file {certificates.server_cert}",
        f"tls-key-file {certificates.server_key}",
        f"tls-client-cert-file {certificates.client_cert}",
        f"tls-client-key-file {certificates.client_key}",
        f"tls-ca-cert-file {certificates.ca}",
        "tls-auth-clients yes",
        "tls-replication yes",
        "tls-cluster yes",
    ]


def tls_client_arguments(certificates: Certificates) -> dict[str, Any]:
    return {
        "ssl": True,
        "ssl_ca_certs": str(certificates.ca),
        "ssl_certfile": str(certificates.client_cert),
        "ssl_keyfile": str(certificates.client_key),
    }


def tls_cli_arguments(certificates: Certificates) -> list[str]:
    return [
        "--tls",
        "--cacert", str(certificates.ca),
        "--cert", str(certificates.client_cert),
        "--key", str(certificates.client_key),
    ]  # fmt: skip


class RedisProcess:
    """One `redis-server` (or sentinel) in the foreground, with its config in `directory`;
    with `tls`, it listens for TLS only."""

    def __init__(
        self,
        port: int,
        directory: Path,
        config: list[str],
        *,
        sentinel: bool = False,
        tls: Certificates | None = None,
    ):
        self.port = port
        self.directory = directory
        self._config = config
        self._sentinel = sentinel
        self._tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (binary,) = require_commands("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    *(
                        [f"port {self.port}"]
                        if self._tls is None
                        else ["port 0", f"tls-port {self.port}", *tls_config(self._tls)]
                    ),
                    f"dir {self.directory}",
                    "daemonize no",
                    "save ''",
                    "appendonly no",
                    *self._config,
                    "",
                ]
            )
        )
        command = [binary, str(config), *(["--sentinel"] if self._sentinel else [])]
        with (self.directory / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for(lambda: self.command("PING") is True, f"redis on port {self.port}")

    def command(self, *args: Any) -> Any:
        """One command on a connection of its own, closed after."""
        with self.connect() as client:
            return client.execute_command(*args)

    def connect(self) -> redis.Redis:
        """A client to use in a `with` block."""
        secured = tls_client_arguments(self._tls) if self._tls is not None else {}
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2, **secured)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SentinelSetup:
    """A master, one replica and one sentinel watching them as `service`."""

    service = "mymaster"

    def __init__(self, tls: Certificates | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="polygraph-sentinel-"))
        self.tls = tls
        master_port, replica_port, sentinel_port = free_ports(3)
        self.servers = {
            master_port: RedisProcess(master_port, self.directory / "a", [], tls=tls),
            replica_port: RedisProcess(
                replica_port,
                self.directory / "b",
                [f"replicaof 127.0.0.1 {master_port}"],
                tls=tls,
            ),
        }
        self.sentinel = RedisProcess(
            sentinel_port,
            self.directory / "sentinel",
            [
                f"sentinel monitor {self.service} 127.0.0.1 {master_port} 1",
                f"sentinel down-after-milliseconds {self.service} 1000",
                f"sentinel failover-timeout {self.service} 10000",
            ],
            sentinel=True,
            tls=tls,
        )

    @property
    def url(self) -> str:
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def start(self) -> None:
        for server in self.servers.values():
            server.start()
        self.sentinel.start()
        self.wait_until_replicated()

    def stop(self) -> None:
        self.sentinel.stop()
        for server in self.servers.values():
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def master_port(self) -> int:
        _, port = self.sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def wait_until_replicated(self) -> None:
        """Until the master has a replica in sync and the sentinel knows both."""

        def ready() -> bool:
            info = self.servers[self.master_port()].command("INFO", "replication")
            if info.get("connected_slaves", 0) < 1:
                return False
            with self.sentinel.connect() as sentinel:
                replicas = sentinel.sentinel_slaves(self.service)
            return any(
                "s_down" not in r["flags"] and r.get("master-link-status") == "ok" for r in replicas
            )

        wait_for(ready, "sentinel sees a replica in sync")

    def failover(self) -> int:
        """Ask the sentinel to promote the replica; returns the new master's port once the
        failover is complete: the sentinel names the new master, which is master, and the
        old one has been turned into its replica (until then the old master still takes
        writes from clients connected to it, and loses them when it is turned)."""
        old = self.master_port()
        self.sentinel.command("SENTINEL", "FAILOVER", self.service)

        def completed() -> bool:
            port = self.master_port()
            return (
                port != old
                and self.servers[port].command("ROLE")[0] == b"master"
                and self.servers[old].command("ROLE")[0] == b"slave"
            )

        wait_for(completed, "sentinel failover")
        return self.master_port()


class ClusterSetup:
    """Three masters, no replicas: every slot covered."""

    def __init__(self, tls: Certificates | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="polygraph-cluster-"))
        self.tls = tls
        self.nodes = [
            RedisProcess(
                port,
                self.directory / str(port),
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    "cluster-node-timeout 5000",
                ],
                tls=tls,
            )
            for port in free_ports(3)
        ]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"{'rediss+cluster' if self.tls else 'redis+cluster'}://{seeds}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        (cli,) = require_commands("redis-cli")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-yes",
                *(tls_cli_arguments(self.tls) if self.tls else []),
            ],
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )

        def ok() -> bool:
            return all(
                b"cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes
            )

        wait_for(ok, "cluster state ok on every node")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
