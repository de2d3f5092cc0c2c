"""Live conversations: `messageAdded` and `negotiationChanged` cross gateway processes
through Redis, and only reach those who may read the conversation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
from strawberry import relay
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.settings import Settings
from resolvers.conversations import MESSAGE_ADDED_CHANNEL, NEGOTIATION_CHANGED_CHANNEL
from tests.integration.api.conftest import Caller, GraphQL, data
from tests.integration.api.test_live_updates import (
    _next,
    _redis_subscribers,
    _subscribe,
    gateway_process,
)
from tests.support.serving import wait_until

CREATE = """mutation($input: CreateConversationInput!) { createConversation(input: $input) {
  conversation { id } userErrors { code message } } }"""
MESSAGE_ADDED = """subscription($c: ID!) { messageAdded(conversationId: $c) {
  content kind authorUser { id } conversation { id } } }"""
NEGOTIATION_CHANGED = """subscription { negotiationChanged {
  move state version conversation { id state } message { content kind } } }"""


def _user(caller: Caller) -> str:
    return str(relay.GlobalID("User", caller.user_id))


def _create(gql: GraphQL, caller: Caller, kind: str, roles: dict[str, Caller]) -> str:
    participants = [{"userId": _user(c), "role": role} for role, c in roles.items()]
    created = data(
        gql(
            CREATE,
            {"input": {"title": "live", "kind": kind, "participants": participants}},
            caller=caller,
        )
    )["createConversation"]
    assert created["userErrors"] == [], created
    conversation_id: str = created["conversation"]["id"]
    return conversation_id


def _post(base: str, caller: Caller, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx2.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers=caller.headers,
        timeout=30,
    )
    return data(response.json())


@contextmanager
def _socket(base: str, caller: Caller) -> Iterator[ClientConnection]:
    url = base.replace("http", "ws") + "/graphql"
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": caller.api_key}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
        yield ws


def _subscribed(settings: Settings, *channels: str) -> Callable[[], bool]:
    return lambda: all(
        _redis_subscribers(settings, f"{settings.events_namespace}:{channel}") >= 1
        for channel in channels
    )


MOVE = """mutation($c: ID!, $mv: NegotiationMove!, $t: String!) {
  moveNegotiation(input: {conversationId: $c, move: $mv, content: $t}) {
    userErrors { code } } }"""
POST = """mutation($c: ID!, $t: String!) { postMessage(input: {conversationId: $c, content: $t}) {
  userErrors { code } } }"""


def test_messages_and_moves_reach_readers_on_another_gateway(
    settings: Settings, gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> None:
    writer, reader = make_caller("agent"), make_caller("viewer")
    proposer, opponent, mediator = (make_caller("agent") for _ in range(3))
    chat = data(
        gql(
            CREATE,
            {
                "input": {
                    "title": "live",
                    "participants": [{"userId": _user(writer)}, {"userId": _user(reader)}],
                }
            },
            caller=writer,
        )
    )["createConversation"]["conversation"]["id"]
    hidden = _create(
        gql,
        proposer,
        "NEGOTIATION",
        {"PROPOSER": proposer, "OPPONENT": opponent, "MEDIATOR": mediator},
    )
    shared = _create(
        gql,
        proposer,
        "NEGOTIATION",
        {"PROPOSER": proposer, "OPPONENT": opponent, "MEDIATOR": operator},
    )

    # A viewer taking part follows the chat; an operator who takes part only in
    # `shared` follows every negotiation it may read.
    with (
        gateway_process(settings) as first,
        gateway_process(settings) as second,
        _socket(first, reader) as reading,
        _socket(first, operator) as watching,
    ):
        _subscribe(reading, MESSAGE_ADDED, {"c": chat})
        _subscribe(watching, NEGOTIATION_CHANGED, {})
        wait_until(
            _subscribed(settings, MESSAGE_ADDED_CHANNEL, NEGOTIATION_CHANGED_CHANNEL),
            what="both subscriptions to reach Redis",
        )

        assert _post(second, writer, POST, {"c": chat, "t": "over here"})["postMessage"] == {
            "userErrors": []
        }
        event = _next(reading, timeout=30)
        assert event["type"] == "next", event
        assert event["payload"]["data"]["messageAdded"] == {
            "content": "over here",
            "kind": "MESSAGE",
            "authorUser": {"id": _user(writer)},
            "conversation": {"id": chat},
        }

        # A move in a negotiation the operator does not take part in, then one in
        # which it does: events of a channel arrive in order, so the first event it
        # gets being the second move shows the first one was kept from it.
        for conversation in (hidden, shared):
            moved = _post(
                second, proposer, MOVE, {"c": conversation, "mv": "THESIS", "t": "we should"}
            )
            assert moved["moveNegotiation"] == {"userErrors": []}
        event = _next(watching, timeout=30)
        assert event["type"] == "next", event
        assert event["payload"]["data"]["negotiationChanged"] == {
            "move": "THESIS",
            "state": "THESIS",
            "version": 2,
            "conversation": {"id": shared, "state": "THESIS"},
            "message": {"content": "we should", "kind": "THESIS"},
        }


def test_subscribing_to_a_conversation_one_does_not_take_part_in_is_refused(
    gql: GraphQL, make_caller: Callable[[str], Caller], operator: Caller
) -> None:
    writer, other = make_caller("agent"), make_caller("agent")
    chat = data(
        gql(
            CREATE,
            {
                "input": {
                    "title": "closed",
                    "participants": [{"userId": _user(writer)}, {"userId": _user(other)}],
                }
            },
            caller=writer,
        )
    )["createConversation"]["conversation"]["id"]
    with gql.client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(
            json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
        )
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": MESSAGE_ADDED, "variables": {"c": chat}},
                }
            )
        )
        reply = json.loads(ws.receive_text())
        errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
