"""The audit log: reading it (operators and up, without what its values would leak),
and the entries written beside writes of other stores.

An audit row keeps the values a change wrote, some of which their own fields
restrict: a user's email is for that user and admins (`User.email`), an API
key's name and prefix for its owner and admins (`myApiKeys`, `User.apiKeys`).
Such fields are taken out of `oldValue` and `newValue` for readers who may not
see them, and named in the entry's `redacted` list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from resolvers.auth import Principal, Role, require
from resolvers.context import RequestContext
from stores.postgres.inputs import AuditFilter
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import JSON, AuditEntry, WriteContext


@dataclass(frozen=True, slots=True)
class VisibleEntry:
    """An audit entry as one reader may see it."""

    entry: AuditEntry
    # The fields taken out, as `newValue.email`.
    redacted: tuple[str, ...] = ()


def _is_admin(principal: Principal) -> bool:
    return principal.role is not None and principal.role >= Role.ADMIN


def _owner_of_user_row(entry: AuditEntry, value: JSON) -> str | None:
    return entry.resource_id


def _owner_of_key_row(entry: AuditEntry, value: JSON) -> str | None:
    owner = value.get("user_id")
    return owner if isinstance(owner, str) else None


# Per resource type: the restricted fields, and whose they are (admins see them all).
_RESTRICTED: dict[str, tuple[frozenset[str], Callable[[AuditEntry, JSON], str | None]]] = {
    "user": (frozenset({"email"}), _owner_of_user_row),
    "api_key": (frozenset({"name", "prefix"}), _owner_of_key_row),
}


def visible(principal: Principal, entry: AuditEntry) -> VisibleEntry:
    """`entry` without the restricted fields `principal` may not see."""
    rule = _RESTRICTED.get(entry.resource_type)
    if rule is None or _is_admin(principal):
        return VisibleEntry(entry)
    fields, owner_of = rule
    reader = str(principal.user_id) if principal.user_id else None
    redacted: list[str] = []
    values: dict[str, JSON | None] = {}
    for name, value in (("oldValue", entry.old_value), ("newValue", entry.new_value)):
        if value is None or (reader is not None and owner_of(entry, value) == reader):
            values[name] = value
            continue
        hidden = sorted(fields & value.keys())
        redacted.extend(f"{name}.{field}" for field in hidden)
        values[name] = {k: v for k, v in value.items() if k not in fields}
    if not redacted:
        return VisibleEntry(entry)
    shown = replace(entry, old_value=values["oldValue"], new_value=values["newValue"])
    return VisibleEntry(shown, tuple(redacted))


async def audit_log(
    ctx: RequestContext, filter: AuditFilter, page: PageRequest, *, with_total: bool
) -> Page[VisibleEntry]:
    require(ctx.principal, at_least=Role.OPERATOR)
    found = await ctx.stores.postgres.audit.list(filter, page, with_total=with_total)
    return Page(
        items=[visible(ctx.principal, entry) for entry in found.items],
        cursors=found.cursors,
        has_next_page=found.has_next_page,
        has_previous_page=found.has_previous_page,
        total_count=found.total_count,
    )


async def record(
    ctx: RequestContext,
    action: str,
    resource_type: str,
    resource_id: object,
    *,
    write: WriteContext | None = None,
) -> None:
    """An entry for a change PostgreSQL did not make itself (sessions live in Redis).
    `write` names the actor when it is not the caller, as at login."""
    await ctx.stores.postgres.audit.record(
        write or ctx.write_context(), action, resource_type, resource_id
    )
