"""What every embedding provider offers, and how the gateway configures one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from stores.errors import InvalidInput, StoreUnavailable

Vector = list[float]
Provider = Literal["local", "openai"]

# The model `make run` embeds with when nothing is configured (see stores/embeddings/local.py).
DEFAULT_MODEL = "all-MiniLM-L6-v2-int8"
DEFAULT_DIMENSION = 384
MAX_DIMENSION = 4000  # pgvector's limit for an HNSW-indexed `vector` column
NAME = "embedder"


class EmbeddingUnavailable(StoreUnavailable):
    """The provider failed or did not answer; writes keep their rows, marked pending."""

    def __init__(self, reason: str) -> None:
        super().__init__(NAME, reason)


class Embedder(Protocol):
    """Turns texts into unit-length vectors of `dimension` floats, one per text, in order."""

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Raises `EmbeddingUnavailable` when the provider cannot answer."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class EmbedderOptions:
    """Which provider embeds, with what model, and how hard it may be pushed."""

    provider: Provider = "local"
    model: str = DEFAULT_MODEL
    dimension: int = DEFAULT_DIMENSION
    batch_size: int = 32
    # `openai` only: the server, its key, and how long and how often to try.
    base_url: str = "http://127.0.0.1:8080/v1"
    api_key: str = ""
    timeout: float = 10.0
    max_retries: int = 3
    backoff: float = 0.5
    # `local` only: ONNX Runtime threads for one batch (0: one per core).
    threads: int = 0

    def __post_init__(self) -> None:
        if self.provider not in ("local", "openai"):
            raise ValueError(f"unknown embedding provider {self.provider!r}; use local or openai")
        if not 1 <= self.dimension <= MAX_DIMENSION:
            raise ValueError(f"dimension must be 1 to {MAX_DIMENSION}, got {self.dimension}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.timeout <= 0 or self.backoff < 0 or self.max_retries < 0 or self.threads < 0:
            raise ValueError("timeout must be positive; backoff, max_retries, threads 0 or more")
        if not self.model.strip():
            raise ValueError("model must be named")


def check_vector(vector: Sequence[float], dimension: int, *, field: str) -> Vector:
    """A client's own vector: the right length and finite, else InvalidInput naming both."""
    if len(vector) != dimension:
        raise InvalidInput(
            field,
            f"has {len(vector)} dimensions; this gateway's embeddings have {dimension} "
            f"(expected {dimension}, got {len(vector)})",
        )
    values = [float(x) for x in vector]
    if not all(math.isfinite(x) for x in values):
        raise InvalidInput(field, "must hold finite numbers only")
    if not any(values):
        raise InvalidInput(field, "must not be all zeros: cosine distance needs a direction")
    return values
