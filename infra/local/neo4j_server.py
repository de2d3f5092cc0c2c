"""Neo4j 5.26 LTS Community, embedded in a small Java launcher with the Bolt connector.

Neo4j is not packaged for Debian, so `infra/local/neo4j-launcher` (a Maven project) pulls
`org.neo4j:neo4j` and `org.neo4j:neo4j-bolt` from Maven Central and wraps them in a launcher
that listens on 127.0.0.1 only. The build lands in `var/cache/neo4j-launcher/lib`, shared by
all profiles, and is redone only when the POM or the Java source is newer than the jar.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import neo4j
import neo4j.exceptions

from infra.local._process import (
    ServerStatus,
    StackError,
    port_open,
    read_pid,
    require_commands,
    spawn,
    stop_pid,
    wait_until,
)
from infra.local.profiles import REPO_ROOT, Profile

LAUNCHER_PROJECT = REPO_ROOT / "infra" / "local" / "neo4j-launcher"
BUILD_DIR = REPO_ROOT / "var" / "cache" / "neo4j-launcher"
LIB_DIR = BUILD_DIR / "lib"
LAUNCHER_JAR = LIB_DIR / "polygraph-neo4j-launcher.jar"
MAIN_CLASS = "polygraph.neo4j.Launcher"
PASSWORD_ENV = "POLYGRAPH_NEO4J_PASSWORD"
USER = "neo4j"
READY_MARKER = b"polygraph-neo4j ready "
BUILD_TIMEOUT = 1200.0

# Flags the Neo4j server scripts pass too: without the --add-opens the page cache and the
# transaction log fall back to slower paths and warn in debug.log.
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-OmitStackTraceInFastThrow",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dlog4j2.disable.jmx=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
)


def _say(message: str) -> None:
    print(f"neo4j: {message}", file=sys.stderr, flush=True)


def _ensure_tools() -> tuple[str, str]:
    java, mvn = require_commands("java", "mvn")
    return java, mvn


def _sources() -> list[Path]:
    return [LAUNCHER_PROJECT / "pom.xml", *LAUNCHER_PROJECT.glob("src/**/*.java")]


def launcher_is_built() -> bool:
    """True when the launcher jar exists and is newer than the POM and every Java source."""
    try:
        built = LAUNCHER_JAR.stat().st_mtime
    except FileNotFoundError:
        return False
    return all(source.stat().st_mtime < built for source in _sources())


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    # Two profiles starting at once must not build into the same folder together.
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_launcher(mvn: str) -> None:
    """Build the launcher and copy its dependency jars into LIB_DIR, unless that is up to date."""
    with _build_lock():
        if launcher_is_built():
            return
        _say("building launcher with Maven (first run downloads ~100 MB)…")
        started = time.monotonic()
        # A fresh lib/ so jars of an older Neo4j version never share the class path.
        shutil.rmtree(LIB_DIR, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(LAUNCHER_PROJECT / "pom.xml"),
            f"-DbuildDir={BUILD_DIR}",
            "package",
        ]
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise StackError(
                f"Maven did not build the Neo4j launcher in {BUILD_TIMEOUT:.0f}s"
            ) from None
        if result.returncode != 0 or not LAUNCHER_JAR.exists():
            LAUNCHER_JAR.unlink(missing_ok=True)  # so the next start builds again
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise StackError(f"Maven failed to build the Neo4j launcher:\n{output}")
        _say(f"launcher built in {time.monotonic() - started:.0f}s")


class Neo4jServer:
    name = "neo4j"

    def __init__(
        self,
        profile: Profile,
        *,
        password: str,
        heap_mb: int = 512,
        pagecache_mb: int = 256,
    ) -> None:
        self.profile = profile
        self.port = profile.bolt_port
        self.uri = f"bolt://127.0.0.1:{self.port}"
        self.password = password
        self.heap_mb = heap_mb
        self.pagecache_mb = pagecache_mb
        self.home = profile.var_dir / "neo4j"
        self.log_path = profile.var_dir / "log" / "neo4j.log"
        self.pid_path = profile.var_dir / "run" / "neo4j.pid"

    def start(self, *, timeout: float = 180.0) -> None:
        pid = read_pid(self.pid_path)
        if pid is not None and port_open(self.port):
            return
        if pid is None and port_open(self.port):
            raise StackError(
                f"neo4j: port {self.port} is taken by a process this stack did not start"
            )
        if not self.password:
            raise StackError("neo4j: the password must not be empty")
        if pid is None:
            java, mvn = _ensure_tools()
            build_launcher(mvn)
            self.home.mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as log:
                log.write(f"--- neo4j start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            log_offset = self._log_size()
            spawn(
                self._command(java),
                log_path=self.log_path,
                pid_path=self.pid_path,
                env={PASSWORD_ENV: self.password},
            )
        else:
            log_offset = 0  # a launcher of ours is still starting: wait for it instead
        try:
            wait_until(
                lambda: self._ready(log_offset),
                name="neo4j",
                timeout=timeout,
                log_path=self.log_path,
                pid_path=self.pid_path,
            )
        except StackError as error:
            raise StackError(
                f"{error}\nNeo4j's own log: {self.home / 'logs' / 'debug.log'}"
            ) from None

    def stop(self) -> None:
        # SIGTERM runs the launcher's shutdown hook: checkpoint, then a clean exit.
        stop_pid(self.pid_path, name=self.name, timeout=60.0)

    def status(self) -> ServerStatus:
        pid = read_pid(self.pid_path)
        version = self._version() if pid is not None else None
        return ServerStatus(self.name, self.port, pid, version, version is not None)

    def _command(self, java: str) -> list[str]:
        return [
            java,
            # A small initial heap keeps the idle RSS near 400 MiB instead of 650 MiB.
            f"-Xms{min(self.heap_mb, 128)}m",
            f"-Xmx{self.heap_mb}m",
            *JVM_FLAGS,
            "-cp",
            f"{LIB_DIR}/*",
            MAIN_CLASS,
            "--home",
            str(self.home),
            "--port",
            str(self.port),
            "--pagecache",
            f"{self.pagecache_mb}m",
        ]

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _ready(self, log_offset: int) -> bool:
        # Log in only after the launcher says it set the password: failed logins before
        # that would count towards Neo4j's lock-out of the user.
        try:
            with self.log_path.open("rb") as log:
                log.seek(log_offset)
                if READY_MARKER not in log.read():
                    return False
        except FileNotFoundError:
            return False
        return self._version() is not None

    def _driver(self) -> neo4j.Driver:
        return neo4j.GraphDatabase.driver(
            self.uri,
            auth=(USER, self.password),
            connection_timeout=2.0,
            max_connection_lifetime=30.0,
        )

    def _version(self) -> str | None:
        # An auto-commit query: execute_query would retry a refused connection for 30 s.
        try:
            with self._driver() as driver, driver.session(database="system") as session:
                record = session.run(
                    "CALL dbms.components() YIELD versions RETURN versions[0] AS version"
                ).single()
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError):
            return None
        return None if record is None else str(record["version"])
