"""Strawberry's schema extension runner, with each extension class's hooks looked up
once rather than on every request.

Strawberry builds every extension per operation and, for each of its four stages
(operation, parsing, validation, execution), asks every extension whether it has a
hook there; a generator hook is then decorated (`contextlib.contextmanager` over a
bound method, `functools.wraps` and `inspect` checks included) on every request.
Here the decoration is done once per class and hook; each request only binds the
extension. Hooks run exactly as Strawberry's runner runs them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

# What to do with an extension of a class, per hook: nothing (the class does not
# override it), wrap a generator hook in its context manager factory (made once per
# class: Strawberry's lookup decorates a bound method on every request, with
# `functools.wraps` each time), or, for a plain callable hook, Strawberry's own lookup.
_STRAWBERRY_LOOKUP: Any = object()
_MAKERS: dict[tuple[type[SchemaExtension], str], Any] = {}


def _hook_maker(cls: type[SchemaExtension], hook_name: str) -> Any:
    hook = getattr(cls, hook_name)
    if hook is getattr(SchemaExtension, hook_name):
        return None
    if inspect.isgeneratorfunction(hook):
        factory: Callable[..., Any] = contextlib.contextmanager(hook)
        is_async = False
    elif inspect.isasyncgenfunction(hook):
        factory = contextlib.asynccontextmanager(hook)
        is_async = True
    else:
        return _STRAWBERRY_LOOKUP

    def make(extension: SchemaExtension) -> WrappedHook:
        return WrappedHook(extension, functools.partial(factory, extension), is_async)

    return make


class _CachedLookup(ExtensionContextManagerBase):
    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        try:
            maker = _MAKERS[key]
        except KeyError:
            maker = _MAKERS[key] = _hook_maker(type(extension), self.HOOK_NAME)
        if maker is None:
            return None
        if maker is _STRAWBERRY_LOOKUP:
            return super().get_hook(extension)
        made: WrappedHook = maker(extension)
        return made


class _Operation(_CachedLookup, OperationContextManager):
    pass


class _Validation(_CachedLookup, ValidationContextManager):
    pass


class _Parsing(_CachedLookup, ParsingContextManager):
    pass


class _Executing(_CachedLookup, ExecutingContextManager):
    pass


class CachedHooksRunner(SchemaExtensionsRunner):
    """Strawberry's extension runner, with each class's hooks looked up once."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)
