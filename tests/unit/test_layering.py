"""Imports go one way. `schema/` reaches the stores only through `resolvers/`: from
`stores/` it may name record, input, enum and error types, nothing that talks to a
server. `workers/` run beside requests and use `stores/` alone. `stores/` know nothing
of the layers above them, and SQL and Cypher are written nowhere else."""

from __future__ import annotations

import ast
import importlib
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Top-level packages each layer must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "stores": frozenset({"gateway", "schema", "resolvers", "workers", "seeding", "bench"}),
    "workers": frozenset({"gateway", "schema", "resolvers", "seeding", "bench"}),
    "seeding": frozenset({"gateway", "schema", "resolvers", "bench"}),
    "resolvers": frozenset({"gateway", "schema", "seeding", "bench"}),
    "schema": frozenset({"gateway", "workers", "seeding", "bench"}),
}

# A statement as a string literal: a leading SQL or Cypher verb, then the clause that
# makes it a statement rather than prose ("Select the agent from ...").
STATEMENT = re.compile(
    r"^\s*(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\b.*\bSET|DELETE\s+FROM|WITH\b.*\bAS\s*\("
    r"|MATCH\s*\(|MERGE\s*\(|UNWIND\b.*\bAS|CREATE\s+(TABLE|INDEX|CONSTRAINT))",
    re.DOTALL,
)
# Layers above the stores and beside them: none of them speaks a store's language.
STATEMENT_FREE = ("gateway", "resolvers", "schema", "workers", "seeding")

# Modules of `stores` that hold only records, inputs, enums and errors: schema/ may
# import anything from these.
SCHEMA_STORE_MODULES = frozenset(
    {
        "stores.errors",
        "stores.health",
        "stores.graph.records",
        "stores.metrics.records",
        "stores.postgres.conversation_records",
        "stores.postgres.inputs",
        "stores.postgres.records",
        "stores.redis.records",
        "stores.search.records",
    }
)
# Value types and pure helpers that live beside store code.
SCHEMA_STORE_NAMES = frozenset(
    {
        ("stores.cache.lru", "RememberedForShortTexts"),
        ("stores.metrics.buckets", "Window"),
        ("stores.metrics.buckets", "format_bucket"),
        ("stores.metrics.buckets", "parse_bucket"),
        ("stores.metrics.validation", "MAX_POINTS_PER_REQUEST"),
        ("stores.postgres.metric_names", "MetricName"),
        ("stores.postgres.pagination", "Page"),
        ("stores.postgres.pagination", "PageRequest"),
    }
)


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str
    name: str | None  # `from module import name`; None for `import module`

    def __str__(self) -> str:
        where = f"{self.path.relative_to(ROOT)}:{self.line}"
        what = self.module if self.name is None else f"{self.module}.{self.name}"
        return f"{where} imports {what}"


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _parsed(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def imports_of(path: Path, tree: ast.Module) -> Iterator[Import]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package_parts = _module_of(path)
                if path.name != "__init__.py":
                    package_parts = package_parts[:-1]
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield Import(path, node.lineno, module, alias.name)


def imports(package: str) -> Iterator[Import]:
    for path, tree in _parsed(package):
        yield from imports_of(path, tree)


def stores_bundle_uses(tree: ast.Module) -> Iterator[ast.Attribute]:
    """`<anything>.stores.<attribute>`: a store reached without resolvers/."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "stores"
        ):
            yield node


def _schema_may_import(found: Import) -> bool:
    if found.name is None:
        return found.module in SCHEMA_STORE_MODULES
    value = getattr(importlib.import_module(found.module), found.name)
    if isinstance(value, types.ModuleType):
        return value.__name__ in SCHEMA_STORE_MODULES
    # Classes and functions are judged by where they are defined, so a re-export from
    # a package (`from stores.metrics import Aggregate`) counts as its records module.
    defined_in = value.__module__ if isinstance(value, type | types.FunctionType) else found.module
    return (
        defined_in in SCHEMA_STORE_MODULES
        or (defined_in, found.name) in SCHEMA_STORE_NAMES
        or (found.module, found.name) in SCHEMA_STORE_NAMES
    )


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    found = list(imports(layer))
    assert found, f"no imports found under {layer}/"
    wrong = [str(i) for i in found if i.module.split(".")[0] in FORBIDDEN[layer]]
    assert wrong == []


def test_schema_names_only_record_types_of_the_stores() -> None:
    from_stores = [i for i in imports("schema") if i.module.split(".")[0] == "stores"]
    assert from_stores, "schema/ names no store record types at all: is the walk broken?"
    wrong = [str(i) for i in from_stores if not _schema_may_import(i)]
    assert wrong == [], "call a resolvers/ function instead"


def test_schema_never_touches_the_stores_bundle() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} .stores.{node.attr}"
        for path, tree in _parsed("schema")
        for node in stores_bundle_uses(tree)
    ]
    assert wrong == [], "call a resolvers/ function instead"


def test_the_checks_see_a_violation() -> None:
    """The rules catch what they are for: a store module and a store call in schema/."""
    path = ROOT / "schema" / "example.py"
    tree = ast.parse("from stores.postgres import agents\nx = info.context.stores.postgres\n")
    (found,) = imports_of(path, tree)
    assert not _schema_may_import(found)
    assert [node.attr for node in stores_bundle_uses(tree)] == ["postgres"]


def statements_in(tree: ast.Module) -> Iterator[ast.Constant]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and STATEMENT.match(node.value)
        ):
            yield node


def test_sql_and_cypher_live_only_in_stores() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} {str(node.value).split()[0]} ..."
        for package in STATEMENT_FREE
        for path, tree in _parsed(package)
        for node in statements_in(tree)
    ]
    assert wrong == [], "move the statement into stores/"


def test_the_statement_check_sees_sql_and_cypher() -> None:
    tree = ast.parse(
        'a = "SELECT id FROM agents WHERE id = $1"\n'
        'b = "MATCH (a:Agent {id: $id}) RETURN a"\n'
        'c = "Select the agent from the list"\n'
    )
    assert [node.lineno for node in statements_in(tree)] == [1, 2]
    in_stores = [node for _, tree in _parsed("stores") for node in statements_in(tree)]
    assert len(in_stores) > 50, "the stores' own statements are not recognised"
