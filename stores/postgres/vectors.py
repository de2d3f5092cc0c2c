"""pgvector's `vector` type on the pool's connections.

Binary by default, through pgvector's own asyncpg codec: 4 bytes a dimension
instead of a decimal string to format in Python and parse in the server. The text
form is kept only to measure that difference (bench/search.py); SQL is the same
either way (`$1::vector`, a list of floats bound to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
from pgvector import Vector
from pgvector.asyncpg import register_vector

from stores.postgres.options import VectorFormat


async def register_vector_codec(conn: asyncpg.Connection, vector_format: VectorFormat) -> bool:
    """Teach `conn` the `vector` type; False when the extension is not created yet (the
    store replaces such connections once its migrations have created it)."""
    schema = await conn.fetchval(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'vector'"
    )
    if schema is None:
        return False
    if vector_format == "binary":
        await register_vector(conn, schema=schema)
    else:
        await conn.set_type_codec(
            "vector", schema=schema, encoder=_to_text, decoder=_from_text, format="text"
        )
    return True


def vector_array(vectors: Iterable[Sequence[float]]) -> list[Vector]:
    """Vectors for a `vector[]` parameter: asyncpg would read a list of lists as a
    two-dimensional array, so each travels as one pgvector `Vector`."""
    return [Vector(list(vector)) for vector in vectors]


def _to_text(vector: Sequence[float] | Vector) -> str:
    values = vector.to_list() if isinstance(vector, Vector) else vector
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def _from_text(text: str) -> list[float]:
    return [float(x) for x in text[1:-1].split(",")] if len(text) > 2 else []
