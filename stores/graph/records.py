"""Plain records the graph store returns; never driver records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID


class AgentEdge(enum.StrEnum):
    """Relationship types between agents; the only ones a query may filter on."""

    COLLABORATES_WITH = "COLLABORATES_WITH"
    DELEGATES_TO = "DELEGATES_TO"
    PARENT_OF = "PARENT_OF"


@dataclass(frozen=True, slots=True)
class Collaborator:
    agent_id: UUID
    weight: float
    type: AgentEdge


# Named tuples, made by `tuple.__new__` (in C): a neighbourhood has hundreds of each
# (frozen dataclasses took twice as long to build).
class NeighbourNode(NamedTuple):
    agent_id: UUID
    distance: int


class NeighbourEdge(NamedTuple):
    source: UUID
    target: UUID
    type: AgentEdge
    # PARENT_OF carries no weight.
    weight: float | None


@dataclass(frozen=True, slots=True)
class Neighbourhood:
    """Agents within a number of hops (the centre at distance 0) and the edges among them."""

    nodes: list[NeighbourNode]
    edges: list[NeighbourEdge]


@dataclass(frozen=True, slots=True)
class CriticalPath:
    step_ids: list[str]
    total_estimate: float


@dataclass(frozen=True, slots=True)
class AgentDegree:
    agent_id: UUID
    degree: int
