"""Neo4j: the graph projection of PostgreSQL's relationships."""

from stores.graph.options import GraphOptions
from stores.graph.queries import GraphQueries
from stores.graph.records import (
    AgentDegree,
    AgentEdge,
    Collaborator,
    CriticalPath,
    NeighbourEdge,
    Neighbourhood,
    NeighbourNode,
)
from stores.graph.store import GraphStore

__all__ = [
    "AgentDegree",
    "AgentEdge",
    "Collaborator",
    "CriticalPath",
    "GraphOptions",
    "GraphQueries",
    "GraphStore",
    "NeighbourEdge",
    "NeighbourNode",
    "Neighbourhood",
]
