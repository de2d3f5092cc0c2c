"""Load generation from separate processes: `wrk` for HTTP, `bench.fanout` for WebSockets.

wrk (C, one thread per core) keeps the load generator's own CPU small on a two-core
machine, where a Python client would need about as much CPU as the server it drives;
its Lua script cycles through pre-encoded bodies and counts GraphQL errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
ABUSE_SCRIPT = Path(__file__).with_name("abuse.lua")
SYSTEM_PACKAGES = Path(__file__).resolve().parents[1] / "infra" / "local" / "system-packages.sh"


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    # One response body, for the harness's equality check (fan-out only).
    sample: Any = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def ensure_wrk() -> str:
    """The wrk binary, installed through infra/local/system-packages.sh when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["bash", str(SYSTEM_PACKAGES)], check=True)
    found = shutil.which("wrk")
    if not found:
        raise LoadError("wrk is missing; install it with `apt-get install wrk`")
    return found


def run_wrk(
    url: str,
    bodies: Sequence[Mapping[str, Any] | str],
    *,
    seconds: float,
    connections: int,
    authorization: str | None,
    threads: int = 1,
    content_type: str = "application/json",
    authorizations: Sequence[str] = (),
) -> LoadResult:
    """POST `bodies` to `url` at fixed concurrency for `seconds` (dicts as JSON, strings
    as they are, with the record separator standing for newlines). `authorizations`,
    when given, pairs each body with its own Authorization header instead."""
    wrk = ensure_wrk()
    if authorizations and len(authorizations) != len(bodies):
        raise ValueError("one authorization per body")
    with tempfile.NamedTemporaryFile("wb", suffix=".ndjson", delete=False) as handle:
        for body in bodies:
            raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
            handle.write(raw + b"\n")
        bodies_path = handle.name
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.writelines(f"{line}\n" for line in authorizations)
        authorizations_path = handle.name
    try:
        completed = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(WRK_SCRIPT),
                url,
            ],
            env={
                "BENCH_BODIES": bodies_path,
                "BENCH_AUTHORIZATION": authorization or "",
                "BENCH_AUTHORIZATIONS": authorizations_path if authorizations else "",
                "BENCH_CONTENT_TYPE": content_type,
            },
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        Path(bodies_path).unlink(missing_ok=True)
        Path(authorizations_path).unlink(missing_ok=True)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line.removeprefix("BENCH_RESULT "))
            return LoadResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p95_ms=raw["p95_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                errors=raw["socket_errors"] + raw["graphql_errors"],
            )
    raise LoadError(f"wrk gave no result: {completed.stdout[-500:]} {completed.stderr[-500:]}")


@dataclass(frozen=True)
class AbuseResult:
    requests: int
    seconds: float
    socket_errors: int
    # Answers by what became of the request: ran, rate_limited, too_complex, ...
    outcomes: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class AbuseLoad:
    """The abusive client of scenario A1: wrk in the background, sending `requests`
    (header, content type, body) in turn for `seconds`, as fast as answers come."""

    def __init__(
        self,
        url: str,
        requests: Sequence[tuple[str, str, bytes]],
        *,
        seconds: float,
        connections: int,
    ) -> None:
        wrk = ensure_wrk()
        with tempfile.NamedTemporaryFile("wb", suffix=".abuse", delete=False) as handle:
            for header, content_type, body in requests:
                if b"\n" in body or b"\t" in body:
                    raise LoadError("abuse bodies are sent one a line: no newlines or tabs")
                handle.write(f"{header}\t{content_type}\t".encode() + body + b"\n")
            self._path = Path(handle.name)
        self._seconds = seconds
        self._process = subprocess.Popen(
            [
                wrk,
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(ABUSE_SCRIPT),
                url,
            ],
            env={"BENCH_ABUSE": str(self._path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self) -> AbuseResult:
        """Wait for the run to end; its counts."""
        try:
            stdout, stderr = self._process.communicate(timeout=self._seconds + 60)
        finally:
            self._path.unlink(missing_ok=True)
        for line in stdout.splitlines():
            if line.startswith("BENCH_ABUSE "):
                raw = json.loads(line.removeprefix("BENCH_ABUSE "))
                return AbuseResult(
                    requests=raw["requests"],
                    seconds=raw["duration_us"] / 1e6,
                    socket_errors=raw["socket_errors"],
                    outcomes=dict(sorted(raw["outcomes"].items())),
                )
        raise LoadError(f"wrk (abuse) gave no result: {stdout[-500:]} {stderr[-500:]}")

    def stop(self) -> None:
        """End it early (the harness failed meanwhile)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._path.unlink(missing_ok=True)


def run_fanout(
    url: str,
    *,
    seconds: float,
    subscribers: int,
    rate: float,
    redis_url: str,
    channel: str,
    task_ids: Sequence[str],
    authorization: str,
    query: str,
) -> LoadResult:
    """100 WebSocket subscribers, events published to Redis at `rate` per second;
    throughput is events delivered per second across all subscribers."""
    spec = {
        "url": url,
        "seconds": seconds,
        "subscribers": subscribers,
        "rate": rate,
        "redis_url": redis_url,
        "channel": channel,
        "task_ids": list(task_ids),
        "authorization": authorization,
        "query": query,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench.fanout"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if completed.returncode != 0:
        raise LoadError(f"fan-out load generator failed on {url}: {completed.stderr[-600:]}")
    raw = json.loads(completed.stdout.strip().splitlines()[-1])
    return LoadResult(
        requests=raw["delivered"],
        seconds=raw["seconds"],
        p50_ms=raw["p50_ms"],
        p95_ms=raw["p95_ms"],
        p99_ms=raw["p99_ms"],
        errors=raw["errors"],
        sample=raw.get("sample"),
    )
