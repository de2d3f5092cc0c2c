"""Agent.recall: an agent's memories by meaning, words or both, at constant round trips."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

REMEMBER = """mutation($input: RememberMemoryInput!) {
  rememberMemory(input: $input) { memory { id kind importance embeddingPending agent { id } } userErrors { code field } }
}"""

RECALL_PAGE = """query($tag: String!, $first: Int!, $q: String!) {
  agents(filter: {tagsAny: [$tag]}, first: $first) {
    edges { node { id name
      recall(query: $q, first: 2) { score semanticRank keywordRank memory { content kind } }
      semantic: recall(query: $q, mode: SEMANTIC, first: 1) { memory { content } }
    } }
  }
}"""


def _agent(gql: GraphQL, caller: Caller, tag: str | None = None) -> str:
    fields: dict[str, object] = {"name": unique("recall")}
    if tag:
        fields["tags"] = [tag]
        fields["waitForProjection"] = False
    created = data(
        gql(
            """mutation($input: CreateAgentInput!) { createAgent(input: $input) { agent { id } } }""",
            {"input": fields},
            caller=caller,
        )
    )
    agent_id: str = created["createAgent"]["agent"]["id"]
    return agent_id


def test_recall_ranks_an_agents_own_memories(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    agent, other = _agent(gql, operator), _agent(gql, operator)
    memories = [
        (agent, "Deployments to production need two approvals", "PROCEDURAL"),
        (agent, "Lunch with the platform team went well", "EPISODIC"),
        (agent, "The billing service is written in Go", "SEMANTIC"),
        (other, "Production deploys need approval from two reviewers", "PROCEDURAL"),
    ]
    for owner, content, kind in memories:
        payload = data(
            gql(
                REMEMBER,
                {
                    "input": {
                        "agentId": owner,
                        "content": content,
                        "kind": kind,
                        "importance": 0.8,
                        "context": {"from": "test"},
                    }
                },
                caller=operator,
            )
        )["rememberMemory"]
        assert payload["userErrors"] == [] and payload["memory"]["embeddingPending"] is False
        assert payload["memory"]["agent"]["id"] == owner

    body = gql(
        """query($id: ID!) { node(id: $id) { ... on Agent {
                    hybrid: recall(query: "who must approve a release?", first: 3) { score semanticRank keywordRank memory { content } }
                    words: recall(query: "billing", mode: KEYWORD) { memory { content } }
                  } } }""",
        {"id": agent},
        caller=operator,
    )
    node = data(body)["node"]
    assert node["hybrid"][0]["memory"]["content"] == "Deployments to production need two approvals"
    assert len(node["hybrid"]) == 3  # only this agent's memories, never the other agent's
    assert all("reviewers" not in hit["memory"]["content"] for hit in node["hybrid"])
    assert node["words"] == [{"memory": {"content": "The billing service is written in Go"}}]

    bad = data(
        gql(
            REMEMBER,
            {"input": {"agentId": agent, "content": "x", "importance": 2}},
            caller=operator,
        )
    )
    assert bad["rememberMemory"]["userErrors"] == [
        {"code": "BAD_USER_INPUT", "field": "importance"}
    ]
    assert error_codes(
        gql(REMEMBER, {"input": {"agentId": agent, "content": "x"}}, caller=viewer)
    ) == ["FORBIDDEN"]

    memory_id = data(
        gql(REMEMBER, {"input": {"agentId": agent, "content": "temporary"}}, caller=operator)
    )["rememberMemory"]["memory"]["id"]
    forgot = data(
        gql(
            """mutation($id: ID!) { forgetMemory(input: {id: $id}) { memory { id } userErrors { code } } }""",
            {"id": memory_id},
            caller=operator,
        )
    )["forgetMemory"]
    assert forgot == {"memory": {"id": memory_id}, "userErrors": []}
    again = data(
        gql(
            """mutation($id: ID!) { forgetMemory(input: {id: $id}) { memory { id } userErrors { code } } }""",
            {"id": memory_id},
            caller=operator,
        )
    )["forgetMemory"]
    assert again["userErrors"] == [{"code": "NOT_FOUND"}]


def test_recall_round_trips_are_the_same_for_10_and_100_agents(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    tag = unique("recall-rt")
    agents = [_agent(gql, operator, tag) for _ in range(100)]
    # A reader whose right to each agent's memories is a grant: checked in one batch too.
    reader = make_caller("viewer")
    for agent in agents:
        data(
            gql(
                """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
                   created } }""",
                {"u": str(relay.GlobalID("User", reader.user_id)), "a": agent},
                caller=operator,
            )
        )
    for index, agent in enumerate(agents[:5] + agents[-5:]):
        data(
            gql(
                REMEMBER,
                {
                    "input": {
                        "agentId": agent,
                        "content": f"Incident {index}: the cache ran out of memory",
                        "vector": None,
                    }
                },
                caller=operator,
            )
        )
    query = "what went wrong with the cache?"
    small = data(gql(RECALL_PAGE, {"tag": tag, "first": 10, "q": query}, caller=reader))
    small_trips = dict(gql.last_round_trips)
    large = data(gql(RECALL_PAGE, {"tag": tag, "first": 100, "q": query}, caller=reader))
    large_trips = dict(gql.last_round_trips)
    assert len(small["agents"]["edges"]) == 10
    assert len(large["agents"]["edges"]) == 100
    with_memories = [edge["node"] for edge in large["agents"]["edges"] if edge["node"]["recall"]]
    assert len(with_memories) == 10
    assert all("cache" in node["recall"][0]["memory"]["content"] for node in with_memories)
    assert small_trips == large_trips, (small_trips, large_trips)
    # Two recall argument sets: each one SQL statement (in its own short transaction);
    # one more for the reader's grants.
    assert large_trips["postgres"] <= 15, large_trips


def test_recall_by_keyword_ranks_partial_matches_like_knowledge_search(
    gql: GraphQL, operator: Caller
) -> None:
    agent = _agent(gql, operator)
    for content in (
        "The staging cluster is small",
        "Deployments to production need two approvals",
        "Lunch with the platform team went well",
    ):
        data(gql(REMEMBER, {"input": {"agentId": agent, "content": content}}, caller=operator))
    body = gql(
        """query($id: ID!) { node(id: $id) { ... on Agent {
                    recall(query: "who approves deployments to staging", mode: KEYWORD) {
                      score keywordRank memory { content } }
                  } } }""",
        {"id": agent},
        caller=operator,
    )
    recalled = data(body)["node"]["recall"]
    # Terms: approve, deployment, staging; the first holds two of them, the next one.
    assert [hit["memory"]["content"] for hit in recalled] == [
        "Deployments to production need two approvals",
        "The staging cluster is small",
    ]
    assert [hit["score"] for hit in recalled] == pytest.approx([2 / 3, 1 / 3])
    assert [hit["keywordRank"] for hit in recalled] == [1, 2]
