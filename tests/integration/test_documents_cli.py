"""`polygraph documents push` and `list` against the worker's database."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import orjson

from gateway.settings import Settings


def _polygraph(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLYGRAPH_POSTGRES_DSN": settings.postgres_dsn.get_secret_value()}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_push_registers_a_manifest_once(settings: Settings, tmp_path: Path) -> None:
    label = secrets.token_hex(4)
    documents = [
        f"query Agents_{label} {{ agents(first: 3) {{ totalCount }} }}",
        f"query Health_{label} {{ health {{ status }} }}",
    ]
    manifest = tmp_path / "persisted-documents.json"
    manifest.write_bytes(
        orjson.dumps({hashlib.sha256(d.encode()).hexdigest(): d for d in documents})
    )

    pushed = _polygraph(settings, "documents", "push", str(manifest), "--client", "web")
    assert pushed.returncode == 0, pushed.stderr
    assert "2 in" in pushed.stdout and "2 registered, 0 already were" in pushed.stdout

    again = _polygraph(settings, "documents", "push", str(manifest))
    assert again.returncode == 0, again.stderr
    assert "0 registered, 2 already were" in again.stdout

    listed = _polygraph(settings, "documents", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"query Agents_{label}" in listed.stdout and "web" in listed.stdout


def test_push_refuses_a_manifest_with_any_bad_document(settings: Settings, tmp_path: Path) -> None:
    good = f"query Good_{secrets.token_hex(4)} {{ __typename }}"
    manifest = tmp_path / "persisted_queries.json"
    manifest.write_bytes(orjson.dumps({"good": good, "bad": "{ agents { nope } }"}))
    refused = _polygraph(settings, "documents", "push", str(manifest))
    assert refused.returncode == 1
    assert "bad: Cannot query field 'nope'" in refused.stderr
    listed = _polygraph(settings, "documents", "list")
    assert good not in listed.stdout

    missing = _polygraph(settings, "documents", "push", str(tmp_path / "absent.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_push_refuses_documents_the_request_limits_would_refuse(
    settings: Settings, tmp_path: Path
) -> None:
    # Valid GraphQL, but 40 aliases (the limit is 30), and 18 levels deep (15).
    label = secrets.token_hex(4)
    aliases = " ".join(f"a{i}: __typename" for i in range(40))
    parents = "parent { " * 14 + "id" + " }" * 14
    documents = {
        "aliases": f"query Aliases_{label} {{ {aliases} }}",
        "deep": f"query Deep_{label} {{ agents(first: 1) {{ edges {{ node {{ {parents} }} }} }} }}",
    }
    manifest = tmp_path / "persisted_queries.json"
    manifest.write_bytes(orjson.dumps(documents))
    refused = _polygraph(settings, "documents", "push", str(manifest))
    assert refused.returncode == 1, refused.stdout
    assert "aliases: The operation has 40 aliases" in refused.stderr
    assert "(POLYGRAPH_MAX_ALIASES)" in refused.stderr
    assert "deep: The operation is nested" in refused.stderr
    assert label not in _polygraph(settings, "documents", "list").stdout
