"""Rate limits: per caller by role, per address when anonymous, per address for `login`;
429 with Retry-After when refused; RateLimit headers on every response; shared by
gateways through Redis, kept in memory while Redis is away.

Each test runs its own gateway with small quotas. Anonymous callers come from
addresses of their own (documentation ranges), so no two tests share a bucket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
from graphql import get_operation_ast, parse
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.limits.cost import CostPlan
from gateway.settings import Settings
from schema import build_schema
from tests.integration.api.conftest import (
    Caller,
    GraphQL,
    data,
    error_codes,
    parse_round_trips,
    unique,
)

QUOTAS = {
    "rate_limit_anonymous": 3,
    "rate_limit_viewer": 3,
    "rate_limit_operator": 3,
    "rate_limit_login": 2,
    # Operations alone: `{ __typename }` costs 1 (test_every_request_costs_its_own_points).
    "rate_limit_request": 0,
    "rate_limit_body_bytes_per_point": 0,
}


def _address() -> str:
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def _limited(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={
            "projector_enabled": False,
            "embedding_filler_enabled": False,
            **QUOTAS,
            **update,
        }
    )


@contextmanager
def gateway(settings: Settings, *, address: str | None = None) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=(address or _address(), 50000)) as client:
        yield client


def _post(
    client: TestClient, query: str, caller: Caller | None = None, **kw: Any
) -> httpx2.Response:
    headers = {**(caller.headers if caller else {}), **kw.pop("headers", {})}
    return client.post("/graphql", json={"query": query, **kw}, headers=headers)


def _remaining(response: httpx2.Response, policy: str) -> int:
    match = re.search(rf'"{policy}";r=(\d+);t=(\d+)', response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match.group(1))


def test_every_response_says_its_quota_and_what_is_left(gql: GraphQL, operator: Caller) -> None:
    first = _post(gql.client, "{ __typename }", operator)
    second = _post(gql.client, "{ __typename }", operator)
    policy = first.headers["ratelimit-policy"]
    assert re.fullmatch(r'"operator";q=\d+;w=\d+', policy), policy
    assert second.headers["ratelimit-policy"] == policy
    # Units come back continuously (one every 5 ms at 12,000 a minute): at most full.
    assert _remaining(second, "operator") < int(policy.split("q=")[1].split(";")[0])
    # Refusals and malformed requests carry them too.
    broken = gql.client.post(
        "/graphql",
        content=b"{not json",
        headers={**operator.headers, "content-type": "application/json"},
    )
    assert broken.status_code == 400
    assert broken.headers["ratelimit-policy"] == policy


def test_a_request_is_charged_once_with_its_operation_before_it_runs(
    gql: GraphQL, operator: Caller
) -> None:
    # Executed: the request's points and its operation's cost in one script call;
    # refused before execution (here a syntax error): the request's points alone, in
    # one call when it is answered.
    for query, status in (("{ __typename }", 200), ("{ __typename", 400)):
        response = _post(gql.client, query, operator)
        assert response.status_code == status
        assert parse_round_trips(response.headers["x-round-trips"])["redis"] == 1
        assert response.headers["ratelimit-policy"].startswith('"operator"')


def test_a_read_by_id_with_a_session_costs_one_redis_round_trip(
    settings: Settings, gql: GraphQL, operator: Caller
) -> None:
    # Bench S1: one agent by id, signed in with a session (checked once, then cached).
    login = "mutation($k: String!) { login(input: {apiKey: $k}) { token } }"
    token = data(gql(login, {"k": operator.api_key}))["login"]["token"]
    created = gql(
        "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
        {"n": unique("by-id")},
        caller=operator,
    )
    agent_id = data(created)["createAgent"]["agent"]["id"]
    query = "query($id: ID!) { node(id: $id) { ... on Agent { name role } } }"
    cached = settings.model_copy(update={"session_cache_s": 60.0})
    with gateway(cached) as client:
        bearer = {"authorization": f"Bearer {token}"}
        for _ in range(2):
            response = _post(client, query, headers=bearer, variables={"id": agent_id})
        assert response.status_code == 200, response.text
        assert data(response.json())["node"]["name"].startswith("by-id")
        trips = parse_round_trips(response.headers["x-round-trips"])
        assert trips["redis"] == 1, trips
        assert response.headers["ratelimit-policy"].startswith('"operator"')


def test_a_lease_serves_a_callers_next_requests_without_redis(
    settings: Settings, gql: GraphQL, viewer: Caller
) -> None:
    # 3,200 points a day lend 100 (the default divisor, 32): three more requests of
    # `{ __typename }` (26 points), counted as they would be in Redis. A point comes
    # back every 27 s: one at most while the test runs.
    lending = _limited(
        settings,
        rate_limit_viewer=3_200,
        rate_limit_window_s=86_400,
        rate_limit_request=25,
        rate_limit_lease_divisor=32,
        session_cache_s=60.0,
    )
    login = "mutation($k: String!) { login(input: {apiKey: $k}) { token } }"
    token = data(gql(login, {"k": viewer.api_key}))["login"]["token"]
    bearer = {"authorization": f"Bearer {token}"}
    with gateway(lending) as client:
        responses = [_post(client, "{ __typename }", headers=bearer) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    trips = [parse_round_trips(r.headers["x-round-trips"])["redis"] for r in responses]
    # The first asks Redis (and checks the session): the others spend the lease.
    assert trips[0] >= 1 and trips[1:] == [0, 0, 0]
    left = [_remaining(r, "viewer") for r in responses]
    # (Less a point if the suite's own charges to this user are still ahead.)
    assert 3_200 - 27 <= left[0] <= 3_200 - 26
    assert all(25 <= earlier - later <= 26 for earlier, later in itertools.pairwise(left))
    assert left[0] - left[-1] >= 3 * 26 - 1


def test_every_request_costs_its_own_points(settings: Settings, viewer: Caller) -> None:
    # 25 points for the request itself, on top of the operation's estimate: a request
    # refused before it executes costs them alone.
    limited = _limited(
        settings, rate_limit_request=25, rate_limit_viewer=100, rate_limit_window_s=3600
    )
    with gateway(limited) as client:
        ran = _post(client, "{ __typename }", viewer)
        assert ran.status_code == 200
        assert _remaining(ran, "viewer") == 100 - 26
        malformed = _post(client, "{ __typename", viewer)
        assert malformed.status_code == 400
        assert _remaining(malformed, "viewer") == 100 - 26 - 25
        too_complex = _post(
            client, "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }", viewer
        )
        assert error_codes(too_complex.json()) == ["QUERY_TOO_COMPLEX"]
        assert _remaining(too_complex, "viewer") == 100 - 26 - 25 - 25
        # Left: 24 points, less than a request's own.
        assert _post(client, "{ __typename }", viewer).status_code == 429


def test_a_body_costs_a_point_per_bytes_before_it_is_read(
    settings: Settings, viewer: Caller
) -> None:
    # A document refused again from memory (gateway.limits.known_refusals) was still
    # taken in: its body is charged before anything reads it, each time.
    quota, window_s = 10_000, 86_400
    limited = _limited(
        settings,
        rate_limit_request=25,
        rate_limit_body_bytes_per_point=32,
        rate_limit_viewer=quota,
        rate_limit_window_s=window_s,
    )
    document = "{ " + " ".join(f"alias{i}: __typename" for i in range(200)) + " }"
    body = json.dumps({"query": document}).encode()
    started = time.monotonic()

    def refilled() -> int:
        # The bucket earns points back as it goes (one per 8.6 s here): a slow machine
        # may hand some back between requests, never more than this.
        return math.ceil((time.monotonic() - started) * quota / window_s)

    with gateway(limited) as client:
        left = quota
        for _ in range(2):
            refused = client.post(
                "/graphql",
                content=body,
                headers={**viewer.headers, "content-type": "application/json"},
            )
            assert error_codes(refused.json()) == ["QUERY_TOO_COMPLEX"]
            left -= 25 + len(body) // 32
            assert left <= _remaining(refused, "viewer") <= left + refilled()
        # An operation that runs pays its body once, with its request's points.
        ran = _post(client, "{ __typename }", viewer)
        assert ran.status_code == 200
        small = len(json.dumps({"query": "{ __typename }"}).encode())
        left -= 25 + small // 32 + 1
        assert left <= _remaining(ran, "viewer") <= left + refilled()


def test_a_caller_over_its_quota_gets_429_with_retry_after(
    settings: Settings, viewer: Caller
) -> None:
    with gateway(_limited(settings)) as client:
        allowed = [_post(client, "{ __typename }", viewer) for _ in range(3)]
        assert [r.status_code for r in allowed] == [200, 200, 200]
        assert [_remaining(r, "viewer") for r in allowed] == [2, 1, 0]

        refused = _post(client, "{ __typename }", viewer)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-policy"] == '"viewer";q=3;w=60'
        assert _remaining(refused, "viewer") == 0
        (error,) = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] == int(refused.headers["retry-after"])
        assert "retry in" in error["message"]
        # Once this process knows the bucket is empty, it refuses without asking Redis.
        again = _post(client, "{ __typename }", viewer)
        assert again.status_code == 429
        assert parse_round_trips(again.headers["x-round-trips"]).get("redis", 0) == 0


def test_anonymous_callers_share_their_address_bucket(settings: Settings, viewer: Caller) -> None:
    with gateway(_limited(settings)) as client:
        codes = [_post(client, "{ __typename }").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = _post(client, "{ __typename }")
        assert refused.headers["ratelimit-policy"] == '"anonymous";q=3;w=60'
        # A signed-in caller from the same address has a bucket of its own.
        assert _post(client, "{ __typename }", viewer).status_code == 200


def test_login_is_limited_per_address_before_postgres_is_asked(settings: Settings) -> None:
    login = 'mutation { login(input: {apiKey: "pg_guess_%s"}) { token } }'
    with gateway(_limited(settings, rate_limit_anonymous=100)) as client:
        tries = [_post(client, login % secrets.token_hex(8)) for _ in range(2)]
        assert all(error_codes(t.json()) == ["UNAUTHENTICATED"] for t in tries)
        refused = _post(client, login % secrets.token_hex(8))
        assert refused.status_code == 429
        assert error_codes(refused.json()) == ["RATE_LIMITED"]
        assert '"login";q=2;w=60' in refused.headers["ratelimit-policy"]
        assert parse_round_trips(refused.headers["x-round-trips"]).get("postgres", 0) == 0
        # Other operations from that address still run.
        assert _post(client, "{ __typename }").status_code == 200


def test_every_login_field_of_an_operation_counts(settings: Settings) -> None:
    guesses = " ".join(
        f'g{i}: login(input: {{apiKey: "pg_guess_{i}"}}) {{ token }}' for i in range(3)
    )
    with gateway(_limited(settings, rate_limit_anonymous=100)) as client:
        # Three attempts against a quota of two: it cannot run, whatever the wait.
        refused = _post(client, f"mutation {{ {guesses} }}")
        assert refused.status_code == 429
        assert "more than the whole 'login' quota" in refused.json()["errors"][0]["message"]
        # Through a fragment, twice: still two attempts (fields merge by response key).
        fragment = 'mutation { ...Guess ...Guess } fragment Guess on Mutation { a: login(input: {apiKey: "pg_a"}) { token } b: login(input: {apiKey: "pg_b"}) { token } }'
        assert "RATE_LIMITED" not in error_codes(_post(client, fragment).json())
        assert error_codes(_post(client, fragment).json()) == ["RATE_LIMITED"]


def _cost(body: dict[str, Any]) -> int:
    requested: int = body["extensions"]["cost"]["requested"]
    return requested


def test_an_operation_is_charged_its_cost_and_refused_before_it_runs(
    settings: Settings, gql: GraphQL, operator: Caller, admin: Caller
) -> None:
    create = (
        "mutation($n: String!, $k: String) {"
        " createAgent(input: {name: $n, idempotencyKey: $k}) { agent { name } } }"
    )
    # The static cost model's estimate (extensions.cost), from the suite's gateway; asked
    # by another user, since gateways on one Redis share each user's bucket.
    cost = _cost(gql(create, {"n": unique("priced")}, caller=admin))
    assert cost > 1
    # Room for two and a half such operations: the third is refused. Counted over an
    # hour, so that what comes back while the test runs is less than a point.
    quota = cost * 5 // 2
    with gateway(_limited(settings, rate_limit_operator=quota, rate_limit_window_s=3600)) as client:
        key = unique("key")
        first = _post(client, create, operator, variables={"n": unique("costly"), "k": key})
        assert data(first.json())["createAgent"]["agent"]
        assert _remaining(first, "operator") == quota - cost
        # A replay (same idempotencyKey) is charged like any operation: the limiter
        # decides before anything is looked up.
        replay = _post(client, create, operator, variables={"n": unique("costly"), "k": key})
        assert data(replay.json())["createAgent"] == data(first.json())["createAgent"]
        assert _remaining(replay, "operator") == quota - 2 * cost

        name = unique("refused")
        refused = _post(client, create, operator, variables={"n": name})
        assert refused.status_code == 429
        assert error_codes(refused.json()) == ["RATE_LIMITED"]
        assert "data" not in refused.json()
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["errors"][0]["extensions"]["retryAfter"] == int(
            refused.headers["retry-after"]
        )
    # The refused mutation wrote nothing (asked of the suite's gateway, with its own quotas).
    found = gql(
        "query($q: String) { agents(filter: {nameContains: $q}) { totalCount } }",
        {"q": name},
        caller=admin,
    )
    assert data(found)["agents"]["totalCount"] == 0


def test_an_operation_dearer_than_the_whole_quota_is_refused_for_good(
    settings: Settings, gql: GraphQL, viewer: Caller, admin: Caller
) -> None:
    query = "{ agents(first: 50) { edges { node { name tasks(first: 50) { totalCount } } } } }"
    cost = _cost(gql(query, caller=admin))
    limited = _limited(settings, rate_limit_viewer=cost - 1, rate_limit_window_s=3600)
    with gateway(limited) as client:
        refused = _post(client, query, viewer)
        assert refused.status_code == 429
        message = refused.json()["errors"][0]["message"]
        assert f"costs {cost} points, more than the whole 'viewer' quota" in message
        # Waiting would not help: no Retry-After.
        assert "retry-after" not in refused.headers
        assert "retryAfter" not in refused.json()["errors"][0]["extensions"]
        # Only the request's own point was taken.
        assert _remaining(refused, "viewer") == cost - 2


async def test_a_concurrent_burst_is_refused_exactly_at_the_quota(
    settings: Settings, viewer: Caller
) -> None:
    # 25 points a request plus one for `{ __typename }`, and its body's: room for
    # exactly seven of twenty sent at once, over an hour (nothing comes back meanwhile).
    body = json.dumps({"query": "{ __typename }"}).encode()
    each = 25 + 1 + len(body) // 32
    limited = _limited(
        settings,
        rate_limit_request=25,
        rate_limit_body_bytes_per_point=32,
        rate_limit_viewer=each * 7 + each // 2,
        rate_limit_window_s=3600,
        migrate_on_start=False,
    )
    app = create_app(limited)
    transport = httpx2.ASGITransport(app=app, client=(_address(), 50000))
    headers = {**viewer.headers, "content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        burst = await asyncio.gather(
            *(client.post("/graphql", content=body, headers=headers) for _ in range(20))
        )
    codes = sorted(r.status_code for r in burst)
    assert codes == [200] * 7 + [429] * 13, codes
    assert all(error_codes(r.json()) == ["RATE_LIMITED"] for r in burst if r.status_code == 429)


def test_two_gateways_on_one_redis_share_the_buckets(settings: Settings, viewer: Caller) -> None:
    limited = _limited(settings)
    with gateway(limited) as one, gateway(limited) as two:
        assert _post(one, "{ __typename }", viewer).status_code == 200
        assert _post(two, "{ __typename }", viewer).status_code == 200
        assert _post(one, "{ __typename }", viewer).status_code == 200
        assert _post(two, "{ __typename }", viewer).status_code == 429
        assert _post(one, "{ __typename }", viewer).status_code == 429


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_limits_hold_in_memory_while_redis_is_down(settings: Settings, viewer: Caller) -> None:
    no_redis = _limited(settings, redis_url=SecretStr(f"redis://127.0.0.1:{_closed_port()}/0"))
    with gateway(no_redis) as client:
        responses = [_post(client, "{ __typename }", viewer) for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert [_remaining(r, "viewer") for r in responses[:3]] == [2, 1, 0]
        assert responses[3].headers["retry-after"]
        rate_limits = client.app.state.stores.rate_limits  # type: ignore[attr-defined]
        assert rate_limits.store.fallback_active


def _price(query: str) -> int:
    """The static cost model's estimate of `query`, as the gateway makes it."""
    schema = build_schema()._schema
    document = parse(query)
    operation = get_operation_ast(document)
    assert operation is not None
    return CostPlan.of(schema, operation, {}).requested({})


def test_a_subscription_is_charged_when_it_starts(settings: Settings, viewer: Caller) -> None:
    subscribe = "subscription { healthUpdates(intervalSeconds: 1) { status } }"
    # Room for three and a half subscriptions, over an hour: the fourth is refused.
    quota = _price(subscribe) * 7 // 2
    limited = _limited(settings, rate_limit_viewer=quota, rate_limit_window_s=3600)
    with (
        gateway(limited) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_text(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        for operation_id in ("1", "2", "3"):
            ws.send_text(
                json.dumps(
                    {"id": operation_id, "type": "subscribe", "payload": {"query": subscribe}}
                )
            )
            assert json.loads(ws.receive_text())["type"] == "next"
        ws.send_text(json.dumps({"id": "4", "type": "subscribe", "payload": {"query": subscribe}}))
        reply = json.loads(ws.receive_text())
        while reply.get("id") != "4":
            reply = json.loads(ws.receive_text())
        assert reply["type"] in ("next", "error")
        errors = reply["payload"]["errors"] if reply["type"] == "next" else reply["payload"]
        assert errors[0]["extensions"]["code"] == "RATE_LIMITED"


def test_forwarded_addresses_count_only_from_trusted_proxies(settings: Settings) -> None:
    proxy = "127.0.0.1"
    limited = _limited(settings, rate_limit_anonymous=1)
    first, second = _address(), _address()

    def ask(client: TestClient, forwarded_for: str) -> int:
        headers = {"x-forwarded-for": forwarded_for}
        return _post(client, "{ __typename }", headers=headers).status_code

    trusting = limited.model_copy(update={"trusted_proxies": f"{proxy}, 10.0.0.0/8"})
    with gateway(trusting, address=proxy) as client:
        assert ask(client, first) == 200
        assert ask(client, first) == 429
        assert ask(client, second) == 200
    # By default the header is nobody's word: the peer's address is the client's.
    with gateway(limited) as client:
        assert ask(client, _address()) == 200
        assert ask(client, _address()) == 429


def test_api_keys_that_fail_cost_login_attempts(settings: Settings, viewer: Caller) -> None:
    guesses = [{"x-api-key": f"pg_guess{i}_{secrets.token_hex(20)}"} for i in range(3)]
    with gateway(_limited(settings)) as client:
        assert [_post(client, "{ __typename }", headers=g).status_code for g in guesses[:2]] == [
            401,
            401,
        ]
        # Out of attempts: refused before PostgreSQL is asked, valid key or not.
        for headers in (guesses[2], viewer.headers):
            refused = _post(client, "{ __typename }", headers=headers)
            assert refused.status_code == 429
            assert error_codes(refused.json()) == ["RATE_LIMITED"]
            assert int(refused.headers["retry-after"]) >= 1
            assert parse_round_trips(refused.headers["x-round-trips"]).get("postgres", 0) == 0
        # Calls without a key go on.
        assert _post(client, "{ __typename }").status_code == 200
        # WebSockets sign in the same way.
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(
                json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}})
            )
            assert ws.receive()["code"] == 4403


def test_ingest_batches_are_charged_too(settings: Settings, operator: Caller) -> None:
    with gateway(_limited(settings)) as client:
        answers = [
            client.post("/ingest/metrics", content=b"", headers=operator.headers) for _ in range(4)
        ]
        assert [a.status_code for a in answers][3] == 429
        assert answers[0].headers["ratelimit-policy"] == '"operator";q=3;w=60'
        assert error_codes(answers[3].json()) == ["RATE_LIMITED"]
