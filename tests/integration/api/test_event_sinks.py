"""Event sinks: admins register HTTP endpoints; task and agent events reach them signed,
at least once, and a sink that is down never fails or slows a write.

The delivery tests run gateways on a database of their own: the shared test gateway
delivers too (it runs the worker), and its slow default retries must not touch
these sinks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from infra.local.profiles import Profile
from tests.conftest import recreate_database
from tests.integration.api.conftest import (
    Caller,
    GraphQL,
    _make_caller,
    data,
    error_codes,
    unique,
)
from tests.support.serving import free_port, wait_until

TOKEN = "sinks-metrics-token"
CREATE = """mutation($url: String!, $events: [String!]!) {
  createEventSink(input: {url: $url, events: $events, description: "test"}) {
    sink { id url events paused } secret userErrors { field code message } } }"""
SINKS = """{ eventSinks { id url events paused deliveredCount retriedCount droppedCount
  pendingCount lastDeliveredAt lastError lastErrorAt } }"""
DELETE = "mutation($id: ID!) { deleteEventSink(input: {id: $id}) { deleted userErrors { code } } }"
PAUSE = """mutation($id: ID!, $p: Boolean!) { pauseEventSink(input: {id: $id, paused: $p}) {
  sink { paused } userErrors { code } } }"""
CREATE_AGENT = "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }"
CREATE_TASK = 'mutation { createTask(input: {title: "sunk"}) { task { id } } }'
UPDATE_TASK = """mutation($id: ID!) { updateTask(input: {id: $id, title: "renamed"}) {
  task { title } userErrors { code } } }"""


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclass
class Receiver:
    """A plain HTTP server on a fixed port, stopped and started again at will."""

    port: int
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def deliveries(self) -> list[Received]:
        with self._lock:
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(free_port())
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def sink_settings(settings: Settings, profile: Profile) -> Settings:
    name = f"polygraph_test_sinks_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    asyncio.run(recreate_database(profile, name))
    return settings.model_copy(
        update={
            "postgres_dsn": SecretStr(profile.postgres_dsn(name)),
            "event_sinks_allow_loopback": True,
            "event_sink_timeout_s": 5.0,
            # Enough attempts that no event runs out of them while a test restarts
            # its receiver; the test of dropping runs a gateway with fewer.
            "event_sink_max_attempts": 50,
            "event_sink_min_backoff_s": 0.05,
            "event_sink_max_backoff_s": 1.0,
            "event_sink_poll_s": 0.05,
            "event_sink_idle_poll_s": 0.4,
            "prometheus_token": SecretStr(TOKEN),
        }
    )


def _signature_ok(secret: str, delivery: Received) -> bool:
    """What a receiver does (README: "Event sinks"), written apart from the gateway's code."""
    parts = dict(item.split("=", 1) for item in delivery.headers["Polygraph-Signature"].split(","))
    signed = parts["t"].encode() + b"." + delivery.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


def _sink(gql: GraphQL, admin: Caller, sink_id: str) -> dict[str, Any]:
    sinks = data(gql(SINKS, caller=admin))["eventSinks"]
    found: dict[str, Any] = next(s for s in sinks if s["id"] == sink_id)
    return found


def _create(gql: GraphQL, admin: Caller, url: str, events: list[str]) -> tuple[str, str]:
    created = data(gql(CREATE, {"url": url, "events": events}, caller=admin))["createEventSink"]
    assert created["userErrors"] == [], created
    return created["sink"]["id"], created["secret"]


def test_events_reach_a_sink_signed_and_survive_its_outage(
    sink_settings: Settings, receiver: Receiver
) -> None:
    with TestClient(create_app(sink_settings)) as client:
        # After the lifespan has migrated the database.
        admin = asyncio.run(_make_caller(sink_settings, "admin"))
        gql = GraphQL(client)
        sink_id, secret = _create(gql, admin, receiver.url, ["task.*", "agent.create"])
        assert secret.startswith("whsec_") and len(secret) > 40

        assert data(gql(CREATE_AGENT, {"n": unique("sunk")}, caller=admin))["createAgent"]
        task_id = data(gql(CREATE_TASK, caller=admin))["createTask"]["task"]["id"]
        assert data(gql(UPDATE_TASK, {"id": task_id}, caller=admin))["updateTask"]["task"]
        wait_until(lambda: len(receiver.events()) >= 3, what="three events")

        deliveries = receiver.deliveries()
        assert all(_signature_ok(secret, d) for d in deliveries)
        assert not _signature_ok("whsec_wrong", deliveries[0])
        events = receiver.events()
        assert sorted(e["type"] for e in events) == ["agent.create", "task.create", "task.update"]
        assert len({e["id"] for e in events}) == 3
        assert all(d.headers["Polygraph-Event-Id"] == d.event["id"] for d in deliveries)
        renamed = next(e for e in events if e["type"] == "task.update")
        assert renamed["data"]["old"]["title"] == "sunk"
        assert renamed["data"]["new"]["title"] == "renamed"
        assert renamed["actorId"] == admin.user_id
        wait_until(lambda: _sink(gql, admin, sink_id)["deliveredCount"] == 3, what="the count")

        # The sink goes down: writes go on succeeding, and the failures are counted.
        receiver.stop()
        for _ in range(3):
            assert data(gql(CREATE_TASK, caller=admin))["createTask"]["task"]["id"]

        def failed_for_all() -> bool:
            sink = _sink(gql, admin, sink_id)
            return bool(sink["pendingCount"] == 3 and sink["retriedCount"] >= 3)

        wait_until(failed_for_all, what="failed attempts")
        failing = _sink(gql, admin, sink_id)
        assert failing["lastError"] and failing["lastErrorAt"]
        assert failing["droppedCount"] == 0 and failing["deliveredCount"] == 3

        # Back up: what waited arrives.
        receiver.start()
        wait_until(lambda: len(receiver.events()) >= 6, what="the events of the outage")
        assert sum(e["type"] == "task.create" for e in receiver.events()) == 4
        wait_until(lambda: _sink(gql, admin, sink_id)["pendingCount"] == 0, what="an empty queue")
        assert _sink(gql, admin, sink_id)["deliveredCount"] >= 6

        # Paused, its cursor stands still; resumed, it receives what happened meanwhile.
        assert data(gql(PAUSE, {"id": sink_id, "p": True}, caller=admin))["pauseEventSink"][
            "sink"
        ] == {"paused": True}
        seen = len(receiver.events())
        assert data(gql(CREATE_TASK, caller=admin))["createTask"]["task"]["id"]
        assert data(gql(PAUSE, {"id": sink_id, "p": False}, caller=admin))
        wait_until(lambda: len(receiver.events()) == seen + 1, what="the paused event")

        metrics = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        assert f'polygraph_event_sink_delivered_total{{sink="{sink_id}"}}' in metrics
        assert f'polygraph_event_sink_retried_total{{sink="{sink_id}"}}' in metrics

        assert data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"] == {
            "deleted": True,
            "userErrors": [],
        }


def test_an_idle_delivery_is_woken_by_writes_here_and_elsewhere(
    sink_settings: Settings, receiver: Receiver
) -> None:
    # Looking every five minutes while idle: only wake-ups can make these quick.
    idle = sink_settings.model_copy(update={"event_sink_idle_poll_s": 300.0})
    # A replica that delivers, and hears the other's writes through its projector's
    # outbox listener alone; and one that writes, delivering and listening to nothing.
    writing = idle.model_copy(update={"event_sinks_enabled": False, "projector_enabled": False})
    with TestClient(create_app(idle)) as delivering, TestClient(create_app(writing)) as writer:
        admin = asyncio.run(_make_caller(sink_settings, "admin"))
        here, there = GraphQL(delivering), GraphQL(writer)
        sink_id, _ = _create(here, admin, receiver.url, ["agent.create"])
        assert data(there(CREATE_AGENT, {"n": unique("elsewhere")}, caller=admin))
        wait_until(lambda: len(receiver.events()) == 1, what="another's event", timeout=30)

        # What waited while the sink was paused arrives once it is resumed, long before
        # the idle poll: the write's NOTIFY, or the resume (audited, so its operation's
        # end), wakes the delivery, whichever comes after the look that passed it over.
        assert data(here(PAUSE, {"id": sink_id, "p": True}, caller=admin))
        assert data(there(CREATE_AGENT, {"n": unique("waited")}, caller=admin))
        assert data(here(PAUSE, {"id": sink_id, "p": False}, caller=admin))
        wait_until(lambda: len(receiver.events()) == 2, what="the paused event", timeout=30)

    # Alone and listening to nothing: its own write wakes it.
    alone = idle.model_copy(update={"projector_enabled": False})
    with TestClient(create_app(alone)) as client:
        gql = GraphQL(client)
        assert data(gql(CREATE_AGENT, {"n": unique("here")}, caller=admin))["createAgent"]
        wait_until(lambda: len(receiver.events()) == 3, what="its own event", timeout=30)
        assert data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]["deleted"]


def test_a_sink_that_stays_down_has_its_events_dropped_and_counted(
    sink_settings: Settings, receiver: Receiver
) -> None:
    impatient = sink_settings.model_copy(
        update={
            "event_sink_max_attempts": 2,
            "event_sink_max_backoff_s": 0.1,
            "event_sink_timeout_s": 0.5,
        }
    )
    # A sink that takes the connection and never answers: the timeout bounds each attempt.
    with socket.socket() as silent, TestClient(create_app(impatient)) as client:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        admin = asyncio.run(_make_caller(sink_settings, "admin"))
        gql = GraphQL(client)
        down_id, _ = _create(gql, admin, receiver.url, ["agent.*"])
        mute_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks"
        mute_id, _ = _create(gql, admin, mute_url, ["agent.*"])
        receiver.stop()
        for _ in range(2):
            assert data(gql(CREATE_AGENT, {"n": unique("dropped")}, caller=admin))

        def both_dropped() -> bool:
            return all(_sink(gql, admin, i)["droppedCount"] == 2 for i in (down_id, mute_id))

        wait_until(both_dropped, what="two drops per sink")
        for sink_id in (down_id, mute_id):
            dropped = _sink(gql, admin, sink_id)
            assert dropped["retriedCount"] == 2 and dropped["pendingCount"] == 0
            assert dropped["deliveredCount"] == 0 and dropped["lastError"]
        mute_error = _sink(gql, admin, mute_id)["lastError"]
        assert "Timeout" in mute_error or "no answer" in mute_error
        metrics = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        for sink_id in (down_id, mute_id):
            assert f'polygraph_event_sink_dropped_total{{sink="{sink_id}"}} 2.0' in metrics
            assert data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]["deleted"]


def test_a_sink_that_never_answers_does_not_hold_up_the_others(
    sink_settings: Settings, receiver: Receiver
) -> None:
    # Two slots: the silent sink may hold one, however many of its events are due.
    patient = sink_settings.model_copy(
        update={"event_sink_timeout_s": 60.0, "event_sink_concurrency": 2}
    )
    held: list[socket.socket] = []

    def hold_connections(listener: socket.socket) -> None:
        with suppress(OSError):  # the listener closes at the end
            while True:
                held.append(listener.accept()[0])

    with socket.socket() as silent, TestClient(create_app(patient)) as client:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        threading.Thread(target=hold_connections, args=(silent,), daemon=True).start()
        admin = asyncio.run(_make_caller(sink_settings, "admin"))
        gql = GraphQL(client)
        mute_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hooks"
        mute_id, _ = _create(gql, admin, mute_url, ["agent.*"])
        healthy_id, _ = _create(gql, admin, receiver.url, ["task.*"])
        for _ in range(3):
            assert data(gql(CREATE_AGENT, {"n": unique("unanswered")}, caller=admin))
        wait_until(lambda: len(held) == 1, what="an attempt waiting on the silent sink")

        for _ in range(3):
            assert data(gql(CREATE_TASK, caller=admin))["createTask"]["task"]["id"]
        wait_until(lambda: len(receiver.events()) == 3, what="the other sink's events")
        waiting = _sink(gql, admin, mute_id)
        assert (waiting["retriedCount"], waiting["pendingCount"]) == (0, 3), "still waiting"
        assert len(held) == 1
        for sink_id in (mute_id, healthy_id):
            assert data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]["deleted"]
    for connection in held:
        connection.close()


def test_two_gateways_share_the_deliveries_and_send_each_event_once(
    sink_settings: Settings, receiver: Receiver
) -> None:
    apps = (create_app(sink_settings), create_app(sink_settings))
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        admin = asyncio.run(_make_caller(sink_settings, "admin"))
        gateways = (GraphQL(first), GraphQL(second))
        sink_id, secret = _create(gateways[0], admin, receiver.url, ["task.create"])
        for i in range(20):
            assert data(gateways[i % 2](CREATE_TASK, caller=admin))["createTask"]["task"]
        wait_until(
            lambda: _sink(gateways[1], admin, sink_id)["deliveredCount"] == 20,
            what="twenty deliveries",
        )
        events = receiver.events()
        assert len(events) == len({e["id"] for e in events}) == 20
        assert all(_signature_ok(secret, d) for d in receiver.deliveries())
        # Each gateway counts what it delivered itself; together, each event once.
        counts = [app.state.stores.event_sinks.counts for app in apps]
        assert sum(c[UUID(sink_id)].delivered for c in counts if UUID(sink_id) in c) == 20
        assert data(gateways[0](DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]


def test_only_admins_manage_event_sinks(
    gql: GraphQL, admin: Caller, operator: Caller, viewer: Caller
) -> None:
    url = "https://hooks.example.test/polygraph"
    for caller in (operator, viewer):
        assert error_codes(gql(CREATE, {"url": url, "events": ["task.*"]}, caller=caller)) == [
            "FORBIDDEN"
        ]
        assert error_codes(gql(SINKS, caller=caller)) == ["FORBIDDEN"]
    assert error_codes(gql(SINKS)) == ["UNAUTHENTICATED"]
    sink_id, _ = _create(gql, admin, url, ["task.*"])
    try:
        for caller in (operator, viewer):
            assert error_codes(gql(DELETE, {"id": sink_id}, caller=caller)) == ["FORBIDDEN"]
            refused = gql(PAUSE, {"id": sink_id, "p": True}, caller=caller)
            assert error_codes(refused) == ["FORBIDDEN"]
        listed = data(gql(SINKS, caller=admin))["eventSinks"]
        assert [s["url"] for s in listed if s["id"] == sink_id] == [url]
        assert "secret" not in json.dumps(listed)
        one_sink = gql.last_round_trips
        other_id, _ = _create(gql, admin, url + "/other", ["agent.*"])
        assert len(data(gql(SINKS, caller=admin))["eventSinks"]) == len(listed) + 1
        assert gql.last_round_trips == one_sink, "a sink more costs no round trip more"
        assert data(gql(DELETE, {"id": other_id}, caller=admin))["deleteEventSink"]["deleted"]
    finally:
        assert data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]["deleted"]
    gone = data(gql(DELETE, {"id": sink_id}, caller=admin))["deleteEventSink"]
    assert gone == {"deleted": False, "userErrors": []}


@pytest.mark.parametrize(
    ("url", "events", "field"),
    [
        ("ftp://hooks.example.test/x", ["task.*"], "url"),
        ("https://user:pass@hooks.example.test/x", ["task.*"], "url"),
        ("https://hooks.example.test/" + "x" * 2048, ["task.*"], "url"),
        ("https://hooks.example.test/a\nb", ["task.*"], "url"),
        ("https://hooks.example.test/\u0000", ["task.*"], "url"),
        # The shared gateway does not allow loopback or link-local sinks.
        ("http://127.0.0.1:8000/hooks", ["task.*"], "url"),
        ("http://localhost/hooks", ["task.*"], "url"),
        ("http://169.254.169.254/latest/meta-data", ["task.*"], "url"),
        ("http://[::ffff:127.0.0.1]/hooks", ["task.*"], "url"),
        ("https://hooks.example.test/x", [], "events"),
        ("https://hooks.example.test/x", ["user.*"], "events"),
        ("https://hooks.example.test/x", ["task"], "events"),
        # `$` alone would let a final newline through.
        ("https://hooks.example.test/x", ["task.*\n"], "events"),
        ("https://hooks.example.test/x", [f"task.a{i}" for i in range(21)], "events"),
    ],
)
def test_bad_sinks_are_refused_with_the_field_at_fault(
    gql: GraphQL, admin: Caller, url: str, events: list[str], field: str
) -> None:
    created = data(gql(CREATE, {"url": url, "events": events}, caller=admin))["createEventSink"]
    assert created["sink"] is None and created["secret"] is None
    assert [(e["field"], e["code"]) for e in created["userErrors"]] == [(field, "BAD_USER_INPUT")]


@pytest.mark.parametrize("description", ["x" * 501, "a\u0000b"])
def test_a_bad_description_is_refused(gql: GraphQL, admin: Caller, description: str) -> None:
    create = """mutation($d: String!) { createEventSink(input: {url: "https://hooks.example.test/d",
      events: ["task.*"], description: $d}) { sink { id } userErrors { code } } }"""
    refused = data(gql(create, {"d": description}, caller=admin))["createEventSink"]
    assert refused == {"sink": None, "userErrors": [{"code": "BAD_USER_INPUT"}]}
    listed = data(gql(SINKS, caller=admin))["eventSinks"]
    assert not [s for s in listed if s["url"] == "https://hooks.example.test/d"]


def test_a_retried_creation_answers_the_same_sink_and_secret(gql: GraphQL, admin: Caller) -> None:
    create = """mutation($url: String!, $key: String) {
      createEventSink(input: {url: $url, events: ["task.*"], idempotencyKey: $key}) {
        sink { id } secret userErrors { code } } }"""
    variables = {"url": "https://hooks.example.test/" + unique("retried"), "key": unique("key")}
    first = data(gql(create, variables, caller=admin))["createEventSink"]
    again = data(gql(create, variables, caller=admin))["createEventSink"]
    assert again == first and first["secret"]
    listed = data(gql(SINKS, caller=admin))["eventSinks"]
    assert [s["id"] for s in listed if s["url"] == variables["url"]] == [first["sink"]["id"]]
    delete = """mutation($id: ID!, $key: String) {
      deleteEventSink(input: {id: $id, idempotencyKey: $key}) { deleted } }"""
    removal = {"id": first["sink"]["id"], "key": unique("key")}
    assert data(gql(delete, removal, caller=admin))["deleteEventSink"] == {"deleted": True}
    assert data(gql(delete, removal, caller=admin))["deleteEventSink"] == {"deleted": True}


def test_a_malformed_sink_id_is_bad_input(gql: GraphQL, admin: Caller) -> None:
    refused = data(gql(PAUSE, {"id": "not-a-uuid", "p": True}, caller=admin))["pauseEventSink"]
    assert refused == {"sink": None, "userErrors": [{"code": "BAD_USER_INPUT"}]}
