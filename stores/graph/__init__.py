"""Neo4j: the graph projection of PostgreSQL's relationships."""

from stores.graph.options import GraphOptions
from stores.graph.store import GraphStore

__all__ = ["GraphOptions", "GraphStore"]
