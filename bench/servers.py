"""The servers under test as child processes: start, wait until they answer, measure, stop.

CPU time and peak RSS come from /proc/<pid>: `stat` (utime + stime) and `status`
(VmHWM, reset per measured window through `clear_refs` where the kernel allows it),
summed over the server and its descendants: a server with several worker processes
(`polygraph serve --workers N`, Node's cluster) is measured whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerFailed(RuntimeError):
    pass


@dataclass
class Child:
    """One server under test, started by the harness and stopped by its pid only."""

    name: str
    argv: Sequence[str]
    url: str
    ready_path: str
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self, *, timeout: float = 60.0, ready_body: bytes | None = None) -> None:
        if _listening(self.url):
            # Otherwise the new server fails to bind and the old one is measured.
            raise ServerFailed(
                f"{self.name}: something already listens at {self.url} (a server left"
                " running by an interrupted bench?); stop that process first"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log_start = log.tell()
        self.process = subprocess.Popen(
            list(self.argv),
            env={**os.environ, **self.env},
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_until_ready(timeout, ready_body)
        except BaseException:
            # Interrupted or failed while starting: the caller never got to own it.
            self.stop()
            raise

    def _wait_until_ready(self, timeout: float, ready_body: bytes | None) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
                    f"{self._log_tail()}"
                )
            if _answers(self.url + self.ready_path, ready_body):
                return
            time.sleep(0.2)
        raise ServerFailed(
            f"{self.name} did not answer within {timeout:g}s; see {self.log_path}{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        """What this start wrote last, so a failure reads on its own (CI keeps no files)."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self._log_start)
            written = log.read().decode(errors="replace").splitlines()[-lines:]
            if written:
                return "; it wrote last:\n" + "\n".join(written)
        return ""

    def stop(self, *, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            # Its own session: the group holds its workers too, and nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def cpu_seconds(self) -> float:
        total = 0
        for pid in _tree(self.pid):
            with contextlib.suppress(OSError):
                fields = _stat_fields(pid)
                # utime and stime are fields 14 and 15; the split starts at field 3.
                total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

    def reset_peak_rss(self) -> bool:
        try:
            for pid in _tree(self.pid):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss_mb(self) -> float:
        """The sum of each process's peak: an upper bound on the tree's peak."""
        total_kb = 0
        for pid in _tree(self.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
        return total_kb / 1024


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _tree(root: int) -> list[int]:
    """`root` and every process descended from it, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # ppid is field 4.
                parents.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
    found = [root]
    for pid in found:
        found.extend(parents.get(pid, ()))
    return found


def _listening(url: str) -> bool:
    address = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((address.hostname, address.port or 80), timeout=2):
            return True
    except OSError:
        return False


def _answers(url: str, body: bytes | None) -> bool:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            status: int = response.status
            return 200 <= status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


class Measure:
    """CPU seconds and peak RSS of one child over a `with` block."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.cpu_s = 0.0
        self.rss_mb = 0.0
        self._cpu_before = 0.0

    def __enter__(self) -> Measure:
        self.child.reset_peak_rss()
        self._cpu_before = self.child.cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.cpu_s = self.child.cpu_seconds() - self._cpu_before
            self.rss_mb = self.child.peak_rss_mb()
