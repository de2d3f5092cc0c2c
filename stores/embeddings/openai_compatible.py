"""Any OpenAI-compatible `/v1/embeddings` endpoint: OpenAI, vLLM, TEI, Ollama.

Texts go in batches of `batch_size`. A batch that fails on the way (connection
refused, timeout, HTTP 429 or 5xx) is retried `max_retries` times, waiting
`backoff * 2**attempt` seconds (or the server's `Retry-After`) in between;
any other status is a refusal and is not retried.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from stores.embeddings.base import EmbedderOptions, EmbeddingUnavailable, Vector


class _Retryable(Exception):
    """A batch that failed on the way, worth another attempt."""

    def __init__(self, failure: str, *, retry_after: float | None = None) -> None:
        super().__init__(failure)
        self.failure = failure
        self.retry_after = retry_after


_RETRIED_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 30.0


class OpenAIEmbedder:
    """Owns one httpx client for the life of the gateway; `aclose()` closes it."""

    def __init__(
        self, options: EmbedderOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._options = options
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=options.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(options.timeout),
            transport=transport,
        )

    @property
    def model(self) -> str:
        return self._options.model

    @property
    def dimension(self) -> int:
        return self._options.dimension

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        size = self._options.batch_size
        for start in range(0, len(texts), size):
            vectors.extend(await self._batch(list(texts[start : start + size])))
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _batch(self, texts: list[str]) -> list[Vector]:
        attempts = self._options.max_retries + 1
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            reraise=True,
        )
        try:
            vectors: list[Vector] = await retrying(self._attempt, texts)
        except _Retryable as exc:
            raise EmbeddingUnavailable(
                f"the embedding server failed {attempts} times; last: {exc.failure}"
            ) from None
        return vectors

    async def _attempt(self, texts: list[str]) -> list[Vector]:
        try:
            response = await self._client.post(
                "embeddings", json={"model": self._options.model, "input": texts}
            )
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _Retryable(failure) from exc
        if response.status_code == 200:
            return self._vectors(response, len(texts))
        failure = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code not in _RETRIED_STATUSES:
            raise EmbeddingUnavailable(f"the embedding server refused: {failure}")
        raise _Retryable(failure, retry_after=_retry_after(response))

    def _wait(self, state: RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failed, _Retryable) and failed.retry_after is not None:
            return failed.retry_after
        return float(self._options.backoff * 2 ** (state.attempt_number - 1))

    def _vectors(self, response: httpx.Response, expected: int) -> list[Vector]:
        try:
            body: Any = response.json()
            items = sorted(body["data"], key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingUnavailable(
                f"the embedding server sent a malformed answer: {exc}"
            ) from exc
        if len(vectors) != expected:
            raise EmbeddingUnavailable(
                f"the embedding server returned {len(vectors)} vectors for {expected} texts"
            )
        for vector in vectors:
            if len(vector) != self.dimension:
                raise EmbeddingUnavailable(
                    f"model {self.model} returned {len(vector)} dimensions, settings say "
                    f"{self.dimension}; set POLYGRAPH_EMBEDDING_DIMENSION to match"
                )
        return [_normalised(vector) for vector in vectors]


def _normalised(vector: Vector) -> Vector:
    # Cosine distance does not need it, but scores compare across providers this way.
    norm = math.sqrt(sum(x * x for x in vector))
    return vector if norm == 0 else [x / norm for x in vector]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 else min(seconds, _MAX_RETRY_AFTER_S)
