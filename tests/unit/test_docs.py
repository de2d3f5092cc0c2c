"""README and docs/ stay inside the repository and true to its tree: every link
resolves to a file here, and every path the architecture document names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
# Top-level folders whose paths the architecture document names.
_TOP_LEVEL = frozenset(
    {"gateway", "schema", "resolvers", "stores", "workers", "seeding", "infra", "tests", "bench"}
)
# `NNNN_*.sql`, `var/<profile>/`: patterns, not paths.
_PLACEHOLDER = re.compile(r"[<>]|NNNN")


def links(document: Path) -> list[str]:
    return _LINK.findall(document.read_text())


def named_paths(document: Path) -> list[tuple[str, str | None]]:
    """(path, name) for each `path` or `path: name` in backticks under a top-level folder."""
    found = []
    for code in _CODE.findall(document.read_text()):
        path, _, name = code.partition(": ")
        if path.split("/", 1)[0] not in _TOP_LEVEL or "/" not in path:
            continue
        if " " in path or _PLACEHOLDER.search(path):
            continue
        found.append((path, name or None))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_links_stay_in_the_repository(document: Path) -> None:
    found = links(document)
    outside = [link for link in found if "://" in link or link.startswith("//")]
    assert outside == [], f"{document.name} links outside the repository"
    missing = []
    for link in found:
        target = link.split("#", 1)[0]
        if not target:
            continue
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            missing.append(link)
    assert missing == [], f"{document.name} links to what the repository does not hold"


def test_architecture_names_paths_that_exist() -> None:
    found = named_paths(ARCHITECTURE)
    assert len(found) > 50, "the document names few paths: is the pattern broken?"
    missing = [path for path, _ in found if not any(ROOT.glob(path.rstrip("/")))]
    assert missing == []


def test_architecture_names_definitions_that_exist() -> None:
    """`module.py: name` means `name` is defined (or assigned) in that module."""
    missing = []
    for path, name in named_paths(ARCHITECTURE):
        if name is None or not path.endswith(".py"):
            continue
        identifier = name.split(".")[0]
        if not re.search(rf"(def|class) {identifier}\b|^{identifier}\b", _text(path), re.M):
            missing.append(f"{path}: {name}")
    assert missing == []


def _text(path: str) -> str:
    return (ROOT / path).read_text()
