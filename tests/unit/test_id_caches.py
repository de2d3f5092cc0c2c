"""Ids are remembered by text only at an id's length: a client may send megabytes."""

from __future__ import annotations

import base64
import uuid

from schema import relay
from schema.relay import decode_id, global_id


def _text(type_name: str, node_id: str) -> str:
    return base64.b64encode(f"{type_name}:{node_id}".encode()).decode()


def test_an_id_of_this_api_is_remembered() -> None:
    text = _text("Agent", str(uuid.uuid4()))
    assert global_id(text) is global_id(text)
    node_id = uuid.uuid4()
    decoded = decode_id(_text("Agent", str(node_id)), "Agent", field="id")
    assert decoded == node_id
    assert relay._uuid(str(node_id)) is decoded


def test_a_long_id_that_parses_is_not_kept() -> None:
    # `UUID` drops hyphens: this is a UUID, a megabyte long.
    node_id = uuid.uuid4()
    long_node_id = "-" * 1_000_000 + node_id.hex
    text = _text("Agent", long_node_id)
    kept = relay.global_id.cache_info().currsize, relay._uuid.cache_info().currsize
    assert global_id(text).node_id == long_node_id
    assert decode_id(text, "Agent", field="id") == node_id
    after = relay.global_id.cache_info().currsize, relay._uuid.cache_info().currsize
    assert after == kept
