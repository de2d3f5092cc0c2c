"""Relay global ids and GraphQL scalar formats, written out by hand for the floor."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID


def global_id(type_name: str, node_id: UUID | str) -> str:
    """What the gateway's `id` fields hold: base64 of `Type:uuid`."""
    return base64.b64encode(f"{type_name}:{node_id}".encode()).decode()


def iso(value: datetime | None) -> str | None:
    """A `DateTime` as the gateway serialises it."""
    return None if value is None else value.isoformat()
