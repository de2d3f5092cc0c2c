"""Redis 7 from Debian's `redis-server`, with its own config, port and data folder."""

from __future__ import annotations

import socket

from infra.local._process import (
    ServerStatus,
    ensure_port_free,
    port_open,
    read_pid,
    require_commands,
    spawn,
    stop_pid,
    wait_until,
)
from infra.local.profiles import Profile


class RedisServer:
    name = "redis"

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.port = profile.redis_port
        self.data_dir = profile.var_dir / "redis"
        self.config_path = self.data_dir / "redis.conf"
        self.log_path = profile.log_dir / "redis.log"
        self.pid_path = profile.run_dir / "redis.pid"

    def start(self, *, timeout: float = 30.0) -> None:
        if read_pid(self.pid_path) is not None and port_open(self.port):
            return
        ensure_port_free(self.port, name=self.name)
        (binary,) = require_commands("redis-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        # Foreground mode so the PID we record is the server's own.
        spawn([binary, str(self.config_path)], log_path=self.log_path, pid_path=self.pid_path)
        wait_until(
            self._answers_ping,
            name="redis",
            timeout=timeout,
            log_path=self.log_path,
            pid_path=self.pid_path,
        )

    def stop(self) -> None:
        # SIGTERM makes Redis flush the AOF before exiting.
        stop_pid(self.pid_path, name=self.name)

    def status(self) -> ServerStatus:
        pid = read_pid(self.pid_path)
        version = self._info_version() if pid is not None else None
        return ServerStatus(self.name, self.port, pid, version, version is not None)

    def _config(self) -> str:
        return "\n".join(
            [
                "bind 127.0.0.1",
                "protected-mode yes",
                f"port {self.port}",
                "daemonize no",
                f"dir {self.data_dir}",
                "appendonly yes",
                "appendfsync everysec",
                "save ''",
                "maxmemory 512mb",
                "maxmemory-policy noeviction",
                "",
            ]
        )

    def _answers_ping(self) -> bool:
        return self._command(b"PING\r\n").startswith(b"+PONG")

    def _info_version(self) -> str | None:
        reply = self._command(b"INFO server\r\n")
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return None

    def _command(self, command: bytes) -> bytes:
        # Plain RESP over a socket: the stack tools run before the app's client exists.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(command)
                return sock.recv(65536)
        except OSError:
            return b""
