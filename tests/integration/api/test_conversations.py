"""Conversations and negotiations: who may read and write them, paging, bounds, the
state machine with its concurrency, audit and graph links, search, and round trips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.support.serving import wait_until

CREATE = """mutation($input: CreateConversationInput!) { createConversation(input: $input) {
  conversation { id kind state version } userErrors { field code message } } }"""
POST = """mutation($c: ID!, $t: String!, $r: ID, $m: JSON) {
  postMessage(input: {conversationId: $c, content: $t, replyToId: $r, metadata: $m}) {
    message { id kind content metadata authorUser { id } authorAgent { id } replyTo { id } }
    userErrors { field code message } } }"""
MOVE = """mutation($c: ID!, $mv: NegotiationMove!, $t: String!, $v: Int) {
  moveNegotiation(input: {conversationId: $c, move: $mv, content: $t, expectedVersion: $v}) {
    conversation { state version resolution } message { kind authorAgent { id } }
    projected userErrors { field code message } } }"""
READ = """query($id: ID!) { conversation(id: $id) { title
  participants { role user { id } agent { id } }
  messages(first: 10) { edges { node { content } } } } }"""
MESSAGES = """query($id: ID!, $order: MessageOrder!, $first: Int, $after: String) {
  conversation(id: $id) { messages(order: $order, first: $first, after: $after) {
    totalCount edges { node { content } } pageInfo { hasNextPage endCursor } } } }"""
# Without totalCount a first page comes from the batched loader; later pages do not.
UNCOUNTED = MESSAGES.replace("totalCount ", "")
SEARCH = """query($q: String!, $mode: SearchMode, $c: ID) {
  searchMessages(query: $q, mode: $mode, conversationId: $c) {
    edges { score node { content conversation { id } } } } }"""
LOGIN_AS = """mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) {
  token userErrors { code } } }"""
GRANT = """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
  userErrors { code } } }"""


def _user(caller: Caller) -> str:
    return str(relay.GlobalID("User", caller.user_id))


def _member(caller: Caller, role: str = "MEMBER") -> dict[str, str]:
    return {"userId": _user(caller), "role": role}


def _agent(gql: GraphQL, operator: Caller) -> str:
    created = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": unique("talker")},
            caller=operator,
        )
    )
    agent_id: str = created["createAgent"]["agent"]["id"]
    return agent_id


def _acting_as(gql: GraphQL, operator: Caller, user: Caller, agent_id: str) -> dict[str, str]:
    """Headers of a session of `user` bound to `agent_id` (granted first)."""
    assert (
        data(gql(GRANT, {"u": _user(user), "a": agent_id}, caller=operator))["grantAgentAccess"][
            "userErrors"
        ]
        == []
    )
    login = data(gql(LOGIN_AS, {"k": user.api_key, "a": agent_id}))["login"]
    assert login["userErrors"] == []
    return {"authorization": f"Bearer {login['token']}"}


def _create(
    gql: GraphQL, caller: Caller | None, headers: dict[str, str] | None = None, **input: Any
) -> dict[str, Any]:
    body = gql(
        CREATE, {"input": {"title": unique("talk"), **input}}, caller=caller, headers=headers
    )
    created: dict[str, Any] = data(body)["createConversation"]
    return created


def _chat(gql: GraphQL, creator: Caller, *others: Caller) -> str:
    created = _create(gql, creator, participants=[_member(c) for c in (creator, *others)])
    assert created["userErrors"] == [], created
    conversation_id: str = created["conversation"]["id"]
    return conversation_id


def _post(
    gql: GraphQL,
    caller: Caller | None,
    conversation_id: str,
    text: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = gql(POST, {"c": conversation_id, "t": text, **extra}, caller=caller, headers=headers)
    posted: dict[str, Any] = data(body)["postMessage"]
    return posted


def test_participants_read_and_write_others_are_refused_admins_read(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller, admin: Caller
) -> None:
    writer = make_caller("agent")  # the least role that writes
    reader = make_caller("viewer")  # the least role that reads
    conversation = _chat(gql, writer, reader)

    # A participant of role agent writes; a participant of role viewer reads only.
    posted = _post(gql, writer, conversation, "hello there")
    assert posted["userErrors"] == [] and posted["message"]["authorUser"] == {"id": _user(writer)}
    read = data(gql(READ, {"id": conversation}, caller=reader))["conversation"]
    assert [e["node"]["content"] for e in read["messages"]["edges"]] == ["hello there"]
    assert {p["user"]["id"] for p in read["participants"]} == {_user(writer), _user(reader)}
    assert error_codes(gql(POST, {"c": conversation, "t": "me too"}, caller=reader)) == [
        "FORBIDDEN"
    ]

    # An operator, the highest role below admin, takes no part: refused everywhere.
    assert error_codes(gql(READ, {"id": conversation}, caller=operator)) == ["FORBIDDEN"]
    assert error_codes(gql(POST, {"c": conversation, "t": "hi"}, caller=operator)) == ["FORBIDDEN"]
    node = gql("query($id: ID!) { node(id: $id) { id } }", {"id": conversation}, caller=operator)
    assert data(node)["node"] is None
    listed = data(gql("{ conversations(first: 100) { edges { node { id } } } }", caller=operator))
    assert conversation not in [e["node"]["id"] for e in listed["conversations"]["edges"]]

    # An admin reads it without taking part, and still may not write in it.
    assert data(gql(READ, {"id": conversation}, caller=admin))["conversation"]["title"]
    assert error_codes(gql(POST, {"c": conversation, "t": "hi"}, caller=admin)) == ["FORBIDDEN"]
    node = gql("query($id: ID!) { node(id: $id) { id } }", {"id": conversation}, caller=admin)
    assert data(node)["node"] == {"id": conversation}

    # Anonymous callers are asked to sign in.
    assert error_codes(gql(READ, {"id": conversation})) == ["UNAUTHENTICATED"]


def test_only_agents_and_up_start_conversations_and_they_take_part(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> None:
    viewer, agent, other = make_caller("viewer"), make_caller("agent"), make_caller("agent")
    assert error_codes(
        gql(CREATE, {"input": {"title": "t", "participants": [_member(viewer)]}}, caller=viewer)
    ) == ["FORBIDDEN"]
    # An agent-role user sets up only conversations it takes part in.
    refused = gql(CREATE, {"input": {"title": "t", "participants": [_member(other)]}}, caller=agent)
    assert error_codes(refused) == ["FORBIDDEN"]
    assert _create(gql, agent, participants=[_member(agent), _member(other)])["userErrors"] == []
    # An operator may set one up between others, and then cannot read it.
    made = _create(gql, operator, participants=[_member(agent), _member(other)])
    assert made["userErrors"] == []
    assert error_codes(gql(READ, {"id": made["conversation"]["id"]}, caller=operator)) == [
        "FORBIDDEN"
    ]


def test_a_session_bound_to_an_agent_speaks_as_the_agent(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> None:
    user, bystander = make_caller("agent"), make_caller("agent")
    agent_id = _agent(gql, operator)
    as_agent = _acting_as(gql, operator, user, agent_id)
    created = _create(
        gql,
        None,
        headers=as_agent,
        participants=[{"agentId": agent_id}, _member(bystander)],
    )
    assert created["userErrors"] == []
    conversation = created["conversation"]["id"]
    posted = _post(gql, None, conversation, "from the agent", headers=as_agent)
    assert posted["message"]["authorAgent"] == {"id": agent_id}
    assert posted["message"]["authorUser"] is None
    # The same user without the session bound to the agent does not take part.
    assert error_codes(gql(READ, {"id": conversation}, caller=user)) == ["FORBIDDEN"]
    # The agent's conversations list shows it.
    listed = data(gql("{ conversations { edges { node { id } } } }", headers=as_agent))
    assert [e["node"]["id"] for e in listed["conversations"]["edges"]] == [conversation]


def test_messages_page_newest_or_oldest_first_with_replies_and_metadata(
    gql: GraphQL, make_caller: Callable[[str], Caller]
) -> None:
    alice, bob = make_caller("agent"), make_caller("agent")
    conversation = _chat(gql, alice, bob)
    first = _post(gql, alice, conversation, "m0", m={"lang": "en"})["message"]
    for index in range(1, 5):
        _post(gql, bob if index % 2 else alice, conversation, f"m{index}")
    reply = _post(gql, bob, conversation, "re m0", r=first["id"])["message"]
    assert reply["replyTo"] == {"id": first["id"]} and first["metadata"] == {"lang": "en"}

    def pages(order: str, query: str = MESSAGES) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            body = gql(
                query,
                {"id": conversation, "order": order, "first": 2, "after": after},
                caller=bob,
            )
            page = data(body)["conversation"]["messages"]
            assert page.get("totalCount", 6) == 6
            seen += [e["node"]["content"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                return seen
            after = page["pageInfo"]["endCursor"]

    oldest = ["m0", "m1", "m2", "m3", "m4", "re m0"]
    assert pages("OLDEST_FIRST") == oldest
    assert pages("NEWEST_FIRST") == oldest[::-1]
    assert pages("OLDEST_FIRST", UNCOUNTED) == oldest
    assert pages("NEWEST_FIRST", UNCOUNTED) == oldest[::-1]

    # A reply stays in its conversation.
    elsewhere = _chat(gql, alice, bob)
    wrong = _post(gql, alice, elsewhere, "re", r=first["id"])
    assert [(e["field"], e["code"]) for e in wrong["userErrors"]] == [("replyToId", "NOT_FOUND")]


def test_inputs_are_bounded(gql: GraphQL, make_caller: Callable[[str], Caller]) -> None:
    alice, bob = make_caller("agent"), make_caller("agent")
    conversation = _chat(gql, alice, bob)

    def refused_field(body: dict[str, Any], name: str) -> str:
        errors = data(body)[name]["userErrors"]
        assert len(errors) == 1 and errors[0]["code"] == "BAD_USER_INPUT", errors
        field: str = errors[0]["field"]
        return field

    too_long = gql(POST, {"c": conversation, "t": "x" * 20_001}, caller=alice)
    assert refused_field(too_long, "postMessage") == "content"
    blank = gql(POST, {"c": conversation, "t": "   "}, caller=alice)
    assert refused_field(blank, "postMessage") == "content"
    too_big = gql(POST, {"c": conversation, "t": "x", "m": {"blob": "y" * 17_000}}, caller=alice)
    assert refused_field(too_big, "postMessage") == "metadata"
    crowd = [_member(alice)] + [
        {"userId": str(relay.GlobalID("User", f"00000000-0000-0000-0000-{i:012d}"))}
        for i in range(1, 51)
    ]
    crowded = gql(CREATE, {"input": {"title": "t", "participants": crowd}}, caller=alice)
    assert refused_field(crowded, "createConversation") == "participants"
    long_title = gql(
        CREATE, {"input": {"title": "t" * 201, "participants": [_member(alice)]}}, caller=alice
    )
    assert refused_field(long_title, "createConversation") == "title"
    assert error_codes(
        gql(MESSAGES, {"id": conversation, "order": "NEWEST_FIRST", "first": 101}, caller=alice)
    ) == ["BAD_USER_INPUT"]
    assert error_codes(gql("{ conversations(first: 101) { edges { cursor } } }", caller=alice)) == [
        "BAD_USER_INPUT"
    ]
    assert error_codes(
        gql('{ searchMessages(query: "x", first: 101) { edges { cursor } } }', caller=alice)
    ) == ["BAD_USER_INPUT"]
    # Nothing of the refused writes was kept.
    page = data(gql(MESSAGES, {"id": conversation, "order": "NEWEST_FIRST"}, caller=alice))
    assert page["conversation"]["messages"]["totalCount"] == 0


@pytest.fixture
def negotiation(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> dict[str, Any]:
    """Agents A (proposer) and B (opponent) through bound sessions, a user mediator, a
    user member, about one task."""
    proposer_user, opponent_user = make_caller("agent"), make_caller("agent")
    mediator, member = make_caller("agent"), make_caller("agent")
    proposer_agent, opponent_agent = _agent(gql, operator), _agent(gql, operator)
    task = data(
        gql('mutation { createTask(input: {title: "decide"}) { task { id } } }', caller=operator)
    )["createTask"]["task"]["id"]
    created = _create(
        gql,
        mediator,
        kind="NEGOTIATION",
        participants=[
            {"agentId": proposer_agent, "role": "PROPOSER"},
            {"agentId": opponent_agent, "role": "OPPONENT"},
            _member(mediator, "MEDIATOR"),
            _member(member),
        ],
        taskIds=[task],
    )
    assert created["userErrors"] == [], created
    assert created["conversation"]["state"] == "OPEN"
    return {
        "id": created["conversation"]["id"],
        "task": task,
        "agents": sorted([proposer_agent, opponent_agent]),
        "proposer": _acting_as(gql, operator, proposer_user, proposer_agent),
        "opponent": _acting_as(gql, operator, opponent_user, opponent_agent),
        "mediator": mediator,
        "member": member,
    }


def _move(
    gql: GraphQL, who: Caller | dict[str, str], conversation: str, move: str, version: int | None
) -> dict[str, Any]:
    caller, headers = (who, None) if isinstance(who, Caller) else (None, who)
    body = gql(
        MOVE,
        {"c": conversation, "mv": move, "t": f"my {move.lower()}", "v": version},
        caller=caller,
        headers=headers,
    )
    if body.get("errors"):
        return {"errors": error_codes(body)}
    moved: dict[str, Any] = data(body)["moveNegotiation"]
    return moved


def test_a_negotiation_moves_by_role_with_versions_audit_and_graph_links(
    gql: GraphQL, negotiation: dict[str, Any], admin: Caller
) -> None:
    n = negotiation
    conversation = n["id"]
    # Each move is for its role: the opponent cannot state the thesis, a member cannot move.
    assert _move(gql, n["opponent"], conversation, "THESIS", 1) == {"errors": ["FORBIDDEN"]}
    assert _move(gql, n["member"], conversation, "THESIS", 1) == {"errors": ["FORBIDDEN"]}
    thesis = _move(gql, n["proposer"], conversation, "THESIS", 1)
    assert thesis["conversation"]["state"] == "THESIS" and thesis["conversation"]["version"] == 2
    assert thesis["message"]["kind"] == "THESIS"
    # A stale version is a conflict, and so is a move the state does not allow.
    stale = _move(gql, n["opponent"], conversation, "ANTITHESIS", 1)
    assert [(e["field"], e["code"]) for e in stale["userErrors"]] == [
        ("expectedVersion", "CONFLICT")
    ]
    early = _move(gql, n["mediator"], conversation, "RESOLVE", 2)
    assert [(e["field"], e["code"]) for e in early["userErrors"]] == [("move", "CONFLICT")]
    assert _move(gql, n["opponent"], conversation, "ANTITHESIS", 2)["conversation"]["version"] == 3
    assert _move(gql, n["mediator"], conversation, "SYNTHESIS", 3)["conversation"]["state"] == (
        "SYNTHESIS"
    )
    resolved = _move(gql, n["mediator"], conversation, "RESOLVE", 4)
    assert resolved["conversation"] == {
        "state": "RESOLVED",
        "version": 5,
        "resolution": "my resolve",
    }
    assert resolved["projected"] is True
    # Resolved is final.
    late = _move(gql, n["proposer"], conversation, "ABANDON", None)
    assert late["userErrors"][0]["code"] == "CONFLICT"

    links = data(
        gql(
            """query($id: ID!) { conversation(id: $id) { tasks { id }
          resolutionLinks { agents { id } tasks { id } }
          messages(order: OLDEST_FIRST) { edges { node { kind } } } } }""",
            {"id": conversation},
            caller=n["member"],
        )
    )["conversation"]
    assert sorted(a["id"] for a in links["resolutionLinks"]["agents"]) == n["agents"]
    assert links["resolutionLinks"]["tasks"] == [{"id": n["task"]}] == links["tasks"]
    assert [e["node"]["kind"] for e in links["messages"]["edges"]] == [
        "THESIS",
        "ANTITHESIS",
        "SYNTHESIS",
        "RESOLUTION",
    ]

    audit = data(
        gql(
            """query($id: String!) { auditLog(filter: {resourceType: "negotiation", resourceId: $id})
          { edges { node { action } } } }""",
            {"id": str(relay.GlobalID.from_id(conversation).node_id)},
            caller=admin,
        )
    )["auditLog"]["edges"]
    assert [e["node"]["action"] for e in audit] == ["resolve", "synthesis", "antithesis", "thesis"]


def test_a_negotiation_is_abandoned_by_its_proposer_not_its_opponent(
    gql: GraphQL, negotiation: dict[str, Any]
) -> None:
    n = negotiation
    assert _move(gql, n["opponent"], n["id"], "ABANDON", None) == {"errors": ["FORBIDDEN"]}
    abandoned = _move(gql, n["proposer"], n["id"], "ABANDON", None)
    assert abandoned["conversation"]["state"] == "ABANDONED"
    assert abandoned["message"]["kind"] == "ABANDONMENT" and abandoned["projected"] is False


def test_chats_take_no_moves_and_negotiations_need_every_role(
    gql: GraphQL, make_caller: Callable[[str], Caller]
) -> None:
    alice, bob = make_caller("agent"), make_caller("agent")
    chat = _chat(gql, alice, bob)
    refused = _move(gql, alice, chat, "THESIS", None)
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [
        ("conversationId", "BAD_USER_INPUT")
    ]
    lacking = _create(
        gql,
        alice,
        kind="NEGOTIATION",
        participants=[_member(alice, "PROPOSER"), _member(bob, "OPPONENT")],
    )
    assert lacking["userErrors"][0]["field"] == "participants"
    assert "MEDIATOR" in lacking["userErrors"][0]["message"]


def test_search_finds_only_messages_of_conversations_the_caller_may_read(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller, admin: Caller
) -> None:
    alice, bob, carol = make_caller("agent"), make_caller("agent"), make_caller("viewer")
    word = unique("zebra").replace("-", "")
    ours = _chat(gql, alice, bob)
    theirs = _chat(gql, bob, carol)
    mine = _post(gql, alice, ours, f"the {word} crossed the river at dawn")["message"]["id"]
    _post(gql, bob, theirs, f"another {word} was seen near the hills")

    def found(caller: Caller, mode: str, conversation: str | None = None) -> list[str]:
        body = gql(
            SEARCH,
            {
                "q": word if mode == "KEYWORD" else "an animal crossing water",
                "mode": mode,
                "c": conversation,
            },
            caller=caller,
        )
        return [e["node"]["conversation"]["id"] for e in data(body)["searchMessages"]["edges"]]

    assert found(alice, "KEYWORD") == [ours]
    assert sorted(found(bob, "KEYWORD")) == sorted([ours, theirs])
    assert found(carol, "KEYWORD") == [theirs]  # a viewer participant searches too
    assert found(operator, "KEYWORD") == []
    assert sorted(found(admin, "KEYWORD")) == sorted([ours, theirs])
    assert found(bob, "KEYWORD", ours) == [ours]
    assert error_codes(gql(SEARCH, {"q": word, "c": ours}, caller=carol)) == ["FORBIDDEN"]

    # Embedded in the background: once it is, meaning finds it too, still scoped.
    def embedded() -> bool:
        body = gql(
            "query($id: ID!) { node(id: $id) { ... on Message { embeddingPending } } }",
            {"id": mine},
            caller=alice,
        )
        return data(body)["node"]["embeddingPending"] is False

    wait_until(embedded, what="the message's embedding")
    assert ours in found(alice, "SEMANTIC")
    assert theirs not in found(alice, "SEMANTIC")
    assert (
        data(gql("query($id: ID!) { node(id: $id) { id } }", {"id": mine}, caller=carol))["node"]
        is None
    )


def _conversations_with_last_messages(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller, count: int
) -> dict[str, int]:
    owner, other = make_caller("agent"), make_caller("viewer")
    agent_id = _agent(gql, operator)
    for index in range(count):
        created = _create(
            gql, owner, participants=[_member(owner), _member(other), {"agentId": agent_id}]
        )
        _post(gql, owner, created["conversation"]["id"], f"last words {index}")
    # Each by-id loader is reached by one path: users reached both from participants
    # and from authors would be one batch or two depending on which parent query
    # returned first, whatever the page size.
    body = gql(
        """query($n: Int!) { conversations(first: $n) { totalCount edges { node { title
             participants { role agent { name } }
             lastMessage { content authorUser { id } }
             messages(first: 2) { edges { node { content } } pageInfo { hasNextPage } } } } } }""",
        {"n": count},
        caller=owner,
    )
    edges = data(body)["conversations"]["edges"]
    assert len(edges) == count
    assert {e["node"]["lastMessage"]["content"] for e in edges} == {
        f"last words {i}" for i in range(count)
    }
    return dict(gql.last_round_trips)


def test_round_trips_for_a_page_of_conversations_do_not_grow_with_its_size(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> None:
    small = _conversations_with_last_messages(gql, make_caller, operator, 2)
    large = _conversations_with_last_messages(gql, make_caller, operator, 8)
    assert small == large
    # The API key's check, the page (with its count), participants, last messages, first
    # pages of messages, the participants' agents and the authors (users): one each,
    # whatever the page size.
    assert large["postgres"] <= 7, large


def test_a_retried_post_or_move_with_its_key_writes_once(
    gql: GraphQL, negotiation: dict[str, Any]
) -> None:
    n = negotiation
    post = """mutation($c: ID!, $k: String!) { postMessage(input: {conversationId: $c,
      content: "once", idempotencyKey: $k}) { message { id } userErrors { code } } }"""
    first = data(gql(post, {"c": n["id"], "k": "post-1"}, caller=n["member"]))["postMessage"]
    again = data(gql(post, {"c": n["id"], "k": "post-1"}, caller=n["member"]))["postMessage"]
    assert again == first and first["userErrors"] == []

    move = """mutation($c: ID!, $k: String!) { moveNegotiation(input: {conversationId: $c,
      move: THESIS, content: "t", expectedVersion: 1, idempotencyKey: $k}) {
      conversation { version } message { id } userErrors { code } } }"""
    moved = data(gql(move, {"c": n["id"], "k": "move-1"}, headers=n["proposer"]))
    replayed = data(gql(move, {"c": n["id"], "k": "move-1"}, headers=n["proposer"]))
    assert replayed == moved and moved["moveNegotiation"]["conversation"] == {"version": 2}

    page = data(gql(MESSAGES, {"id": n["id"], "order": "OLDEST_FIRST"}, caller=n["member"]))
    assert page["conversation"]["messages"]["totalCount"] == 2


def test_conversations_by_node_id_cost_the_same_round_trips_for_any_number(
    gql: GraphQL, make_caller: Callable[[str], Caller]
) -> None:
    owner, other = make_caller("agent"), make_caller("agent")
    ids = [_chat(gql, owner, other) for _ in range(5)]
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on Conversation { title } } }"
    trips = []
    for some in (ids[:2], ids):
        found = data(gql(query, {"ids": some}, caller=other))["nodes"]
        assert all(node["title"] for node in found)
        trips.append(dict(gql.last_round_trips))
    assert trips[0] == trips[1], trips
