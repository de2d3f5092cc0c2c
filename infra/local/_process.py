"""Starting, watching and stopping detached server processes by PID file."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PACKAGES_SCRIPT = Path(__file__).with_name("system-packages.sh")


class StackError(Exception):
    """A local server could not be installed, started or reached."""


def require_commands(*names: str) -> list[str]:
    """Paths of `names`; installs the stack's Debian packages once if any is missing."""
    if any(shutil.which(name) is None for name in names):
        print(f"stack: installing missing system packages ({', '.join(names)})", flush=True)
        subprocess.run(["bash", str(SYSTEM_PACKAGES_SCRIPT)], check=False)
    found = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not found and {SYSTEM_PACKAGES_SCRIPT} could not install it"
        )
    return [path for path in found if path is not None]


@dataclass(frozen=True)
class ServerStatus:
    store: str
    port: int
    pid: int | None
    version: str | None
    up: bool


def spawn(
    cmd: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start `cmd` in its own session so it outlives this process; returns its PID.

    posix_spawn rather than Popen: a Popen object for a server meant to outlive
    us would warn, when collected, that its child is still running.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    executable = cmd[0] if os.sep in cmd[0] else shutil.which(cmd[0])
    if executable is None:
        raise StackError(f"{cmd[0]} not found on PATH")
    pid = os.posix_spawn(
        executable,
        list(cmd),
        {**os.environ, **(env or {})},
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    pid_path.write_text(f"{pid}\n")
    return pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it so it reads as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def read_pid(pid_path: Path) -> int | None:
    """The PID in `pid_path`, or None when the file is missing or the process is gone."""
    try:
        pid = int(pid_path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid_path: Path, *, name: str, timeout: float = 30.0) -> bool:
    """SIGTERM the process in `pid_path`, SIGKILL it after `timeout`; True if one was running."""
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    pid_path.unlink(missing_ok=True)
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, *, name: str) -> None:
    """Refuse to start when something this stack did not start holds the port."""
    if port_open(port):
        raise StackError(
            f"{name}: port {port} is in use by a process this checkout did not start "
            f"(another checkout's stack?). Stop it, e.g. with `polygraph stack down` there; "
            f"`ss -ltnp 'sport = :{port}'` shows who holds it."
        )


def log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    name: str,
    timeout: float,
    log_path: Path,
    pid_path: Path | None = None,
) -> None:
    """Poll `check` until it is true; fail fast, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if pid_path is not None and read_pid(pid_path) is None:
            raise StackError(
                f"{name} exited during start-up; see {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{name} did not become ready within {timeout:.0f}s; see {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        time.sleep(0.2)
