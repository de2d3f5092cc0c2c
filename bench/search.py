"""Search benchmark: HNSW recall, searchKnowledge latency over HTTP, embedding
throughput, and nDCG@10 of KEYWORD, SEMANTIC and HYBRID on labelled demo data.

    python -m bench.search [--items N] [--queries Q] [--profile bench|test|dev]
                           [--only STAGE ...] [--merge-latest | --merge-only]

It runs against its own database (`polygraph_bench_search`, recreated) on the
profile's PostgreSQL, and a gateway it serves in-process on a free port.
Vectors of the generated items are cached under var/cache/bench-search/
(`bench.knowledge_vectors`, shared with the bench dataset), so a second run at
the same or a smaller size skips the embedding. Timings are reported, never
asserted. Results go to bench/results/search.{json,md}; `--merge-latest` also
puts them into latest.{json,md} beside the scenario results already there, and
`--merge-only` does just that with the search.json of an earlier run.
`--only relevance` (or any of the stages `relevance`, `write`, `recall`,
`latency`; the last two load the items first) measures just those and prints
them, writing nothing: a quick look while working on ranking. `run_search_bench`
is what the bench harness (`polygraph bench`) calls as its last stage.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shlex
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import uvicorn

from bench import knowledge_vectors
from bench.stats import percentile
from gateway.app import create_app
from gateway.settings import Settings
from infra.local import stack
from infra.local.profiles import REPO_ROOT, Profile, get_profile
from seeding.knowledge import (
    DemoItem,
    LabelledQuery,
    generate_items,
    grade,
    labelled_queries,
)
from stores import PostgresOptions, PostgresStore
from stores.embeddings import Embedder, LocalEmbedder
from stores.postgres import bulk
from stores.postgres.records import Task
from stores.search import EmbeddingSpace, SearchStore
from stores.search.records import embedding_text

DATABASE = "polygraph_bench_search"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEMO_ITEMS = 560
STAGES = ("relevance", "write", "recall", "latency")
# Sentences embedded afresh to time the model when the corpus's vectors are cached.
THROUGHPUT_SAMPLE = 1024
VECTOR_PASSES = 3
WRITE_SAMPLES = 100
TEXT_SAMPLES = 100

SEARCH = """query($q: String, $v: [Float!], $mode: SearchMode, $first: Int) {
  searchKnowledge(query: $q, vector: $v, mode: $mode, first: $first) {
    edges { score node { id } }
  }
}"""
SEARCH_TASKS = """query($q: String, $mode: SearchMode, $first: Int) {
  searchTasks(query: $q, mode: $mode, first: $first) { edges { node { id } } }
}"""
CREATE = """mutation($input: CreateKnowledgeInput!) {
  createKnowledge(input: $input) { knowledge { id } userErrors { code } }
}"""


@dataclass(frozen=True)
class SearchBenchOptions:
    items: int = 100_000
    queries: int = 200
    profile: str = "bench"
    seed: int = knowledge_vectors.SEED
    write_samples: int = WRITE_SAMPLES
    text_samples: int = TEXT_SAMPLES
    demo_items: int = DEMO_ITEMS
    database: str = DATABASE
    command: str = ""
    stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        if self.items < 100 or self.queries < 1:
            raise ValueError("items must be at least 100 and queries at least 1")
        if not self.stages or not set(self.stages) <= set(STAGES):
            raise ValueError(f"stages must be some of {', '.join(STAGES)}")
        if self.write_samples < 1 or self.text_samples < 1 or self.demo_items < 1:
            raise ValueError("write and text samples and demo items must be at least 1")

    @classmethod
    def quick_mode(cls, **overrides: Any) -> SearchBenchOptions:
        """A few seconds: enough to prove every measurement runs, not to read its figures."""
        values: dict[str, Any] = {
            "items": 300, "queries": 20, "write_samples": 10, "text_samples": 10,
            "demo_items": 112, "database": f"{DATABASE}_quick",
        }  # fmt: skip
        values.update(overrides)
        return cls(**values)


def run_search_bench(
    options: SearchBenchOptions,
    results_dir: Path = RESULTS_DIR,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the measurements; return the results and, when every stage ran, write them
    to `search.{json,md}` in results_dir. Whatever part of the stack this had to start
    is stopped at the end."""
    profile = get_profile(options.profile)
    password = Settings().neo4j_password.get_secret_value()
    with stack.running(profile, neo4j_password=password, say=say):
        return _measure(options, profile, results_dir, say)


def _measure(
    options: SearchBenchOptions,
    profile: Profile,
    results_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    asyncio.run(_recreate_database(profile, options.database))
    settings = Settings(
        profile=options.profile if options.profile in ("dev", "test") else "dev",
        postgres_dsn=profile.postgres_dsn(options.database),
        neo4j_uri=profile.bolt_uri,
        redis_url=profile.redis_url(0),
        embedding_filler_enabled=False,
        events_namespace="polygraph-bench-search",
        # One client measuring latency, hundreds of requests a second: no quota applies
        # (A1 measures the rate limits).
        rate_limit_enabled=False,
    )
    embedder = LocalEmbedder()
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": options.command or _command(options),
        "items": options.items,
        "queries": options.queries,
        "model": embedder.model,
        "dimension": embedder.dimension,
        "hnsw": {
            "m": settings.hnsw_m,
            "ef_construction": settings.hnsw_ef_construction,
            "ef_search": settings.hnsw_ef_search,
        },
    }
    stages: dict[str, float] = {}
    results["stage_seconds"] = stages

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        say(f"search: {name}")
        started = time.perf_counter()
        yield
        stages[name] = round(time.perf_counter() - started, 1)
        say(f"search: {name} took {stages[name]} s")

    selected = options.stages
    try:
        with _serve(settings, embedder) as (url, key):
            if "relevance" in selected:
                with stage("relevance"):
                    results["relevance"] = asyncio.run(
                        _relevance(settings, embedder, url, key, options.demo_items)
                    )
            if "write" in selected:
                with stage("write"):
                    results["write"] = _write_throughput(url, key, options)
            if {"recall", "latency"} & set(selected):
                with stage("load"):
                    load = asyncio.run(_load_items(settings, embedder, options))
                results["embedding"] = load.pop("embedding")
                results["index"] = load
            if "recall" in selected:
                with stage("recall"):
                    results["recall"] = asyncio.run(_recall(settings, embedder, options))
            if "latency" in selected:
                with stage("latency"), _serve(_TextVectors.like(settings), embedder) as text:
                    results["latency"] = _latency(url, text[0], key, embedder, options)
    finally:
        asyncio.run(embedder.aclose())
    if set(selected) == set(STAGES):
        write(results, results_dir)
    return results


def _command(options: SearchBenchOptions) -> str:
    argv = ["python", "-m", "bench.search", f"--items={options.items}"]
    argv += [f"--queries={options.queries}", f"--profile={options.profile}"]
    argv += [f"--seed={options.seed}"]
    if set(options.stages) != set(STAGES):
        argv += ["--only", *options.stages]
    return " ".join(shlex.quote(a) for a in argv)


async def _recreate_database(profile: Profile, database: str) -> None:
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


class _TextVectors(Settings):
    """The same gateway, sending vectors in pgvector's text form as before its binary
    codec: served beside the other so both are timed in the same run."""

    @classmethod
    def like(cls, settings: Settings) -> _TextVectors:
        return cls(**{name: getattr(settings, name) for name in Settings.model_fields})

    def postgres_options(self) -> PostgresOptions:
        return replace(super().postgres_options(), vector_format="text")


@contextmanager
def _serve(settings: Settings, embedder: Embedder) -> Iterator[tuple[str, str]]:
    """The gateway on a free loopback port, in a thread; yields its URL and an API key."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings, embedder=embedder),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/graphql", asyncio.run(_api_key(settings))
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def _api_key(settings: Settings) -> str:
    async with PostgresStore(settings.postgres_options()) as postgres:
        user = await postgres.users.create_user(
            email=f"bench-{time.time_ns()}@polygraph.local", role="operator"
        )
        _, key = await postgres.users.create_api_key(user.id, name="search bench")
    return key


def _post(client: httpx.Client, url: str, query: str, variables: dict[str, Any]) -> Any:
    response = client.post(url, content=orjson.dumps({"query": query, "variables": variables}))
    body = orjson.loads(response.content)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def _client(key: str) -> httpx.Client:
    return httpx.Client(headers={"x-api-key": key, "content-type": "application/json"}, timeout=60)


async def _relevance(
    settings: Settings, embedder: Embedder, url: str, key: str, demo_items: int
) -> dict[str, Any]:
    """nDCG@10 per mode over the labelled queries, on the demo data alone: as knowledge
    items (`searchKnowledge`), and the same texts as tasks (`searchTasks`: title and
    description), so the two rankings can be compared."""
    demo = generate_items(random.Random(42), demo_items)
    async with PostgresStore(settings.postgres_options()) as postgres:
        search = SearchStore(postgres, settings.search_options())
        texts = [embedding_text(i.data.title, i.data.content) for i in demo]
        vectors = await embedder.embed(texts)
        # Searches read PostgreSQL alone; no graph needed (neither writes an outbox row).
        await search.knowledge.bulk_insert(
            [(i.id, i.data, v) for i, v in zip(demo, vectors, strict=True)], project=False
        )
        await bulk.copy_tasks(postgres, [_demo_task(item) for item in demo])
        await search.tasks.fill(
            [(i.id, text, v) for i, text, v in zip(demo, texts, vectors, strict=True)]
        )
    by_id = {str(i.id): i for i in demo}
    queries = labelled_queries()
    with _client(key) as client:
        knowledge = _ndcg_by_mode(client, url, SEARCH, "searchKnowledge", queries, by_id)
        tasks = _ndcg_by_mode(client, url, SEARCH_TASKS, "searchTasks", queries, by_id)
    return {
        "items": len(demo),
        "queries": len(queries),
        "ndcg_at_10": knowledge,
        "tasks_ndcg_at_10": tasks,
        "examples": {q.style: q.text for q in queries},
        "semantic_weight": settings.search_semantic_weight,
    }


_MODES = ("KEYWORD", "SEMANTIC", "HYBRID")


def _ndcg_by_mode(
    client: httpx.Client,
    url: str,
    document: str,
    field: str,
    queries: Sequence[LabelledQuery],
    by_id: dict[str, DemoItem],
) -> dict[str, dict[str, float]]:
    demo = list(by_id.values())
    scores: dict[tuple[str, str], list[float]] = {}
    for query in queries:
        for mode in _MODES:
            found = _post(client, url, document, {"q": query.text, "mode": mode, "first": 10})
            ids = [_node_uuid(e["node"]["id"]) for e in found[field]["edges"]]
            ndcg = _ndcg(query, [by_id[i] for i in ids if i in by_id], demo)
            scores.setdefault((query.style, mode), []).append(ndcg)
            scores.setdefault(("all", mode), []).append(ndcg)
    return {
        style: {mode: round(statistics.fmean(scores[(style, mode)]), 4) for mode in _MODES}
        for style in ("all", "question", "terms")
    }


def _demo_task(item: DemoItem) -> Task:
    """A demo item as an open task: its title, and its content as the description."""
    now = datetime.now(UTC)
    return Task(
        id=item.id,
        title=item.data.title[:200],
        description=item.data.content,
        repository=None,
        type="generic",
        payload={},
        priority=5,
        status="pending",
        assignee_id=None,
        creator_id=None,
        workflow_id=None,
        deadline=None,
        started_at=None,
        completed_at=None,
        result=None,
        error_message=None,
        retry_count=0,
        max_retries=3,
        created_at=now,
        updated_at=now,
        version=1,
    )


def _node_uuid(global_id: str) -> str:
    import base64

    return base64.b64decode(global_id).decode().split(":", 1)[1]


def _ndcg(query: LabelledQuery, ranked: Sequence[DemoItem], corpus: Sequence[DemoItem]) -> float:
    def dcg(grades: Sequence[int]) -> float:
        return float(sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(grades[:10])))

    ideal = dcg(sorted((grade(query, item) for item in corpus), reverse=True))
    return dcg([grade(query, item) for item in ranked]) / ideal if ideal else 0.0


def _write_throughput(url: str, key: str, options: SearchBenchOptions) -> dict[str, Any]:
    """createKnowledge over HTTP, one at a time, embedding included."""
    items = generate_items(random.Random(options.seed + 1), options.write_samples)
    latencies: list[float] = []
    with _client(key) as client:
        for item in items:
            started = time.perf_counter()
            _post(
                client,
                url,
                CREATE,
                {"input": {"title": item.data.title, "content": item.data.content,
                           "tags": ["bench-write"], "waitForProjection": False}},
            )  # fmt: skip
            latencies.append(time.perf_counter() - started)
    return {
        "writes": len(latencies),
        "writes_per_s": round(len(latencies) / sum(latencies), 1),
        **_percentiles(latencies),
    }


async def _load_items(
    settings: Settings, embedder: Embedder, options: SearchBenchOptions
) -> dict[str, Any]:
    started = time.perf_counter()

    def embedded(stage: str, done: int, total: int) -> None:
        rate = done / (time.perf_counter() - started)
        print(f"  embedded {done:,}/{total:,} ({rate:,.0f} sentences/s)", flush=True)

    found = await knowledge_vectors.corpus(
        embedder, options.items, seed=options.seed, progress=embedded
    )
    embedding = found.embedding
    if embedding.get("cached"):
        # Every vector came from the cache: time a sample embedded afresh instead.
        texts = [
            embedding_text(item.data.title, item.data.content)
            for item in found.items[:THROUGHPUT_SAMPLE]
        ]
        started = time.perf_counter()
        await embedder.embed(texts)
        seconds = time.perf_counter() - started
        embedding = {
            **embedding,
            "sentences": len(texts),
            "seconds": round(seconds, 1),
            "sentences_per_s": round(len(texts) / seconds, 1) if seconds > 0 else 0.0,
        }
    async with PostgresStore(settings.postgres_options()) as postgres:
        search = SearchStore(postgres, settings.search_options())
        space = EmbeddingSpace(embedder.model, embedder.dimension)
        index = await knowledge_vectors.load(search, space, found.items, found.vectors)
    return {"embedding": embedding, **index}


async def _query_vectors(embedder: Embedder, options: SearchBenchOptions) -> list[list[float]]:
    """Held-out items (another seed), embedded: queries near the data but not in it."""
    held_out = generate_items(random.Random(options.seed + 1000), options.queries)
    return await embedder.embed([embedding_text(i.data.title, i.data.content) for i in held_out])


async def _recall(
    settings: Settings, embedder: Embedder, options: SearchBenchOptions
) -> dict[str, Any]:
    queries = await _query_vectors(embedder, options)
    ef_search = settings.hnsw_ef_search
    recalls: list[float] = []
    hnsw_s: list[float] = []
    exact_s: list[float] = []
    sql = "SELECT id FROM knowledge_items ORDER BY embedding <=> $1::vector LIMIT 10"
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        postgres.connection() as conn,
    ):
        for vector in queries:
            async with conn.transaction():
                await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(ef_search))
                started = time.perf_counter()
                approximate = {r["id"] for r in await conn.fetch(sql, vector)}
                hnsw_s.append(time.perf_counter() - started)
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off")
                started = time.perf_counter()
                exact = {r["id"] for r in await conn.fetch(sql, vector)}
                exact_s.append(time.perf_counter() - started)
            recalls.append(len(approximate & exact) / len(exact))
    return {
        "recall_at_10": round(statistics.fmean(recalls), 4),
        "min_recall_at_10": round(min(recalls), 2),
        # The tail the mean hides: queries HNSW mostly missed (see profile_notes.md).
        "queries_below_0_8": sum(1 for r in recalls if r < 0.8),
        "queries": len(recalls),
        "ef_search": ef_search,
        "hnsw_sql": _percentiles(hnsw_s),
        "exact_sql": _percentiles(exact_s),
    }


def _latency(
    url: str, text_vectors_url: str, key: str, embedder: Embedder, options: SearchBenchOptions
) -> dict[str, Any]:
    """`url` sends vectors in binary, `text_vectors_url` (the same gateway otherwise) as
    text; the supplied-vector requests alternate between them, in alternating order."""
    vectors = asyncio.run(_query_vectors(embedder, options))
    texts = [q.text for q in labelled_queries()]
    with _client(key) as client:
        for vector in vectors[:10]:  # warm-up
            for target in (url, text_vectors_url):
                _post(client, target, SEARCH, {"v": vector, "mode": "SEMANTIC", "first": 10})
        with_vector: dict[str, list[float]] = {url: [], text_vectors_url: []}
        # Several passes: enough samples per side for a p99 to compare.
        for index, vector in enumerate(vectors * VECTOR_PASSES):
            for target in (url, text_vectors_url)[:: 1 if index % 2 else -1]:
                started = time.perf_counter()
                _post(client, target, SEARCH, {"v": vector, "mode": "SEMANTIC", "first": 10})
                with_vector[target].append(time.perf_counter() - started)
        with_text: dict[str, list[float]] = {"SEMANTIC": [], "KEYWORD": [], "HYBRID": []}
        for index in range(options.text_samples):
            for mode, samples in with_text.items():
                # A fresh text every time: a request embeds its query, nothing is reused.
                text = f"{texts[index % len(texts)]} ({index})"
                started = time.perf_counter()
                _post(client, url, SEARCH, {"q": text, "mode": mode, "first": 10})
                samples.append(time.perf_counter() - started)
    return {
        "vector_semantic": _percentiles(with_vector[url]),
        "vector_semantic_as_text": _percentiles(with_vector[text_vectors_url]),
        "text_semantic": _percentiles(with_text["SEMANTIC"]),
        "text_keyword": _percentiles(with_text["KEYWORD"]),
        "text_hybrid": _percentiles(with_text["HYBRID"]),
    }


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    def at(fraction: float) -> float:
        return round(percentile(samples, fraction) * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "n": len(samples)}


def write(results: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "search.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    (directory / "search.md").write_text(markdown(results))
    return path


def markdown(results: dict[str, Any]) -> str:
    """search.md: the search results on their own."""
    return "\n".join(["# Search benchmark", "", *section(results, heading="##")])


def section(results: dict[str, Any], heading: str = "###") -> list[str]:
    """The search results as Markdown lines, headings at the given level (also in
    latest.md); parts a run left out (`--only`) are left out here too."""
    hnsw = results["hnsw"]
    lines = [
        f"{results['generated_at']}: {results['items']:,} knowledge items, "
        f"{results['queries']} queries, {results['model']} ({results['dimension']} dims), "
        f"HNSW m={hnsw['m']}, ef_construction={hnsw['ef_construction']}, "
        f"ef_search={hnsw['ef_search']}."
        + (f" Command: `{results['command']}`." if results.get("command") else ""),
        "",
    ]
    if "recall" in results:
        lines += _recall_section(results, heading)
    if "latency" in results:
        lines += _latency_section(results["latency"], heading)
    if "embedding" in results or "write" in results:
        lines += _throughput_section(results, heading)
    if "relevance" in results:
        lines += _relevance_section(results["relevance"], heading)
    if results.get("stage_seconds"):
        stages = ", ".join(f"{k} {v} s" for k, v in results["stage_seconds"].items())
        lines += [f"Time per stage: {stages}.", ""]
    return lines


def _recall_section(results: dict[str, Any], heading: str) -> list[str]:
    recall, index = results["recall"], results["index"]
    # Results written before the tail was counted have no such key.
    below = recall.get("queries_below_0_8")
    tail = "" if below is None else f", {below} of {recall['queries']} below 0.8"
    return [
        f"{heading} Recall of HNSW against exact search",
        "",
        f"- recall@10: **{recall['recall_at_10']}** (lowest single query "
        f"{recall['min_recall_at_10']}{tail}; target >= 0.95)",
        f"- SQL time p50/p99: HNSW {recall['hnsw_sql']['p50_ms']}/"
        f"{recall['hnsw_sql']['p99_ms']} ms, exact {recall['exact_sql']['p50_ms']}/"
        f"{recall['exact_sql']['p99_ms']} ms",
        f"- load {index['rows_loaded']:,} rows in {index['load_seconds']} s, "
        f"HNSW build {index['index_build_seconds']} s",
        "",
    ]


_LATENCY_ROWS = (
    ("SEMANTIC, supplied vector", "vector_semantic"),
    ("SEMANTIC, supplied vector, sent to PostgreSQL as text", "vector_semantic_as_text"),
    ("SEMANTIC, text (embedding included)", "text_semantic"),
    ("KEYWORD, text", "text_keyword"),
    ("HYBRID, text (embedding included)", "text_hybrid"),
)


def _latency_section(latency: dict[str, Any], heading: str) -> list[str]:
    lines = [
        f"{heading} searchKnowledge over HTTP (one client, sequential)",
        "",
        "| request | p50 ms | p99 ms | n |",
        "|---|---|---|---|",
    ]
    for label, key in _LATENCY_ROWS:
        if key in latency:
            row = latency[key]
            lines.append(f"| {label} | {row['p50_ms']} | {row['p99_ms']} | {row['n']} |")
    if "vector_semantic_as_text" in latency:
        binary, text = latency["vector_semantic"], latency["vector_semantic_as_text"]
        lines += [
            "",
            "Vectors go to PostgreSQL in binary (pgvector's asyncpg codec); the second row is "
            "the same gateway sending them as text, as before, served beside it and "
            "alternated request by request. Binary/text: p50 "
            f"{_ratio(binary['p50_ms'], text['p50_ms'])}, p99 "
            f"{_ratio(binary['p99_ms'], text['p99_ms'])}.",
        ]
    return [*lines, ""]


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def _throughput_section(results: dict[str, Any], heading: str) -> list[str]:
    lines = [f"{heading} Embedding throughput", ""]
    if "embedding" in results:
        embedding = results["embedding"]
        if not embedding.get("cached"):
            throughput = (
                f"{embedding['sentences_per_s']:,} sentences/s ({embedding['sentences']:,} in "
                f"{embedding['seconds']} s"
                + (
                    f"; the first {embedding['reused_from_cache']:,} item vectors from a"
                    " smaller run's cache)"
                    if embedding.get("reused_from_cache")
                    else ")"
                )
            )
        elif "sentences_per_s" in embedding:
            throughput = (
                f"{embedding['sentences_per_s']:,} sentences/s (a sample of"
                f" {embedding['sentences']:,} in {embedding['seconds']} s, one batch; the"
                " corpus's vectors came from the cache)"
            )
        else:
            throughput = "vectors from the cache (run with a new --items to measure)"
        lines.append(f"- local model, batched: {throughput}")
    if "write" in results:
        write = results["write"]
        lines.append(
            f"- createKnowledge over HTTP, one at a time, embedding included: "
            f"{write['writes_per_s']} writes/s (p50 {write['p50_ms']} ms, "
            f"p99 {write['p99_ms']} ms)"
        )
    return [*lines, ""]


def _relevance_section(relevance: dict[str, Any], heading: str) -> list[str]:
    lines = [
        f"{heading} Relevance: nDCG@10 on the demo data ({relevance['items']} items, "
        f"{relevance['queries']} labelled queries)",
        "",
        "Each query asks for one subject and aspect of the demo data, either as a "
        "question in other words than the items use or in the items' own terms; items of "
        "that subject and aspect have grade 2, of that subject grade 1.",
        *_hybrid_formula(relevance),
        "",
        "| queries | KEYWORD | SEMANTIC | HYBRID |",
        "|---|---|---|---|",
    ]
    for style, label in (
        ("question", f'questions, e.g. "{relevance["examples"]["question"]}"'),
        ("terms", f'the items\' terms, e.g. "{relevance["examples"]["terms"]}"'),
        ("all", "all"),
    ):
        row = relevance["ndcg_at_10"][style]
        lines.append(f"| {label} | {row['KEYWORD']} | {row['SEMANTIC']} | {row['HYBRID']} |")
    tasks = relevance.get("tasks_ndcg_at_10")
    if tasks is None:  # results of a run before tasks were searchable
        return [*lines, ""]
    lines += [
        "",
        "The same texts as tasks (title, and the content as description), through `searchTasks`:",
        "",
        "| queries | KEYWORD | SEMANTIC | HYBRID |",
        "|---|---|---|---|",
    ]
    for style in ("question", "terms", "all"):
        row = tasks[style]
        lines.append(f"| {style} | {row['KEYWORD']} | {row['SEMANTIC']} | {row['HYBRID']} |")
    return [*lines, ""]


def _hybrid_formula(relevance: dict[str, Any]) -> list[str]:
    weight = relevance.get("semantic_weight")
    if weight is None:  # results of a run before HYBRID had a weight
        return []
    return [
        "",
        "KEYWORD ranks by the share of the query's terms an item holds; HYBRID scores the "
        f"candidates of both sides as {weight} x cosine similarity, plus {round(1 - weight, 4)} "
        "for holding every term (stores/search/ranking.py).",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--items", type=int, default=100_000, help="knowledge items to index")
    parser.add_argument("--queries", type=int, default=200, help="recall and latency queries")
    parser.add_argument("--profile", default="bench", choices=["bench", "test", "dev"])
    parser.add_argument("--seed", type=int, default=knowledge_vectors.SEED)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        metavar="STAGE",
        help=f"measure only these ({', '.join(STAGES)}); prints them, writes nothing",
    )
    merge = parser.add_mutually_exclusive_group()
    merge.add_argument(
        "--merge-latest",
        action="store_true",
        help="also put the results into latest.json and latest.md, keeping their scenarios",
    )
    merge.add_argument(
        "--merge-only",
        action="store_true",
        help="measure nothing: merge the existing search.json into latest.json and latest.md",
    )
    args = parser.parse_args(argv)
    stages = tuple(dict.fromkeys(args.only))
    complete = set(stages) == set(STAGES)
    if args.merge_latest and not complete:
        parser.error("--merge-latest needs every stage; a partial run writes nothing")
    from bench import report  # report renders this module's section: imported late

    if args.merge_only:
        results = orjson.loads((RESULTS_DIR / "search.json").read_bytes())
    else:
        results = run_search_bench(
            SearchBenchOptions(
                items=args.items,
                queries=args.queries,
                profile=args.profile,
                seed=args.seed,
                stages=stages,
            )
        )
        print(markdown(results))
        if complete:
            print(f"wrote {RESULTS_DIR / 'search.json'} and {RESULTS_DIR / 'search.md'}")
    if args.merge_only or args.merge_latest:
        path = report.merge_search(results, RESULTS_DIR)
        if path.name == "latest.json":
            print(f"merged into {path} and {path.with_name('latest.md')}")
        else:
            print(f"no {RESULTS_DIR / 'latest.json'} to merge into (run polygraph bench)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
