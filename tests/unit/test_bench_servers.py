"""A bench server that fails to start says why in the failure itself."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from bench.servers import Child, ServerFailed


def test_a_server_that_exits_while_starting_reports_its_last_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    log_path.write_text("an earlier start's line\n")
    child = Child(
        name="server",
        argv=[sys.executable, "-c", "print('address already in use', flush=True); exit(3)"],
        url="http://127.0.0.1:9",
        ready_path="/",
        log_path=log_path,
    )
    with pytest.raises(ServerFailed) as failed:
        child.start(timeout=60)
    message = str(failed.value)
    assert message.startswith(f"server exited with 3; see {log_path}; it wrote last:")
    assert message.endswith("address already in use")
    assert "an earlier start's line" not in message


def test_a_server_whose_port_is_taken_is_not_started(tmp_path: Path) -> None:
    # A server an interrupted bench left running would be measured in the new one's place.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        child = Child(
            name="gateway",
            argv=[sys.executable, "-c", "raise SystemExit('must not start')"],
            url=f"http://127.0.0.1:{port}",
            ready_path="/",
            log_path=tmp_path / "server.log",
        )
        with pytest.raises(ServerFailed, match=f"already listens at http://127.0.0.1:{port}"):
            child.start(timeout=60)
    assert child.process is None
    assert not (tmp_path / "server.log").exists()
