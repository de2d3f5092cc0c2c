"""Embedding providers: text in, unit vectors out. They know nothing of GraphQL."""

from __future__ import annotations

from stores.embeddings.base import (
    DEFAULT_DIMENSION,
    DEFAULT_MODEL,
    Embedder,
    EmbedderOptions,
    EmbeddingUnavailable,
    Vector,
    check_vector,
)
from stores.embeddings.local import LocalEmbedder
from stores.embeddings.openai_compatible import OpenAIEmbedder


def create_embedder(options: EmbedderOptions) -> Embedder:
    """The provider `options` names."""
    if options.provider == "openai":
        return OpenAIEmbedder(options)
    return LocalEmbedder(options)


__all__ = [
    "DEFAULT_DIMENSION",
    "DEFAULT_MODEL",
    "Embedder",
    "EmbedderOptions",
    "EmbeddingUnavailable",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "Vector",
    "check_vector",
    "create_embedder",
]
