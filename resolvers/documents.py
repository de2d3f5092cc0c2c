"""Which document a request runs: its text, an automatic persisted query, or a
trusted document named by id.

Automatic persisted queries (Apollo's protocol): a client sends
`extensions.persistedQuery = {version: 1, sha256Hash}`, first without the text;
on `PersistedQueryNotFound` it sends the text with the hash, which registers it
(in Redis, for a while) once the hash is checked.

Trusted documents are registered ahead of time from a client's manifest
(`polygraph documents push`) and kept in PostgreSQL. A client names one with
`documentId` (the GraphQL-over-HTTP persisted documents proposal: the manifest's
id, or `sha256:<hex>`) or with the APQ hash of its text. In trusted-documents mode
nothing else runs: not unregistered text, not new APQ registrations.

Documents found are kept in this process (bounded), so a hit costs no round trip:
entries are keyed by the hash of their text, or by an id that never changes meaning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from resolvers.errors import ClientError, ErrorCode
from stores.cache.lru import Lru
from stores.errors import InvalidInput, StoreUnavailable
from stores.postgres.documents import TrustedDocumentRepository
from stores.redis.apq import PersistedQueryCache

DOCUMENT_ID = "documentId"
PERSISTED_QUERY = "persistedQuery"
MAX_DOCUMENT_ID_LENGTH = 200
SHA256_PREFIX = "sha256:"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# What Apollo clients look for, to the letter: the message triggers their retry with text.
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"
NOT_SUPPORTED_MESSAGE = "PersistedQueryNotSupported"
# Answered 200, as Apollo Server does: its clients give up on persisted queries for
# good after a 400. Nor may a cache keep the miss of a GET.
_APQ_ANSWER_HEADERS = (("Cache-Control", "private, no-cache, must-revalidate"),)


class PersistedDocumentError(ClientError):
    """A request naming a document that cannot run; `status` overrides the HTTP status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True, kw_only=True)
class DocumentOptions:
    apq_enabled: bool = True
    # Only registered documents run.
    trusted_only: bool = False
    # Documents this process keeps, per kind.
    remembered: int = 2_000

    def __post_init__(self) -> None:
        if self.remembered < 1:
            raise ValueError("remembered must be at least 1")


@dataclass(frozen=True, slots=True)
class Resolved:
    """The document a request runs; `register_as`: the APQ hash it asks to be kept under."""

    text: str | None
    register_as: str | None = None


def registration_cost(document: str) -> int:
    """Rate limit points an APQ registration costs besides its operation: one per KiB
    kept, so that no caller fills Redis faster than its quota allows."""
    return -(-len(document.encode()) // 1024)


def sha256_hex(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class PersistedDocuments:
    """Resolves the document of each request; see the module docstring for the rules."""

    __slots__ = ("_apq", "_cache", "_options", "_trusted", "_trusted_by_hash", "_trusted_by_id")

    def __init__(
        self,
        *,
        cache: PersistedQueryCache,
        trusted: TrustedDocumentRepository,
        options: DocumentOptions,
    ) -> None:
        self._cache = cache
        self._trusted = trusted
        self._options = options
        self._apq = Lru[str, str](options.remembered)
        self._trusted_by_hash = Lru[str, str](options.remembered)
        self._trusted_by_id = Lru[str, str](options.remembered)

    @property
    def options(self) -> DocumentOptions:
        return self._options

    async def resolve(self, query: str | None, extensions: Mapping[str, object] | None) -> Resolved:
        """The text to run (None when the request names no document at all), and the
        APQ hash to `register` it under once it has run.

        Raises `PersistedDocumentError` for a document that cannot run, and
        `StoreUnavailable` when PostgreSQL cannot say whether a document is trusted.
        """
        extensions = extensions or {}
        if DOCUMENT_ID in extensions:
            if query is not None:
                raise _bad_input("Send either `query` or `documentId`, not both.")
            return Resolved(await self._by_document_id(extensions[DOCUMENT_ID]))
        if PERSISTED_QUERY in extensions:
            return await self._persisted_query(query, extensions[PERSISTED_QUERY])
        trusted_only = self._options.trusted_only
        if (
            query is not None
            and trusted_only
            and await self._trusted_text(sha256_hex(query)) is None
        ):
            raise _not_in_list(
                "This gateway runs trusted documents only, and this operation is not"
                " one: register it with `polygraph documents push`, then send its"
                " `documentId`."
            )
        return Resolved(query)

    async def _by_document_id(self, document_id: object) -> str:
        if not isinstance(document_id, str) or not 0 < len(document_id) <= MAX_DOCUMENT_ID_LENGTH:
            raise _bad_input(
                f"`documentId` must be a string of 1 to {MAX_DOCUMENT_ID_LENGTH} characters."
            )
        if document_id.startswith(SHA256_PREFIX):
            text = await self._trusted_text(document_id.removeprefix(SHA256_PREFIX).lower())
        else:
            text = self._trusted_by_id.get(document_id)
            if text is None:
                found = await self._trusted.by_id(document_id)
                if found is not None:
                    text = found.body
                    self._trusted_by_id.put(document_id, text)
        if text is None:
            raise _not_in_list(
                f"No trusted document has id {document_id!r}: register the client's manifest"
                " with `polygraph documents push`."
            )
        return text

    async def _persisted_query(self, query: str | None, persisted: object) -> Resolved:
        if not isinstance(persisted, Mapping) or persisted.get("version") != 1:
            raise _bad_input(
                "Unsupported persisted query version: send"
                ' `"persistedQuery": {"version": 1, "sha256Hash": "<hex>"}`.'
            )
        sha256 = persisted.get("sha256Hash")
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256.lower()):
            raise _bad_input("`persistedQuery.sha256Hash` must be 64 hexadecimal digits.")
        sha256 = sha256.lower()
        if query is not None and sha256_hex(query) != sha256:
            raise PersistedDocumentError(
                ErrorCode.PERSISTED_QUERY_HASH_MISMATCH, "provided sha does not match query"
            )
        if self._options.trusted_only:
            text = await self._trusted_text(sha256)
            if text is None:
                raise _not_in_list(
                    f"No trusted document has SHA-256 {sha256}: this gateway runs trusted"
                    " documents only."
                )
            return Resolved(text)
        if query is not None:
            known = self._apq.get(sha256) is not None
            return Resolved(query, None if known or not self._options.apq_enabled else sha256)
        text = self._apq.get(sha256) or await self._cached(sha256)
        if text is None:
            # Registered documents run by hash too, APQ or not.
            text = await self._trusted_text(sha256)
        if text is not None:
            return Resolved(text)
        if not self._options.apq_enabled:
            raise PersistedDocumentError(
                ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
                NOT_SUPPORTED_MESSAGE,
                status=200,
                headers=_APQ_ANSWER_HEADERS,
            )
        raise PersistedDocumentError(
            ErrorCode.PERSISTED_QUERY_NOT_FOUND,
            NOT_FOUND_MESSAGE,
            status=200,
            headers=_APQ_ANSWER_HEADERS,
        )

    async def _cached(self, sha256: str) -> str | None:
        """From the APQ cache in Redis; None when it is away (the client sends the text next)."""
        if not self._options.apq_enabled:
            return None
        try:
            text = await self._cache.get(sha256)
        except StoreUnavailable:
            return None
        if text is not None:
            self._apq.put(sha256, text)
        return text

    async def register(self, sha256: str, query: str) -> None:
        """Keep `query` (whose hash `resolve` checked) for APQ; the caller decides when:
        only documents that passed every request limit, and were charged for it."""
        if self._apq.get(sha256) is not None:
            return
        try:
            await self._cache.put(sha256, query)
        except (InvalidInput, StoreUnavailable):
            # Too large to keep, or Redis is away: the operation still runs, unregistered.
            return
        self._apq.put(sha256, query)

    async def _trusted_text(self, sha256: str) -> str | None:
        text = self._trusted_by_hash.get(sha256)
        if text is None:
            found = await self._trusted.by_sha256(sha256)
            if found is None:
                return None
            text = found.body
            self._trusted_by_hash.put(sha256, text)
        return text


def _bad_input(message: str) -> PersistedDocumentError:
    return PersistedDocumentError(ErrorCode.BAD_USER_INPUT, message)


def _not_in_list(message: str) -> PersistedDocumentError:
    return PersistedDocumentError(ErrorCode.PERSISTED_QUERY_NOT_IN_LIST, message)
