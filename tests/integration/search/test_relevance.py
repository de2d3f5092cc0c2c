"""What each search mode ranks first: partial keyword matches, fusion that is never
worse than its better side, and exclusions, on small labelled sets."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.integration.api.conftest import Caller, GraphQL, data
from tests.integration.search.conftest import CREATE, SEARCH, create_corpus, titles

DIMENSION = 384

# (query, the CORPUS title that answers it): questions in other words than the
# items use, and the items' own terms.
QUESTIONS = (
    ("why does my container keep getting restarted", "Kubernetes liveness probes"),
    ("how often do we change the postgres password", "Rotating database credentials"),
    ("what should a client do when a request times out", "Retrying flaky network calls"),
    ("how did revenue do this quarter", "Quarterly sales report"),
    ("how long should the dough rise before baking", "Baking sourdough bread"),
)
TERMS = (
    ("liveness probe kubelet", "Kubernetes liveness probes"),
    ("secrets vault passwords", "Rotating database credentials"),
    ("exponential backoff jitter", "Retrying flaky network calls"),
    ("enterprise renewals revenue", "Quarterly sales report"),
    ("sourdough starter oven", "Baking sourdough bread"),
)


def _vector(similarity: float, axis: int) -> list[float]:
    """A unit vector whose cosine with the first axis is `similarity`."""
    vector = [0.0] * DIMENSION
    vector[0] = similarity
    vector[axis] = math.sqrt(1 - similarity**2)
    return vector


def _create(gql: GraphQL, caller: Caller, tag: str, title: str, **fields: Any) -> None:
    payload = data(
        gql(
            CREATE,
            {"input": {"title": title, "tags": [tag], "waitForProjection": False, **fields}},
            caller=caller,
        )
    )["createKnowledge"]
    assert payload["userErrors"] == [], payload


def _search(gql: GraphQL, caller: Caller, tag: str, **variables: Any) -> list[dict[str, Any]]:
    body = gql(SEARCH, {"filter": {"tagsAny": [tag]}, **variables}, caller=caller)
    edges: list[dict[str, Any]] = data(body)["searchKnowledge"]["edges"]
    return edges


def test_keyword_search_finds_a_natural_question_by_partial_match(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    create_corpus(gql, operator, tag)
    # "how", "do" and "we" are stop words; no item holds all of the rest.
    edges = _search(gql, viewer, tag, q="how do we retry failed network calls", mode="KEYWORD")
    assert [edge["node"]["title"] for edge in edges] == [
        "Retrying flaky network calls",
        "Kubernetes liveness probes",
    ]
    # The score is the share of the query's terms an item holds: "retrying", "network"
    # and "calls" of four, and "fails" (stemmed alike) of four.
    assert [edge["score"] for edge in edges] == pytest.approx([3 / 4, 1 / 4])
    assert [edge["keywordRank"] for edge in edges] == [1, 2]
    assert edges[0]["semanticRank"] is None
    # A query of stop words alone has nothing to match.
    assert _search(gql, viewer, tag, q="how do we", mode="KEYWORD") == []


def test_keyword_search_ranks_items_holding_more_of_the_terms_first(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    _create(gql, operator, tag, "Compaction of old segments", content="Merges small files.")
    _create(gql, operator, tag, "Tombstone compaction schedule", content="Runs nightly.")
    _create(gql, operator, tag, "Tombstones", content="A tombstone marks a deleted row.")
    edges = _search(gql, viewer, tag, q="when do tombstone compactions run", mode="KEYWORD")
    assert [edge["node"]["title"] for edge in edges] == [
        "Tombstone compaction schedule",
        # Both hold one term of three; the one holding it twice comes first.
        "Tombstones",
        "Compaction of old segments",
    ]
    assert [edge["score"] for edge in edges] == pytest.approx([1.0, 1 / 3, 1 / 3])
    assert [edge["keywordRank"] for edge in edges] == [1, 2, 3]


def test_excluded_terms_filter_keyword_and_hybrid_search(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    create_corpus(gql, operator, tag)
    query = "rotating credentials and retrying calls -flaky"
    for mode in ("KEYWORD", "HYBRID"):
        found = titles(
            gql(SEARCH, {"q": query, "mode": mode, "filter": {"tagsAny": [tag]}}, caller=viewer)
        )
        assert "Rotating database credentials" in found, mode
        assert "Retrying flaky network calls" not in found, mode


def test_hybrid_ranks_an_item_both_sides_like_above_one_only_meaning_likes(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    # Vectors given, so the similarities are known: the query vector is the first axis.
    _create(gql, operator, tag, "Cache warming", vector=_vector(0.9, 1))
    _create(gql, operator, tag, "Tombstone compaction schedule", vector=_vector(0.8, 2))
    _create(gql, operator, tag, "Compaction of old segments", vector=_vector(0.5, 3))
    query = {"q": "tombstone compaction schedule", "v": _vector(1.0, 1)}
    semantic = _search(gql, viewer, tag, mode="SEMANTIC", **query)
    assert [edge["node"]["title"] for edge in semantic] == [
        "Cache warming",
        "Tombstone compaction schedule",
        "Compaction of old segments",
    ]
    hybrid = _search(gql, viewer, tag, mode="HYBRID", **query)
    assert [edge["node"]["title"] for edge in hybrid] == [
        "Tombstone compaction schedule",
        "Cache warming",
        "Compaction of old segments",
    ]
    both, meaning_only, partial = hybrid
    # 0.7 * similarity, plus 0.3 for holding every term of the query.
    assert both["score"] == pytest.approx(0.7 * 0.8 + 0.3, abs=1e-5)
    assert (both["semanticRank"], both["keywordRank"]) == (2, 1)
    assert meaning_only["score"] == pytest.approx(0.7 * 0.9, abs=1e-5)
    assert (meaning_only["semanticRank"], meaning_only["keywordRank"]) == (1, None)
    # A partial match is KEYWORD's business; in HYBRID it ranks by meaning alone.
    assert partial["score"] == pytest.approx(0.7 * 0.5, abs=1e-5)
    assert partial["keywordRank"] is None


@pytest.mark.parametrize("labelled", [QUESTIONS, TERMS], ids=["questions", "terms"])
def test_hybrid_is_never_worse_than_its_better_side(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    tag: str,
    labelled: tuple[tuple[str, str], ...],
) -> None:
    create_corpus(gql, operator, tag)

    def mean_reciprocal_rank(mode: str) -> float:
        total = 0.0
        for query, answer in labelled:
            variables = {"q": query, "mode": mode, "filter": {"tagsAny": [tag]}}
            found = titles(gql(SEARCH, variables, caller=viewer))
            total += 1 / (found.index(answer) + 1) if answer in found else 0.0
        return total / len(labelled)

    by_mode = {mode: mean_reciprocal_rank(mode) for mode in ("KEYWORD", "SEMANTIC", "HYBRID")}
    assert by_mode["HYBRID"] >= max(by_mode["KEYWORD"], by_mode["SEMANTIC"]), by_mode
