"""Start-up needs no network, as the image promises (Dockerfile): in a network
namespace of its own, with no route anywhere and no store listening, the local model
embeds, and the gateway starts degraded, answers /health/live and serves GraphiQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INSIDE = r"""
import os, signal, subprocess, sys, time, urllib.request

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
from stores.embeddings.local import LocalEmbedder

assert LocalEmbedder().embed_sync(["offline"]).shape == (1, 384)
server = subprocess.Popen(
    [sys.executable, "-m", "gateway.cli", "serve", "--port", "8000"],
    stdout=subprocess.DEVNULL,
    stderr=open("serve.log", "w"),
)

def get(path, accept="*/*"):
    request = urllib.request.Request("http://127.0.0.1:8000" + path, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()

deadline = time.monotonic() + 240
while True:
    try:
        status, body = get("/health/live")
        break
    except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit("gateway did not start: " + open("serve.log").read())
        time.sleep(0.2)
print("live", status, body)
status, page = get("/graphql", accept="text/html")
asset = page.split('src="')[1].split('"')[0]
print("graphiql", status, get(asset)[0])
server.send_signal(signal.SIGTERM)
print("exit", server.wait(timeout=60))
"""


def test_the_gateway_starts_and_embeds_without_a_network(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYGRAPH_")}
    # Stores at ports nothing listens on inside the namespace.
    env |= {"POLYGRAPH_HOST": "127.0.0.1", "POLYGRAPH_LOG_LEVEL": "warning"}
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", INSIDE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert 'live 200 {"status":"live"}' in lines
    assert "graphiql 200 200" in lines
    # uvicorn stops gracefully, then lets SIGTERM end the process as it would have.
    assert "exit -15" in lines
