"""Generated knowledge items, their embeddings cached on disk, and their bulk load.

Shared by the search bench (`bench.search`) and the bench dataset (`bench.dataset`),
so both use the same items and the same cache: an item is embedded once, ever.
Items come from `seeding.knowledge.generate_items` with one seed, so the first
N items of a larger run are the N items of a smaller one, and a cache of any size
serves every other size (the first rows of a larger one, or a smaller one as the
prefix with only the rest embedded). Vectors live under var/cache/bench-search/ as
`{model}-{items}-{seed}.npy`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.local.profiles import REPO_ROOT
from seeding.knowledge import DemoItem, generate_items
from stores.embeddings import Embedder
from stores.search import EmbeddingSpace, SearchStore, ensure_space
from stores.search.records import embedding_text

CACHE_DIR = REPO_ROOT / "var" / "cache" / "bench-search"
# The search bench's seed since its first run: its caches were made with it.
SEED = 7
EMBED_BATCH = 1024
INSERT_BATCH = 2000
INDEX_TIMEOUT = 3600.0  # seconds

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Corpus:
    """Items and their vectors, row i for item i; `embedding` says where they came from."""

    items: list[DemoItem]
    vectors: np.ndarray
    embedding: dict[str, Any] = field(default_factory=dict)


def cache_path(model: str, items: int, seed: int, directory: Path = CACHE_DIR) -> Path:
    return directory / f"{model}-{items}-{seed}.npy"


def _cached_sizes(path: Path) -> dict[int, Path]:
    """Every cache beside `path` with the same model and seed, by item count."""
    head, _, seed = path.stem.rpartition("-")
    model = head.rpartition("-")[0]
    sizes: dict[int, Path] = {}
    for candidate in path.parent.glob(f"{model}-*-{seed}.npy"):
        count = candidate.stem.removeprefix(f"{model}-").removesuffix(f"-{seed}")
        if count.isdigit():
            sizes[int(count)] = candidate
    return sizes


def _read(path: Path, rows: int | None = None) -> np.ndarray:
    # Mapped, then copied: the first rows of a 150 MB cache without reading all of it.
    mapped = np.load(path, mmap_mode="r")
    return np.array(mapped if rows is None else mapped[:rows], dtype=np.float32)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


async def corpus(
    embedder: Embedder,
    count: int,
    *,
    seed: int = SEED,
    directory: Path = CACHE_DIR,
    progress: Progress | None = None,
) -> Corpus:
    """`count` generated items with their vectors: from the cache when a cache of this
    size or larger exists; otherwise a smaller cache's vectors and the rest embedded
    (`progress("knowledge vectors", done, total)`), the result cached for next time."""
    items = generate_items(random.Random(seed), count)
    path = cache_path(embedder.model, count, seed, directory)
    sizes = _cached_sizes(path)
    larger = min((n for n in sizes if n >= count), default=None)
    if larger is not None:
        vectors = await asyncio.to_thread(_read, sizes[larger], count)
        return Corpus(items, vectors, {"cached": True, "cache_items": larger})
    smaller = max(sizes, default=None)
    prefix = None if smaller is None else await asyncio.to_thread(_read, sizes[smaller])
    reused = 0 if prefix is None else prefix.shape[0]
    texts = [embedding_text(i.data.title, i.data.content) for i in items[reused:]]
    started = time.perf_counter()
    chunks: list[list[list[float]]] = []
    done = 0
    for start in range(0, len(texts), EMBED_BATCH):
        chunks.append(await embedder.embed(texts[start : start + EMBED_BATCH]))
        done += len(chunks[-1])
        if progress:
            progress("knowledge vectors", done, len(texts))
    seconds = time.perf_counter() - started
    array = np.asarray([v for chunk in chunks for v in chunk], dtype=np.float32)
    if prefix is not None:
        array = np.concatenate([prefix, array])
    await asyncio.to_thread(_write, path, array)
    return Corpus(
        items,
        array,
        {
            "cached": False,
            "reused_from_cache": reused,
            "sentences": len(texts),
            "seconds": round(seconds, 1),
            "sentences_per_s": round(len(texts) / seconds, 1) if seconds > 0 else 0.0,
        },
    )


async def load(
    search: SearchStore,
    space: EmbeddingSpace,
    items: Sequence[DemoItem],
    vectors: np.ndarray,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Insert `items` (existing ids are skipped, so a load cut short can run again) and
    build the HNSW index afterwards; `progress` sees "knowledge items" and
    "knowledge HNSW index". Returns the row count and the seconds of each step."""
    report = progress or (lambda stage, done, total: None)
    await ensure_space(search, space)
    postgres = search.postgres
    options = search.options
    async with postgres.connection() as conn:
        # Dropped for the load and built after it: far faster than growing the graph
        # row by row. Any items already there are indexed again by the build.
        await conn.execute("DROP INDEX IF EXISTS knowledge_items_embedding")
    started = time.perf_counter()
    for start in range(0, len(items), INSERT_BATCH):
        batch = items[start : start + INSERT_BATCH]
        rows = vectors[start : start + len(batch)].tolist()
        # Not projected: the bench gateway would spend its measured runs on the outbox.
        await search.knowledge.bulk_insert(
            [(item.id, item.data, row) for item, row in zip(batch, rows, strict=True)],
            project=False,
        )
        report("knowledge items", start + len(batch), len(items))
    loaded = time.perf_counter() - started
    report("knowledge HNSW index", 0, len(items))
    started = time.perf_counter()
    async with postgres.connection() as conn:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        # Minutes at 100,000 items on a small machine: past the store's statement
        # timeout, which is for requests, not for an index build.
        await conn.execute("SET statement_timeout = 0")
        await conn.execute(
            "CREATE INDEX knowledge_items_embedding ON knowledge_items"
            " USING hnsw (embedding vector_cosine_ops)"
            f" WITH (m = {int(options.m)}, ef_construction = {int(options.ef_construction)})",
            timeout=INDEX_TIMEOUT,
        )
        await conn.execute("ANALYZE knowledge_items", timeout=INDEX_TIMEOUT)
        await conn.execute("RESET statement_timeout")
        await conn.execute("RESET maintenance_work_mem")
    built = time.perf_counter() - started
    report("knowledge HNSW index", len(items), len(items))
    return {
        "rows_loaded": len(items),
        "load_seconds": round(loaded, 1),
        "index_build_seconds": round(built, 1),
    }
