"""Strawberry resolver functions called directly, without Strawberry's per-call wrapper.

For a field with a resolver function, Strawberry's wrapper (`from_resolver`'s
`_resolver`) builds an `Info`, converts the arguments graphql-core coerced into
Strawberry's (input objects, enums, scalars), runs field extensions and exception
handlers, and calls the function with `self`, `info` and the arguments it names.
For a field without extensions (permission classes are one) or exception handlers,
`DirectResolver` does the same work minus what repeats: how each argument converts
(input objects, lists, ids) is worked out once from its type, not on every call, and
arguments that convert to immutable values (numbers, strings, enums, ids, times) are
converted once per request, not once per parent object. Every other field keeps
Strawberry's wrapper.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING
from types import CodeType
from typing import Any, cast

from graphql import GraphQLField, GraphQLResolveInfo
from strawberry.relay import GlobalID
from strawberry.relay.types import GlobalIDValueError, InvalidGlobalIDError
from strawberry.scalars import is_scalar
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_arguments
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver
from strawberry.types.unset import UNSET

from schema.relay import global_id
from schema.settled import settled_preparer

_DEFINITION = GraphQLCoreConverter.DEFINITION_BACKREF


def _nested_code(code: CodeType, names: tuple[str, ...]) -> Iterator[CodeType]:
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            if constant.co_name in names:
                yield constant
            yield from _nested_code(constant, names)


# Strawberry's wrappers for fields with a resolver function, sync and async. Should
# Strawberry change them, no field matches, and every field keeps its wrapper.
_WRAPPER_CODES = frozenset(
    _nested_code(GraphQLCoreConverter.from_resolver.__code__, ("_resolver", "_async_resolver"))
)
_INFO_FACTORY_CODES = frozenset(
    _nested_code(GraphQLCoreConverter.from_resolver.__code__, ("_strawberry_info_from_graphql",))
)
_IMMUTABLE = frozenset(
    (int, float, str, bool, type(None), uuid.UUID, GlobalID, datetime.datetime, datetime.date)
)


def _closure(function: Callable[..., Any]) -> dict[str, Any] | None:
    cells = function.__closure__ or ()
    try:
        return dict(
            zip(function.__code__.co_freevars, (c.cell_contents for c in cells), strict=True)
        )
    except ValueError:  # an empty cell
        return None


def _immutable(value: Any) -> bool:
    return type(value) in _IMMUTABLE or isinstance(value, enum.Enum)


# How one argument's coerced value becomes Strawberry's: None when it is handed over as
# it is (a scalar or an enum), else a function of the value.
_Conversion = Callable[[Any], Any] | None
# (GraphQL name, Python name, conversion) for each of a field's arguments.
_CompiledArgument = tuple[str, str, _Conversion]


class _NotCompiled(Exception):
    """A type `convert_arguments` handles in a way not compiled here (`Maybe`, lazy types,
    input types that build their own value or contain themselves): the field keeps
    `convert_arguments`."""


def _compiled_arguments(
    field: StrawberryField, converter: GraphQLCoreConverter
) -> tuple[_CompiledArgument, ...] | None:
    """What `convert_arguments` does for each of the field's arguments, worked out once
    from their types instead of by walking the types on every call."""
    compiled: list[_CompiledArgument] = []
    for argument in field.arguments:
        assert argument.python_name
        try:
            conversion = _conversion(argument.type, converter, within=())
        except _NotCompiled:
            return None
        name = converter.config.name_converter.from_argument(argument)
        compiled.append((name, argument.python_name, conversion))
    return tuple(compiled)


def _conversion(
    type_: Any, converter: GraphQLCoreConverter, *, within: tuple[type, ...]
) -> _Conversion:
    """`convert_argument` for values of `type_`, as a function (None: the value itself);
    `within` are the input types whose fields are being compiled."""
    # Exactly Optional: `Maybe`, a subclass, wraps what it converts.
    if type(type_) is StrawberryOptional:
        type_ = type_.of_type
    if type_ is GlobalID:
        return _optional(_global_id)
    if (
        is_scalar(type_, converter.scalar_registry)
        or isinstance(type_, StrawberryEnumDefinition)
        or has_enum_definition(type_)
    ):
        return None
    if type(type_) is StrawberryList:
        item = _conversion(type_.of_type, converter, within=within)
        if item is None:
            # Copied all the same: graphql-core hands every request that omits the value
            # the same default list.
            return _optional(list)
        return _optional(lambda values: [item(value) for value in values])
    if has_object_definition(type_):
        return _optional(_input_conversion(type_, converter, within=within))
    raise _NotCompiled(type_)


def _optional(conversion: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None or value is UNSET:
            return value
        return conversion(value)

    return convert


def _input_conversion(
    input_type: type, converter: GraphQLCoreConverter, *, within: tuple[type, ...]
) -> Callable[[Any], Any]:
    definition = input_type.__strawberry_definition__  # type: ignore[attr-defined]
    if not definition.is_input or definition.from_input is not None or input_type in within:
        raise _NotCompiled(input_type)
    name_converter = converter.config.name_converter
    fields = tuple(
        (
            name_converter.from_field(field),
            field.python_name,
            _conversion(
                field.resolve_type(type_definition=definition),
                converter,
                within=(*within, input_type),
            ),
        )
        for field in definition.fields
    )
    # Nullable fields without a default are None when the value leaves them out; the
    # required ones graphql-core has checked are there.
    left_out = tuple(
        field.python_name
        for field in definition.fields
        if field.default_value is MISSING and field.default_factory is MISSING
    )

    def convert(value: Mapping[str, Any]) -> Any:
        kwargs = dict.fromkeys(left_out)
        for name, python_name, conversion in fields:
            if name in value:
                given = value[name]
                kwargs[python_name] = given if conversion is None else conversion(given)
        return input_type(**kwargs)

    return convert


def _global_id(value: str) -> GlobalID:
    try:
        # Remembered by text (a decode costs about ten times a cache hit).
        return global_id(value)
    except GlobalIDValueError as error:
        # Strawberry's message, like the built-in scalars'.
        raise InvalidGlobalIDError(f'Value cannot represent a GlobalID: "{value}".') from error


class DirectResolver:
    """Calls one field's resolver function as Strawberry's wrapper would (see the module
    docstring); `convert` and `call` are the wrapper's two halves."""

    __slots__ = (
        "compiled_arguments",
        "config",
        "field",
        "function",
        "info_class",
        "info_name",
        "parent_name",
        "root_name",
        "scalar_registry",
        "self_source",
        "settled",
    )

    def __init__(self, field: StrawberryField, converter: GraphQLCoreConverter) -> None:
        resolver = field.base_resolver
        assert resolver is not None
        self.field = field
        self.compiled_arguments = _compiled_arguments(field, converter)
        # Callable: `direct_resolver` checked (a classmethod object is not).
        self.function = cast(Callable[..., Any], resolver.wrapped_func)
        self.config = converter.config
        self.info_class = converter.config.info_class
        self.scalar_registry = converter.scalar_registry
        self.self_source = resolver.self_parameter is not None
        # What answers the field from what a parent loaded, if anything (schema/settled.py).
        self.settled = settled_preparer(self.function)
        parent = resolver.parent_parameter
        root = resolver.root_parameter
        info = resolver.info_parameter
        self.parent_name = parent.name if parent else None
        self.root_name = root.name if root else None
        self.info_name = info.name if info else None

    def info(self, raw_info: GraphQLResolveInfo[Any]) -> Any:
        return self.info_class(_raw_info=raw_info, _field=self.field)

    def convert(self, info: Any, coerced: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Strawberry's arguments, and whether they may serve every call of the request."""
        compiled = self.compiled_arguments
        if compiled is None:
            converted = convert_arguments(
                coerced,
                self.field.arguments,
                scalar_registry=self.scalar_registry,
                config=self.config,
                info=info,
            )
        else:
            converted = {}
            for name, python_name, conversion in compiled:
                if name in coerced:
                    value = coerced[name]
                    converted[python_name] = value if conversion is None else conversion(value)
        return converted, all(_immutable(value) for value in converted.values())

    def call(self, source: Any, info: Any, converted: dict[str, Any]) -> Any:
        kwargs = dict(converted)
        if self.parent_name is not None:
            kwargs[self.parent_name] = source
        if self.root_name is not None:
            kwargs[self.root_name] = source
        if self.info_name is not None:
            kwargs[self.info_name] = info
        if self.self_source:
            return self.function(source, **kwargs)
        return self.function(**kwargs)


def direct_resolver(field_def: GraphQLField) -> DirectResolver | None:
    """A `DirectResolver` for the field, when Strawberry's wrapper adds nothing to it
    but the `Info` and the argument conversion."""
    resolve = field_def.resolve
    if getattr(resolve, "__code__", None) not in _WRAPPER_CODES:
        return None
    definition = (field_def.extensions or {}).get(_DEFINITION)
    if not isinstance(definition, StrawberryField) or type(definition) is not StrawberryField:
        return None
    if definition.extensions:
        return None
    resolver = definition.base_resolver
    if resolver is None or type(resolver).__call__ is not StrawberryResolver.__call__:
        return None
    if not callable(resolver.wrapped_func):
        return None
    assert resolve is not None
    cells = _closure(resolve)
    if cells is None or cells.get("field_exception_handlers", True):
        return None
    make_info = cells.get("_strawberry_info_from_graphql")
    if getattr(make_info, "__code__", None) not in _INFO_FACTORY_CODES:
        return None
    info_cells = _closure(make_info)  # type: ignore[arg-type]
    if info_cells is None:
        return None
    converter, wrapped_field = info_cells.get("self"), info_cells.get("field")
    if not isinstance(converter, GraphQLCoreConverter) or wrapped_field is not definition:
        return None
    return DirectResolver(wrapped_field, converter)
