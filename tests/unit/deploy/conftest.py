"""The deployment files are checked offline: no Docker engine or cluster is needed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
# Console scripts of the dev tools live beside the interpreter running the tests.
BIN_DIR = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN_DIR / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing; run `make install-test`"
    return found


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
