"""Demo knowledge items and agent memories, embedded with the configured model.

Items are written from a fixed structure, a subject (what part of the platform)
crossed with an aspect (incident, runbook, design, benchmark), so the data
labels itself: `labelled_queries` asks, in other words than the items use,
for one subject and aspect, and knows which items answer it. The benchmark
scores KEYWORD, SEMANTIC and HYBRID search against those labels.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from stores.embeddings import Embedder
from stores.postgres.records import WriteContext
from stores.search import KnowledgeInput, MemoryInput, SearchStore
from stores.search.records import embedding_text

Progress = Callable[[str, int, int], None]

# subject: (what it is, in the items' words; how a person asks about it, in other words)
SUBJECTS: dict[str, tuple[str, str]] = {
    "rate limiter": (
        "token bucket that caps requests per API key",
        "throttling clients who call too often",
    ),
    "session cache": (
        "Redis store of signed-in sessions with sliding expiry",
        "keeping users logged in",
    ),
    "search ranking": ("order of results for knowledge queries", "which documents show up first"),
    "retry policy": (
        "exponential backoff for failed calls",
        "trying a request again after an error",
    ),
    "task scheduler": ("assignment of pending tasks to idle agents", "handing work out to workers"),
    "embedding job": (
        "background computation of sentence vectors",
        "turning text into numbers for similarity",
    ),
    "audit export": (
        "nightly dump of the audit log to cold storage",
        "keeping a record of who changed what",
    ),
    "login flow": ("API key exchange for a bearer session token", "how people sign in"),
    "graph projection": (
        "outbox rows applied to Neo4j with MERGE",
        "copying relationships into the graph database",
    ),
    "metrics rollup": (
        "hourly aggregates of agent telemetry",
        "summarising measurements over time",
    ),
    "health checks": (
        "probes of each store with a three-tier status",
        "knowing whether the system is up",
    ),
    "pagination": ("keyset cursors for Relay connections", "fetching long lists page by page"),
    "error masking": (
        "hiding internal exceptions behind a request id",
        "not leaking stack traces to users",
    ),
    "schema export": (
        "SDL written to schema.graphql and checked in CI",
        "keeping the API contract in the repository",
    ),
}

# aspect: (title prefix, content template, question template)
ASPECTS: dict[str, tuple[str, str, str]] = {
    "incident": (
        "Incident:",
        "Postmortem for the {subject}, the {what}. It broke during a deploy and paged the "
        "on-call engineer; root cause and timeline follow.",
        "what went wrong last time with {ask}",
    ),
    "runbook": (
        "Runbook:",
        "Operating the {subject}, the {what}: the steps to restart it, the alerts to watch "
        "and the commands an operator runs.",
        "step by step instructions for operating {ask}",
    ),
    "design": (
        "Design:",
        "Architecture of the {subject}, the {what}: the trade-offs considered, the "
        "alternatives rejected and the reasons.",
        "why was {ask} built the way it is",
    ),
    "benchmark": (
        "Benchmark:",
        "Throughput and latency of the {subject}, the {what}, measured under load with "
        "percentiles and a comparison to the previous release.",
        "how fast is {ask} under heavy traffic",
    ),
}
SOURCES = ("wiki", "postmortem", "runbook", "design-doc", "benchmark-report")
MEMORY_TEMPLATES = (
    ("episodic", "I worked on the {subject} today and saw {what}."),
    ("semantic", "The {subject} is the {what}."),
    ("procedural", "To change the {subject}, first read its runbook, then ask a reviewer."),
)


@dataclass(frozen=True, slots=True)
class DemoItem:
    id: UUID
    subject: str
    aspect: str
    data: KnowledgeInput


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    """A query and the grade of each item that answers it: 2 for its subject and
    aspect, 1 for its subject alone (everything else is 0). `style` is `question`
    (in the asker's words) or `terms` (in the items' own words)."""

    text: str
    subject: str
    aspect: str
    style: str


def generate_items(
    rng: random.Random, count: int, agent_ids: Sequence[UUID] = ()
) -> list[DemoItem]:
    """`count` items cycling through every subject and aspect, varied by repository,
    version and discovering agent."""
    pairs = [(s, a) for s in SUBJECTS for a in ASPECTS]
    items: list[DemoItem] = []
    for index in range(count):
        subject, aspect = pairs[index % len(pairs)]
        what, _ = SUBJECTS[subject]
        prefix, template, _ = ASPECTS[aspect]
        release = f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}"
        items.append(
            DemoItem(
                id=uuid.UUID(int=rng.getrandbits(128), version=4),
                subject=subject,
                aspect=aspect,
                data=KnowledgeInput(
                    title=f"{prefix} {subject} ({release})",
                    content=template.format(subject=subject, what=what)
                    + f" Noted in release {release}. {_context(rng)}",
                    source=SOURCES[index % len(SOURCES)],
                    tags=(aspect, subject.replace(" ", "-")),
                    agent_id=rng.choice(agent_ids) if agent_ids else None,
                ),
            )
        )
    return items


_PEOPLE = (
    "the on-call engineer",
    "a reviewer",
    "the platform team",
    "an orchestrator agent",
    "a planner agent",
    "the data team",
    "a new hire",
    "the security team",
)
_PLACES = (
    "in staging",
    "in production",
    "in the EU region",
    "in the US region",
    "during the migration",
    "after the upgrade",
    "at peak traffic",
    "overnight",
)
_ACTIONS = (
    "added a dashboard",
    "wrote a follow-up ticket",
    "changed a default",
    "opened a pull request",
    "asked for a review",
    "updated the docs",
    "raised an alert threshold",
    "scheduled a load test",
    "rolled back a change",
)
_DETAILS = (
    "latency",
    "memory",
    "disk usage",
    "error budget",
    "queue depth",
    "cache hits",
    "connection pool",
    "CPU steal",
    "replica lag",
    "timeouts",
)


def _context(rng: random.Random) -> str:
    """A sentence of circumstance, so no two items read the same."""
    return (
        f"{rng.choice(_PEOPLE).capitalize()} {rng.choice(_ACTIONS)} {rng.choice(_PLACES)} "
        f"after watching {rng.choice(_DETAILS)} and {rng.choice(_DETAILS)}."
    )


def labelled_queries() -> list[LabelledQuery]:
    """Two queries per subject and aspect (112): a question in the asker's words,
    and the terms an item would use."""
    questions = [
        LabelledQuery(ASPECTS[aspect][2].format(ask=ask), subject, aspect, "question")
        for subject, (_, ask) in SUBJECTS.items()
        for aspect in ASPECTS
    ]
    terms = [
        LabelledQuery(f"{aspect} {subject}", subject, aspect, "terms")
        for subject in SUBJECTS
        for aspect in ASPECTS
    ]
    return questions + terms


def grade(query: LabelledQuery, item: DemoItem) -> int:
    if item.subject != query.subject:
        return 0
    return 2 if item.aspect == query.aspect else 1


@dataclass(frozen=True)
class KnowledgeSeedReport:
    items: int
    memories: int
    seconds: float


async def seed_knowledge(
    search: SearchStore,
    embedder: Embedder,
    agent_ids: Sequence[UUID],
    *,
    items: int = 560,
    memories_per_agent: int = 2,
    seed_value: int = 42,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> KnowledgeSeedReport:
    """Insert demo items and memories with their embeddings, in batches of one statement
    each. Items get their outbox rows, so Neo4j shows them once a projector runs."""
    report = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    rng = random.Random(seed_value)
    demo = generate_items(rng, items, agent_ids)
    await load_items(search, embedder, demo, batch_size=batch_size, progress=report)
    memories = [
        MemoryInput(
            agent_id=agent_id,
            content=template.format(subject=subject, what=SUBJECTS[subject][0]),
            kind=kind,
            importance=round(rng.uniform(0.1, 1.0), 2),
            context={"seeded": True},
        )
        for agent_id in agent_ids
        for kind, template in rng.sample(MEMORY_TEMPLATES, min(memories_per_agent, 3))
        for subject in [rng.choice(list(SUBJECTS))]
    ]
    ctx = WriteContext(actor_id=None, request_id="seed")
    for start in range(0, len(memories), batch_size):
        batch = memories[start : start + batch_size]
        vectors = await embedder.embed([m.content for m in batch])
        for memory, vector in zip(batch, vectors, strict=True):
            await search.memories.remember(ctx, memory, vector)
        report("memories", min(start + batch_size, len(memories)), len(memories))
    return KnowledgeSeedReport(len(demo), len(memories), time.perf_counter() - started)


async def load_items(
    search: SearchStore,
    embedder: Embedder,
    items: Sequence[DemoItem],
    *,
    batch_size: int = 64,
    vectors: Sequence[Sequence[float]] | None = None,
    progress: Progress | None = None,
) -> None:
    """Embed (unless `vectors` are given) and insert `items`, one statement per batch."""
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        if vectors is not None:
            embedded = [list(v) for v in vectors[start : start + batch_size]]
        else:
            embedded = await embedder.embed(
                [embedding_text(i.data.title, i.data.content) for i in batch]
            )
        await search.knowledge.bulk_insert(
            [(i.id, i.data, v) for i, v in zip(batch, embedded, strict=True)]
        )
        if progress:
            progress("knowledge items", min(start + batch_size, len(items)), len(items))
