"""The lean extension runner drives hooks as Strawberry's own runner does: each case
runs through both and must leave the same trace and outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext

from schema.extension_runner import CachedHooksRunner


class Boom(Exception):
    pass


class Other(Exception):
    pass


def _extensions(trace: list[str], behaviour: dict[str, str]) -> list[SchemaExtension]:
    """Three extensions: `a` (a generator), `b` (an async generator), `c` (a
    generator); `behaviour[name]` makes one misbehave."""

    class A(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            trace.append("a in")
            try:
                yield
            except Exception as exc:
                trace.append(f"a got {type(exc).__name__}")
                if behaviour.get("a") == "swallow":
                    return
                raise
            trace.append("a out")

    class B(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            trace.append("b in")
            if behaviour.get("b") == "fail in":
                raise Boom
            try:
                yield
            except Exception as exc:
                trace.append(f"b got {type(exc).__name__}")
                if behaviour.get("b") == "replace":
                    raise Other from exc
                if behaviour.get("b") == "swallow":
                    return
                raise
            trace.append("b out")
            if behaviour.get("b") == "fail out":
                raise Other

        def get_results(self) -> dict[str, Any]:
            return {"b": 1}

    class C(SchemaExtension):
        def on_execute(self) -> Iterator[None]:
            trace.append("c in")
            if behaviour.get("c") == "no yield":
                return
            yield
            trace.append("c out")
            if behaviour.get("c") == "yield twice":
                yield

        async def get_results(self) -> dict[str, Any]:
            return {"c": 2}

    return [A(), B(), C()]


async def _run(
    runner_class: type[SchemaExtensionsRunner], behaviour: dict[str, str], inside: str
) -> tuple[list[str], str, dict[str, Any]]:
    trace: list[str] = []
    extensions = _extensions(trace, behaviour)
    context = ExecutionContext(query="{ a }", schema=None, allowed_operations=())  # type: ignore[arg-type]
    runner = runner_class(context, extensions)
    outcome = "ok"
    try:
        async with runner.executing():
            trace.append("inside")
            if inside == "raise":
                raise Boom
    except Exception as exc:
        outcome = f"{type(exc).__name__}"
    results = await runner.get_extensions_results(context) if outcome == "ok" else {}
    return trace, outcome, results


CASES = [
    ({}, "pass"),
    ({}, "raise"),
    ({"a": "swallow"}, "raise"),
    ({"b": "swallow"}, "raise"),
    ({"b": "replace"}, "raise"),
    ({"a": "swallow", "b": "replace"}, "raise"),
    ({"b": "fail in"}, "pass"),
    ({"b": "fail out"}, "pass"),
    ({"c": "no yield"}, "pass"),
    ({"c": "yield twice"}, "pass"),
]


@pytest.mark.parametrize(("behaviour", "inside"), CASES)
async def test_hooks_run_as_strawberrys_runner_runs_them(
    behaviour: dict[str, str], inside: str
) -> None:
    theirs = await _run(SchemaExtensionsRunner, behaviour, inside)
    ours = await _run(CachedHooksRunner, behaviour, inside)
    assert ours == theirs


async def test_results_come_from_the_extensions_that_give_them() -> None:
    trace, outcome, results = await _run(CachedHooksRunner, {}, "pass")
    assert trace == ["a in", "b in", "c in", "inside", "c out", "b out", "a out"]
    assert (outcome, results) == ("ok", {"b": 1, "c": 2})


def test_a_synchronous_stage_refuses_an_async_hook() -> None:
    extensions = _extensions([], {})
    context = ExecutionContext(query="{ a }", schema=None, allowed_operations=())  # type: ignore[arg-type]
    stage = CachedHooksRunner(context, extensions).executing()
    with pytest.raises(RuntimeError, match="failed to complete synchronously"), stage:
        pass


def _stream_extensions(trace: list[str]) -> list[SchemaExtension]:
    """`on_stream_result` in each form a hook can take, each given the result."""

    class Generator(SchemaExtension):
        def on_stream_result(self, result: Any) -> Iterator[None]:
            trace.append(f"generator in {result}")
            try:
                yield
            except Exception as exc:
                trace.append(f"generator got {type(exc).__name__}")
                raise
            trace.append("generator out")

    class AsyncGenerator(SchemaExtension):
        async def on_stream_result(self, result: Any) -> AsyncIterator[None]:
            trace.append(f"async generator in {result}")
            yield
            trace.append("async generator out")

    class Plain(SchemaExtension):
        def on_stream_result(self, result: Any) -> None:  # type: ignore[override]
            trace.append(f"plain {result}")

    class Coroutine(SchemaExtension):
        async def on_stream_result(self, result: Any) -> None:  # type: ignore[override]
            trace.append(f"coroutine {result}")

    return [Generator(), AsyncGenerator(), Plain(), Coroutine()]


@pytest.mark.parametrize("inside", ["pass", "raise"])
async def test_stream_result_hooks_get_the_result_as_strawberrys_runner_gives_it(
    inside: str,
) -> None:
    async def run(runner_class: type[SchemaExtensionsRunner]) -> list[str]:
        trace: list[str] = []
        context = ExecutionContext(query="{ a }", schema=None, allowed_operations=())  # type: ignore[arg-type]
        runner = runner_class(context, _stream_extensions(trace))
        try:
            async with runner.on_stream_result("event 1"):  # type: ignore[arg-type]
                trace.append("inside")
                if inside == "raise":
                    raise Boom
        except Boom:
            trace.append("raised")
        return trace

    ours = await run(CachedHooksRunner)
    assert ours == await run(SchemaExtensionsRunner)
    assert "plain event 1" in ours and "coroutine event 1" in ours
