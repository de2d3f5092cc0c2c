"""searchKnowledge, similarKnowledge and Knowledge.related over real servers and the real model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.integration.search.conftest import CREATE, SEARCH, create_corpus, titles


def test_similar_sentences_rank_above_unrelated_ones(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    create_corpus(gql, operator, tag)
    # No word in common with the Kubernetes item: only meaning can find it.
    body = gql(
        SEARCH,
        {
            "q": "container keeps getting rebooted by the orchestrator",
            "mode": "SEMANTIC",
            "filter": {"tagsAny": [tag]},
            "first": 5,
        },
        caller=viewer,
    )
    found = titles(body)
    assert found[0] == "Kubernetes liveness probes"
    assert found.index("Kubernetes liveness probes") < found.index("Baking sourdough bread")
    edges = data(body)["searchKnowledge"]["edges"]
    scores = [edge["score"] for edge in edges]
    assert scores == sorted(scores, reverse=True)
    assert edges[0]["semanticRank"] == 1 and edges[0]["keywordRank"] is None


def test_keyword_search_matches_words_with_websearch_syntax(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    create_corpus(gql, operator, tag)
    body = gql(
        SEARCH,
        {"q": '"exponential backoff" -sourdough', "mode": "KEYWORD", "filter": {"tagsAny": [tag]}},
        caller=viewer,
    )
    assert titles(body) == ["Retrying flaky network calls"]
    edge = data(body)["searchKnowledge"]["edges"][0]
    assert edge["keywordRank"] == 1 and edge["semanticRank"] is None
    # Words the corpus does not hold find nothing by keyword.
    nothing = gql(
        SEARCH,
        {"q": "orchestrator rebooted", "mode": "KEYWORD", "filter": {"tagsAny": [tag]}},
        caller=viewer,
    )
    assert titles(nothing) == []


def test_hybrid_search_fuses_both_rankings(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    create_corpus(gql, operator, tag)
    body = gql(
        SEARCH,
        {"q": "password rotation for the database", "filter": {"tagsAny": [tag]}, "first": 3},
        caller=viewer,
    )
    edges = data(body)["searchKnowledge"]["edges"]
    assert edges[0]["node"]["title"] == "Rotating database credentials"
    # Found by both: both ranks present; it holds every word of the query, so its
    # score is 0.7 times its similarity plus 0.3.
    top = edges[0]
    assert top["semanticRank"] == 1 and top["keywordRank"] == 1
    semantic = gql(
        SEARCH,
        {
            "q": "password rotation for the database",
            "mode": "SEMANTIC",
            "filter": {"tagsAny": [tag]},
        },
        caller=viewer,
    )
    similarity = data(semantic)["searchKnowledge"]["edges"][0]["score"]
    assert abs(top["score"] - (0.7 * similarity + 0.3)) < 1e-6
    # Items only one side found still appear, with the other rank null.
    assert any(edge["keywordRank"] is None for edge in edges[1:])


def test_filters_apply_inside_the_search(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    agent = data(
        gql(
            """mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }""",
            {"n": unique("finder")},
            caller=operator,
        )
    )["createAgent"]["agent"]["id"]
    create_corpus(gql, operator, tag, agent_id=agent)
    query = "how do I keep services healthy"
    by_source = titles(
        gql(
            SEARCH,
            {"q": query, "mode": "SEMANTIC", "filter": {"tagsAny": [tag], "sources": ["notes"]}},
            caller=viewer,
        )
    )
    assert sorted(by_source) == ["Baking sourdough bread", "Retrying flaky network calls"]
    by_agent = titles(
        gql(
            SEARCH,
            {"q": query, "mode": "SEMANTIC", "filter": {"tagsAny": [tag], "agentIds": [agent]}},
            caller=viewer,
        )
    )
    assert sorted(by_agent) == ["Kubernetes liveness probes", "Rotating database credentials"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        titles(
            gql(
                SEARCH,
                {"q": query, "filter": {"tagsAny": [tag], "createdAfter": future}},
                caller=viewer,
            )
        )
        == []
    )
    # `first` results even when the filter rejects most of the nearest rows.
    page = gql(
        SEARCH,
        {"q": query, "mode": "SEMANTIC", "filter": {"tagsAny": [tag]}, "first": 2},
        caller=viewer,
    )
    assert len(titles(page)) == 2
    assert data(page)["searchKnowledge"]["pageInfo"]["hasNextPage"] is True
    cursor = data(page)["searchKnowledge"]["pageInfo"]["endCursor"]
    rest = gql(
        SEARCH,
        {
            "q": query,
            "mode": "SEMANTIC",
            "filter": {"tagsAny": [tag]},
            "first": 10,
            "after": cursor,
        },
        caller=viewer,
    )
    assert len(titles(rest)) == 3
    assert not set(titles(rest)) & set(titles(page))


def test_a_vector_of_the_wrong_dimension_is_bad_user_input(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    body = gql(SEARCH, {"v": [0.1, 0.2, 0.3], "mode": "SEMANTIC"}, caller=viewer)
    assert error_codes(body) == ["BAD_USER_INPUT"]
    message = body["errors"][0]["message"]
    assert "expected 384" in message and "got 3" in message
    payload = data(gql(CREATE, {"input": {"title": "x", "vector": [1.0, 2.0]}}, caller=operator))[
        "createKnowledge"
    ]
    assert payload["knowledge"] is None
    assert payload["userErrors"][0]["code"] == "BAD_USER_INPUT"
    assert payload["userErrors"][0]["field"] == "vector"
    assert "expected 384, got 2" in payload["userErrors"][0]["message"]


def test_a_clients_own_vector_is_searched_as_given(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    axis = [0.0] * 384
    axis[7] = 1.0
    other = [0.0] * 384
    other[8] = 1.0
    for title, vector in (("on the axis", axis), ("beside it", other)):
        payload = data(
            gql(
                CREATE,
                {"input": {"title": title, "tags": [tag], "vector": vector}},
                caller=operator,
            )
        )["createKnowledge"]
        assert payload["userErrors"] == []
    body = gql(SEARCH, {"v": axis, "filter": {"tagsAny": [tag]}}, caller=viewer)
    edges = data(body)["searchKnowledge"]["edges"]
    assert edges[0]["node"]["title"] == "on the axis"
    assert abs(edges[0]["score"] - 1.0) < 1e-6


def test_search_needs_what_its_mode_needs(gql: GraphQL, viewer: Caller) -> None:
    for variables in ({"mode": "KEYWORD"}, {"mode": "HYBRID", "v": [0.1] * 384}, {}):
        body = gql(SEARCH, variables, caller=viewer)
        assert error_codes(body) == ["BAD_USER_INPUT"], variables
    assert error_codes(gql(SEARCH, {"q": "x"})) == ["UNAUTHENTICATED"]


def test_similar_knowledge_and_the_knowledge_graph(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    ids = create_corpus(gql, operator, tag)
    extra = data(
        gql(
            CREATE,
            {"input": {"title": "Readiness probes gate traffic to a pod", "tags": [tag]}},
            caller=operator,
        )
    )["createKnowledge"]["knowledge"]["id"]
    probes = ids["Kubernetes liveness probes"]
    similar = data(
        gql(
            """query($id: ID!, $tag: String!) { similarKnowledge(id: $id, first: 2, filter: {tagsAny: [$tag]}) {
                 score node { id title } } }""",
            {"id": probes, "tag": tag},
            caller=viewer,
        )
    )["similarKnowledge"]
    assert similar[0]["node"]["id"] == extra
    assert all(hit["node"]["id"] != probes for hit in similar)

    relate = """mutation($s: ID!, $t: ID!, $type: KnowledgeRelationType!) {
      relateKnowledge(input: {sourceId: $s, targetId: $t, type: $type}) {
        source { id } target { id } userErrors { code } projected } }"""
    for target, kind in ((extra, "SUPPORTS"), (ids["Quarterly sales report"], "CONTRADICTS")):
        payload = data(gql(relate, {"s": probes, "t": target, "type": kind}, caller=operator))
        assert payload["relateKnowledge"]["userErrors"] == []
        assert payload["relateKnowledge"]["projected"] is True
    denied = gql(relate, {"s": probes, "t": extra, "type": "RELATES_TO"}, caller=viewer)
    assert error_codes(denied) == ["FORBIDDEN"]

    # Similar by meaning and linked in the graph, in one query.
    body = gql(
        """query($id: ID!, $tag: String!) {
          similarKnowledge(id: $id, first: 3, filter: {tagsAny: [$tag]}) { node { title related { type outgoing item { title } } } }
          node(id: $id) { ... on Knowledge { related { type outgoing item { id } } } }
        }""",
        {"id": probes, "tag": tag},
        caller=viewer,
    )
    links = data(body)["node"]["related"]
    assert sorted((link["type"], link["item"]["id"]) for link in links) == sorted(
        [("CONTRADICTS", ids["Quarterly sales report"]), ("SUPPORTS", extra)]
    )
    assert all(link["outgoing"] for link in links)
    readiness = next(
        hit
        for hit in data(body)["similarKnowledge"]
        if hit["node"]["title"].startswith("Readiness")
    )
    assert readiness["node"]["related"] == [
        {"type": "SUPPORTS", "outgoing": False, "item": {"title": "Kubernetes liveness probes"}}
    ]

    unrelate = data(
        gql(
            """mutation($s: ID!, $t: ID!) { unrelateKnowledge(input: {sourceId: $s, targetId: $t,
               type: SUPPORTS}) { removed projected } }""",
            {"s": probes, "t": extra},
            caller=operator,
        )
    )["unrelateKnowledge"]
    assert unrelate == {"removed": True, "projected": True}
    deleted = data(
        gql(
            """mutation($id: ID!) { deleteKnowledge(input: {id: $id}) { knowledge { id }
               userErrors { code } projected } }""",
            {"id": ids["Quarterly sales report"]},
            caller=operator,
        )
    )["deleteKnowledge"]
    assert deleted["userErrors"] == [] and deleted["projected"] is True
    after = data(
        gql(
            """query($id: ID!) { node(id: $id) { ... on Knowledge { related { type } } } }""",
            {"id": probes},
            caller=viewer,
        )
    )
    assert after["node"]["related"] == []


def test_update_embeds_the_new_text(
    gql: GraphQL, operator: Caller, viewer: Caller, tag: str
) -> None:
    ids = create_corpus(gql, operator, tag)
    bread = ids["Baking sourdough bread"]
    updated = data(
        gql(
            """mutation($id: ID!) { updateKnowledge(input: {id: $id, expectedVersion: 1,
                 title: "Scaling stateful sets", content: "Add replicas to a stateful set in the cluster."})
               { knowledge { title version embeddingPending } userErrors { code } } }""",
            {"id": bread},
            caller=operator,
        )
    )["updateKnowledge"]
    assert updated["userErrors"] == []
    assert updated["knowledge"] == {
        "title": "Scaling stateful sets",
        "version": 2,
        "embeddingPending": False,
    }
    found = titles(
        gql(
            SEARCH,
            {
                "q": "kubernetes replicas",
                "mode": "SEMANTIC",
                "filter": {"tagsAny": [tag]},
                "first": 2,
            },
            caller=viewer,
        )
    )
    assert "Scaling stateful sets" in found
    stale = data(
        gql(
            """mutation($id: ID!) { updateKnowledge(input: {id: $id, expectedVersion: 1, source: "x"})
               { userErrors { code field } } }""",
            {"id": bread},
            caller=operator,
        )
    )["updateKnowledge"]
    assert stale["userErrors"] == [{"code": "CONFLICT", "field": "expectedVersion"}]
