"""Strawberry's schema extension runner, with each stage's hooks driven directly.

Strawberry builds every extension per operation and, for each of its four stages
(operation, parsing, validation, execution), asks every extension whether it has a
hook there, wraps each generator hook in a `contextlib` context manager (decorated
per request, `functools.wraps` and `inspect` checks included) and enters them
through an `AsyncExitStack`; after the operation it awaits every extension's
`get_results`, overridden or not: about 4% of a cheap query's CPU
(bench/profile_notes.md). Here which hooks a class has is looked up once per class;
a stage runs each generator hook to its `yield` on the way in and on from it in
reverse order on the way out, as `contextlib` would: an exception inside the stage
is thrown into each hook in turn, one that raises another replaces it, one that
finishes spares the hooks outside it (but, as in Strawberry's runner, not the
stage), one that yields again is an error. As with Strawberry's runner, a hook that
fails on the way in leaves the stage at once, without leaving the hooks entered
before it (the enclosing stage still leaves its own). Only the extensions
that override `get_results` are asked for results. `on_stream_result`, which runs
for every event of every subscription, takes its result as Strawberry passes it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    OperationContextManager,
    ParsingContextManager,
    StreamResultContextManager,
    ValidationContextManager,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext, StreamExecutionResult

# How a class's hook for a stage runs: a generator, an async generator, a plain
# function or coroutine function (run on the way in only, as Strawberry does).
_SYNC, _ASYNC, _CALL, _AWAIT = range(4)
_Hook = tuple[int, Callable[[SchemaExtension], Any]]
_HOOKS: dict[tuple[type[SchemaExtension], str], _Hook | None] = {}
_RESULTS: dict[type[SchemaExtension], Callable[[SchemaExtension], Any] | None] = {}


def _hook_of(cls: type[SchemaExtension], name: str) -> _Hook | None:
    key = (cls, name)
    try:
        return _HOOKS[key]
    except KeyError:
        pass
    hook = getattr(cls, name)
    found: _Hook | None
    if hook is getattr(SchemaExtension, name):
        found = None
    elif inspect.isgeneratorfunction(hook):
        found = (_SYNC, hook)
    elif inspect.isasyncgenfunction(hook):
        found = (_ASYNC, hook)
    elif inspect.iscoroutinefunction(hook):
        found = (_AWAIT, hook)
    elif callable(hook):
        found = (_CALL, hook)
    else:
        raise ValueError(f"Hook {name} on {cls.__name__} must be callable, received {hook!r}")
    _HOOKS[key] = found
    return found


def _results_of(cls: type[SchemaExtension]) -> Callable[[SchemaExtension], Any] | None:
    try:
        return _RESULTS[cls]
    except KeyError:
        own = cls.get_results if cls.get_results is not SchemaExtension.get_results else None
        _RESULTS[cls] = own
        return own


# An extension's hook for a stage, with how it runs.
_BoundHook = tuple[SchemaExtension, int, Callable[..., Any]]


def _bound_hooks(extensions: list[SchemaExtension], name: str) -> list[_BoundHook]:
    bound: list[_BoundHook] = []
    for extension in extensions:
        hook = _hook_of(type(extension), name)
        if hook is not None:
            bound.append((extension, *hook))
    return bound


class _Stage:
    """One stage's hooks of one operation, as an async (or plain) context manager."""

    __slots__ = ("_arguments", "_entered", "_hooks", "_name")

    def __init__(self, hooks: list[_BoundHook], name: str, arguments: tuple[Any, ...] = ()) -> None:
        self._hooks = hooks
        self._name = name
        # What each hook takes after its extension (a streamed result, for one).
        self._arguments = arguments
        self._entered: list[tuple[bool, Any]] = []

    def _enter_plain(
        self, extension: SchemaExtension, kind: int, function: Callable[[SchemaExtension], Any]
    ) -> None:
        if kind == _SYNC:
            generator = function(extension, *self._arguments)
            _started(next(generator, _DONE), self._name)
            self._entered.append((False, generator))
        else:
            function(extension, *self._arguments)

    async def __aenter__(self) -> None:
        for extension, kind, function in self._hooks:
            if kind == _ASYNC:
                generator = function(extension, *self._arguments)
                _started(await anext(generator, _DONE), self._name)
                self._entered.append((True, generator))
            elif kind == _AWAIT:
                await function(extension, *self._arguments)
            else:
                self._enter_plain(extension, kind, function)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        pending = exc
        while self._entered:
            is_async, generator = self._entered.pop()
            if is_async:
                pending = await _resume_async(generator, pending)
            else:
                pending = _resume(generator, pending)
        return _leave(exc, pending)

    def __enter__(self) -> None:
        for extension, kind, function in self._hooks:
            if kind in (_ASYNC, _AWAIT):
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._name} failed to complete"
                    " synchronously."
                )
            self._enter_plain(extension, kind, function)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        pending = exc
        while self._entered:
            _, generator = self._entered.pop()
            pending = _resume(generator, pending)
        return _leave(exc, pending)


_DONE: Any = object()


def _leave(exc: BaseException | None, pending: BaseException | None) -> bool:
    """What leaving a stage does, given what is left after its hooks: raises the
    exception a hook raised in place of `exc`. As in Strawberry's runner, a hook that
    swallows `exc` spares the hooks outside it, not the stage: `exc` goes on."""
    if pending is not None and pending is not exc:
        raise pending
    return False


def _started(first: object, name: str) -> None:
    if first is _DONE:
        raise RuntimeError(f"the extension hook {name} did not yield")


def _resume(
    generator: Generator[Any, None, None], exc: BaseException | None
) -> BaseException | None:
    """Resume an entered hook, `exc` thrown in at its `yield`: what is then left to throw
    into the hooks outside it (None: nothing; a hook that finishes swallows `exc`)."""
    try:
        if exc is None:
            next(generator)
        else:
            generator.throw(exc)
    except StopIteration:
        return None
    except BaseException as raised:
        return raised
    return RuntimeError("an extension hook yielded more than once")


async def _resume_async(
    generator: AsyncGenerator[Any, None], exc: BaseException | None
) -> BaseException | None:
    """`_resume` for an async generator hook."""
    try:
        if exc is None:
            await anext(generator)
        else:
            await generator.athrow(exc)
    except StopAsyncIteration:
        return None
    except BaseException as raised:
        return raised
    return RuntimeError("an extension hook yielded more than once")


class CachedHooksRunner(SchemaExtensionsRunner):
    """Strawberry's extension runner, with each class's hooks looked up once and each
    stage's hooks driven directly. A subscription streams every event through the same
    runner: which extensions have an `on_stream_result` hook is worked out once."""

    def __init__(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension] | None = None
    ) -> None:
        super().__init__(execution_context, extensions)
        self._stream_hooks: list[_BoundHook] | None = None
        self._result_hooks: list[tuple[SchemaExtension, Callable[..., Any]]] | None = None

    def _stage(self, name: str) -> Any:
        return _Stage(_bound_hooks(self.extensions, name), name)

    def operation(self) -> OperationContextManager:
        return self._stage("on_operation")  # type: ignore[no-any-return]

    def validation(self) -> ValidationContextManager:
        return self._stage("on_validate")  # type: ignore[no-any-return]

    def parsing(self) -> ParsingContextManager:
        return self._stage("on_parse")  # type: ignore[no-any-return]

    def executing(self) -> ExecutingContextManager:
        return self._stage("on_execute")  # type: ignore[no-any-return]

    def on_stream_result(self, result: StreamExecutionResult) -> StreamResultContextManager:
        hooks = self._stream_hooks
        if hooks is None:
            hooks = self._stream_hooks = _bound_hooks(self.extensions, "on_stream_result")
        return _Stage(hooks, "on_stream_result", (result,))  # type: ignore[return-value]

    def _results(self) -> list[tuple[SchemaExtension, Callable[..., Any]]]:
        # Asked for once per operation, and again for every event of a subscription.
        found = self._result_hooks
        if found is None:
            found = self._result_hooks = [
                (extension, results)
                for extension in self.extensions
                if (results := _results_of(type(extension))) is not None
            ]
        return found

    def get_extensions_results_sync(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension, results in self._results():
            if inspect.iscoroutinefunction(results):
                raise RuntimeError("Cannot use async extension hook during sync execution")
            data.update(results(extension))
        return data

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension, results in self._results():
            found = results(extension)
            if inspect.isawaitable(found):
                found = await found
            data.update(found)
        data.update(ctx.extensions_results)
        return data
