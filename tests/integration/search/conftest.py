"""A small fixed corpus, and embedders that fail on purpose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from stores.embeddings import EmbeddingUnavailable, LocalEmbedder, Vector
from tests.integration.api.conftest import (  # noqa: F401  (fixtures, re-exported)
    Caller,
    GraphQL,
    admin,
    data,
    gql,
    make_caller,
    operator,
    unique,
    viewer,
)

# (title, content, source): one topic each, worded so that keyword and semantic
# search disagree in known ways.
CORPUS: tuple[tuple[str, str, str], ...] = (
    (
        "Kubernetes liveness probes",
        "A pod whose liveness probe fails repeatedly is restarted by the kubelet.",
        "runbook",
    ),
    (
        "Rotating database credentials",
        "PostgreSQL passwords are rotated every ninety days through the secrets vault.",
        "runbook",
    ),
    (
        "Baking sourdough bread",
        "Feed the starter, let the dough rise overnight and bake it in a hot oven.",
        "notes",
    ),
    (
        "Quarterly sales report",
        "Revenue grew eight percent, driven by renewals in the enterprise segment.",
        "report",
    ),
    (
        "Retrying flaky network calls",
        "Use exponential backoff with jitter when an HTTP request times out.",
        "notes",
    ),
)

CREATE = """mutation($input: CreateKnowledgeInput!) {
  createKnowledge(input: $input) {
    knowledge { id title embeddingPending }
    userErrors { field message code }
    projected
  }
}"""

SEARCH = """query($q: String, $v: [Float!], $mode: SearchMode, $filter: KnowledgeSearchFilter,
                $first: Int, $after: String) {
  searchKnowledge(query: $q, vector: $v, mode: $mode, filter: $filter, first: $first, after: $after) {
    edges { cursor score semanticRank keywordRank node { id title source tags } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}"""


def create_corpus(
    run: GraphQL, caller: Caller, tag: str, *, agent_id: str | None = None
) -> dict[str, str]:
    """The corpus under a tag of its own (so tests sharing a database do not see each
    other's items); returns title -> global id."""
    ids: dict[str, str] = {}
    for title, content, source in CORPUS:
        fields: dict[str, Any] = {"title": title, "content": content, "source": source}
        fields["tags"] = [tag, source]
        fields["waitForProjection"] = False
        if agent_id and source == "runbook":
            fields["agentId"] = agent_id
        payload = data(run(CREATE, {"input": fields}, caller=caller))["createKnowledge"]
        assert payload["userErrors"] == [], payload
        assert payload["knowledge"]["embeddingPending"] is False
        ids[title] = payload["knowledge"]["id"]
    return ids


def titles(body: dict[str, Any]) -> list[str]:
    return [edge["node"]["title"] for edge in data(body)["searchKnowledge"]["edges"]]


@pytest.fixture
def tag() -> str:
    return unique("corpus")


class FlakyEmbedder:
    """The real local model behind a switch: while `failing`, every call fails the way
    an unreachable embedding server does."""

    def __init__(self, inner: LocalEmbedder, *, failing: bool = True) -> None:
        self.inner = inner
        self.failing = failing
        self.calls = 0

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.calls += 1
        if self.failing:
            raise EmbeddingUnavailable("switched off by the test")
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        await self.inner.aclose()
