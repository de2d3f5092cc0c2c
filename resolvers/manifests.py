"""Client manifests of persisted documents: read, checked, ready to register.

Formats, told apart by their shape:

- id -> text, a JSON object: Relay's `persisted_queries.json` (ids are MD5 by default,
  SHA-1 or SHA-256 if configured) and GraphQL Codegen's client preset
  `persisted-documents.json` (SHA-256 ids);
- Apollo's persisted query manifest: `{"format": "apollo-persisted-query-manifest",
  "version": 1, "operations": [{"id", "name", "type", "body"}]}` (SHA-256 ids).

An id that looks like a hash (32, 40 or 64 hexadecimal digits, or `sha256:<hex>`)
must be the MD5, SHA-1 or SHA-256 of its text: a manifest whose ids do not match
its documents is refused, since clients would send ids that run something else.
Other ids are taken as they are.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from graphql import GraphQLError, GraphQLSchema, parse, validate

from resolvers.documents import MAX_DOCUMENT_ID_LENGTH, SHA256_PREFIX, sha256_hex

APOLLO_FORMAT = "apollo-persisted-query-manifest"
MAX_DOCUMENTS = 10_000
_HEX = re.compile(r"[0-9a-fA-F]+")
_HASHES = {32: "md5", 40: "sha1", 64: "sha256"}


@dataclass(frozen=True, slots=True)
class ManifestDocument:
    id: str
    sha256: str
    body: str


@dataclass(frozen=True, slots=True)
class Manifest:
    format: str
    documents: tuple[ManifestDocument, ...]


class ManifestError(ValueError):
    """A manifest that cannot be registered; `problems` lists every reason found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def parse_manifest(raw: bytes, *, max_bytes: int) -> Manifest:
    """Read a manifest, refusing it whole if any document is malformed, too large,
    or named by a hash that is not its own."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ManifestError([f"not JSON: {exc}"]) from exc
    if isinstance(data, dict) and data.get("format") == APOLLO_FORMAT:
        format_name, pairs = "apollo", _apollo_pairs(data)
    elif isinstance(data, dict):
        format_name, pairs = "relay/codegen", list(data.items())
    else:
        raise ManifestError(["a manifest is a JSON object (id -> document, or Apollo's format)"])
    if not pairs:
        raise ManifestError(["the manifest holds no documents"])
    if len(pairs) > MAX_DOCUMENTS:
        raise ManifestError([f"{len(pairs)} documents; a manifest holds at most {MAX_DOCUMENTS}"])
    problems: list[str] = []
    documents: dict[str, ManifestDocument] = {}
    for document_id, body in pairs:
        problem = _problem(document_id, body, max_bytes)
        if problem:
            problems.append(problem)
            continue
        assert isinstance(document_id, str) and isinstance(body, str)
        known = documents.get(document_id)
        if known is not None and known.body != body:
            problems.append(f"{document_id}: listed twice with different documents")
        documents[document_id] = ManifestDocument(document_id, sha256_hex(body), body)
    if problems:
        raise ManifestError(problems)
    return Manifest(format_name, tuple(documents.values()))


def check_against_schema(manifest: Manifest, schema: GraphQLSchema) -> None:
    """Refuse documents that do not parse or validate: they could never run."""
    problems: list[str] = []
    for document in manifest.documents:
        try:
            errors = validate(schema, parse(document.body))
        except GraphQLError as exc:
            errors = [exc]
        problems += [f"{document.id}: {error.message}" for error in errors[:3]]
    if problems:
        raise ManifestError(problems)


def _apollo_pairs(data: dict[str, object]) -> list[tuple[object, object]]:
    if data.get("version") != 1:
        raise ManifestError([f"unsupported {APOLLO_FORMAT} version {data.get('version')!r}"])
    operations = data.get("operations")
    if not isinstance(operations, list):
        raise ManifestError(["`operations` must be a list"])
    pairs: list[tuple[object, object]] = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise ManifestError(["every operation must be an object with `id` and `body`"])
        pairs.append((operation.get("id"), operation.get("body")))
    return pairs


def _problem(document_id: object, body: object, max_bytes: int) -> str | None:
    if not isinstance(document_id, str) or not 0 < len(document_id) <= MAX_DOCUMENT_ID_LENGTH:
        return f"{document_id!r}: ids are strings of 1 to {MAX_DOCUMENT_ID_LENGTH} characters"
    if not isinstance(body, str) or not body.strip():
        return f"{document_id}: the document must be a non-empty string"
    size = len(body.encode())
    if size > max_bytes:
        return f"{document_id}: {size} bytes; documents are at most {max_bytes}"
    digest = document_id.removeprefix(SHA256_PREFIX)
    if digest != document_id and not (len(digest) == 64 and _HEX.fullmatch(digest)):
        return f"{document_id}: a `sha256:` id is followed by 64 hexadecimal digits"
    algorithm = "sha256" if digest != document_id else _HASHES.get(len(digest))
    if algorithm and _HEX.fullmatch(digest):
        actual = hashlib.new(algorithm, body.encode(), usedforsecurity=False).hexdigest()
        if actual != digest.lower():
            return f"{document_id}: not the {algorithm.upper()} of its document ({actual})"
    return None
