"""The bench measures a server with worker processes whole, and reports its
whole-machine rows against the peer's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench import checks
from bench.servers import _tree
from tests.support.serving import wait_until

SESSION = {"count": 1, "p50_ms": 0.1, "p99_ms": 0.2}


def test_a_servers_tree_holds_its_workers() -> None:
    # A parent whose child sleeps: the shape of `serve --workers` or Node's cluster.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys;"
            " subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])",
        ],
        start_new_session=True,
    )
    try:
        wait_until(lambda: len(_tree(parent.pid)) == 2, what="the worker to start")
        assert _tree(parent.pid)[0] == parent.pid
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # only the group this test started
        parent.wait()


def test_whole_machine_rows_get_a_throughput_target_against_the_peer() -> None:
    row = {"p50_ms": 1.0, "rps": 120.0, "cpu_s_per_1k": 1.0}
    peer = {"p50_ms": 1.0, "rps": 100.0, "cpu_s_per_1k": 1.0}
    scenarios = {"S1 x2": {"gateway": row, "peer": peer}}
    ratios = checks._ratios(scenarios)
    assert ratios["S1 x2"]["gateway_peer_rps"] == 1.2
    targets = {t["target"]: t for t in checks._targets(scenarios, ratios, SESSION, None)}
    whole = targets["S1 x2 throughput at least PostGraphile's"]
    assert whole["met"] is True and whole["result"] == "1.20x the peer's rps"
