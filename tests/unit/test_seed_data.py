from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

from seeding.platform import generate_agents, generate_relationships, generate_tasks

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _dataset(seed: int) -> tuple[list[object], list[object], list[object], list[object]]:
    rng = random.Random(seed)
    agents = generate_agents(rng, 50, NOW)
    links = generate_relationships(rng, agents, 2, NOW)
    tasks, edges = generate_tasks(rng, 300, agents, NOW)
    return list(agents), list(links), list(tasks), list(edges)


def test_same_seed_same_rows_and_another_seed_other_rows() -> None:
    assert _dataset(7) == _dataset(7)
    assert _dataset(7) != _dataset(8)


def test_parents_come_first_and_dependencies_form_a_dag() -> None:
    rng = random.Random(1)
    agents = generate_agents(rng, 200, NOW)
    seen: set[object] = set()
    for agent in agents:
        assert agent.parent_id is None or agent.parent_id in seen
        seen.add(agent.id)
    tasks, edges = generate_tasks(rng, 1000, agents, NOW)
    order = {task.id: index for index, task in enumerate(tasks)}
    # Every task depends only on older ones: no cycle is possible.
    assert all(order[dep] < order[task] for task, dep in edges)
    graph: dict[object, set[object]] = defaultdict(set)
    for task, dep in edges:
        graph[task].add(dep)
    assert len(edges) == sum(len(deps) for deps in graph.values())


def test_task_fields_agree_with_the_state_machine() -> None:
    rng = random.Random(3)
    agents = generate_agents(rng, 20, NOW)
    tasks, _ = generate_tasks(rng, 500, agents, NOW)
    for task in tasks:
        assert 1 <= task.priority <= 10
        assert 1 <= len(task.title) <= 200
        if task.status in ("assigned", "in_progress", "completed", "failed"):
            assert task.assignee_id is not None
        if task.status in ("completed", "failed"):
            assert task.started_at is not None and task.completed_at is not None
        if task.status == "pending":
            assert task.assignee_id is None and task.started_at is None
        assert task.retry_count <= task.max_retries
