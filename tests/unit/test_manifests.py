"""Client manifests: Relay, GraphQL Codegen and Apollo formats; ids checked against
their documents; documents checked against the schema."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from resolvers.manifests import ManifestError, check_against_schema, parse_manifest
from schema import build_schema

AGENTS = "query Agents { agents(first: 5) { totalCount } }"
HEALTH = "query Health { health { status } }"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_relay_persisted_queries_json() -> None:
    raw = orjson.dumps({_md5(AGENTS): AGENTS, _md5(HEALTH): HEALTH})
    manifest = parse_manifest(raw, max_bytes=10_000)
    assert manifest.format == "relay/codegen"
    assert {(d.id, d.sha256) for d in manifest.documents} == {
        (_md5(AGENTS), _sha256(AGENTS)),
        (_md5(HEALTH), _sha256(HEALTH)),
    }


def test_codegen_client_preset_persisted_documents_json() -> None:
    raw = orjson.dumps({_sha256(AGENTS): AGENTS})
    (document,) = parse_manifest(raw, max_bytes=10_000).documents
    assert document.id == document.sha256 == _sha256(AGENTS)
    assert document.body == AGENTS


def test_apollo_persisted_query_manifest() -> None:
    raw = orjson.dumps(
        {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                {"id": _sha256(AGENTS), "name": "Agents", "type": "query", "body": AGENTS},
                {
                    "id": "sha256:" + _sha256(HEALTH),
                    "name": "Health",
                    "type": "query",
                    "body": HEALTH,
                },
            ],
        }
    )
    manifest = parse_manifest(raw, max_bytes=10_000)
    assert manifest.format == "apollo"
    assert [d.body for d in manifest.documents] == [AGENTS, HEALTH]


def test_opaque_ids_are_taken_as_they_are() -> None:
    (document,) = parse_manifest(orjson.dumps({"web/agents@3": AGENTS}), max_bytes=10_000).documents
    assert document.id == "web/agents@3"


def test_a_hash_id_must_be_its_documents_hash() -> None:
    wrong = {_sha256(HEALTH): AGENTS, _md5(HEALTH): AGENTS, "sha256:abc": AGENTS}
    with pytest.raises(ManifestError) as refused:
        parse_manifest(orjson.dumps(wrong), max_bytes=10_000)
    problems = refused.value.problems
    assert len(problems) == 3
    assert any("not the SHA256 of its document" in p for p in problems)
    assert any("not the MD5 of its document" in p for p in problems)
    assert any("64 hexadecimal digits" in p for p in problems)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[1, 2]", "a manifest is a JSON object"),
        (b"{oops", "not JSON"),
        (b"{}", "no documents"),
        (orjson.dumps({"a": ""}), "non-empty string"),
        (orjson.dumps({"a": 5}), "non-empty string"),
        (orjson.dumps({"a": "query Q { __typename }" + " " * 100}), "documents are at most 64"),
        (orjson.dumps({"format": "apollo-persisted-query-manifest", "version": 2}), "version 2"),
    ],
)
def test_malformed_manifests_are_refused_whole(raw: bytes, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest(raw, max_bytes=64)


def test_documents_that_cannot_run_are_refused() -> None:
    raw = orjson.dumps(
        {"good": AGENTS, "unknown-field": "{ agents { nope } }", "syntax": "query {"}
    )
    manifest = parse_manifest(raw, max_bytes=10_000)
    with pytest.raises(ManifestError) as refused:
        check_against_schema(manifest, build_schema()._schema)
    assert [p.split(":", 1)[0] for p in refused.value.problems] == ["unknown-field", "syntax"]
