"""`polygraph bench --before REV`: another revision's gateway measured beside this one."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from bench import checks
from bench.harness import Options, UnknownRevision, before_tree, prune_before_trees


def test_a_revision_git_does_not_know_is_refused_before_anything_starts() -> None:
    with pytest.raises(UnknownRevision, match="no-such-revision: not a commit"):
        before_tree("no-such-revision")


def test_without_git_the_run_is_refused_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UnknownRevision, match="needs git"):
        before_tree("HEAD")


def test_the_command_line_names_the_revision_and_leaves_search_out() -> None:
    options = Options(before="HEAD~1", only=())
    assert shlex.split(options.command)[-1] == "--before=HEAD~1"
    assert not options.run_search
    assert Options(before="HEAD~1", only=("S1", "search")).run_search


def test_the_gateway_is_divided_by_the_before_gateway_in_the_same_rounds() -> None:
    gateway = {"p50_ms": 1.0, "rps": 110.0, "cpu_s_per_1k": 0.9}
    before = {"p50_ms": 1.25, "rps": 100.0, "cpu_s_per_1k": 1.0}
    ratios = checks._ratios({"S1": {"gateway": gateway, "gateway-before": before}})
    assert ratios["S1"] == {
        "gateway_before_p50": 0.8,
        "gateway_before_rps": 1.1,
        "gateway_before_cpu": 0.9,
    }


def test_only_the_most_recently_used_exported_trees_are_kept(tmp_path: Path) -> None:
    for age, name in enumerate(["newest", "newer", "new", "old", "oldest", "half.partial"]):
        (tmp_path / name).mkdir()
        stamp = 1_000_000 - age * 60
        os.utime(tmp_path / name, (stamp, stamp))
    prune_before_trees(tmp_path, keep=3)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "half.partial",
        "new",
        "newer",
        "newest",
    ]
