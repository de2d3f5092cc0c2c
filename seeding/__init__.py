"""Deterministic data generation: the demo dataset `polygraph seed` loads and the
benchmark's datasets (`bench/dataset.py`, `bench/search.py`) are made by the same code.

`platform`: agents, relationships, tasks, dependencies and metric points.
`knowledge`: knowledge items and memories, embedded, with labelled search queries.
"""
