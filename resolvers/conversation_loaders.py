"""Loaders of conversations and messages, named by access path; one per request (or
per subscription event), built on first use like every loader in `resolvers.loaders`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from aiodataloader import DataLoader

from stores.graph.negotiations import ResolutionLinks, resolutions_of
from stores.postgres.conversation_records import Conversation, Message, Participant
from stores.postgres.pagination import Page

if TYPE_CHECKING:
    from resolvers.context import Stores

V = TypeVar("V")


def _by_uuid(
    fetch: Callable[[list[UUID]], Awaitable[Mapping[UUID, V]]], default: V
) -> DataLoader[UUID, V]:
    async def batch(keys: list[UUID]) -> list[V]:
        found = await fetch(keys)
        return [found.get(key, default) for key in keys]

    return DataLoader(batch)


@dataclass(frozen=True, slots=True)
class FirstMessagesKey:
    """`Conversation.messages` without a cursor: one query serves a page of conversations."""

    conversation_id: UUID
    first: int
    newest_first: bool


def _first_messages_loader(stores: Stores) -> DataLoader[FirstMessagesKey, Page[Message]]:
    async def batch(keys: list[FirstMessagesKey]) -> list[Page[Message]]:
        groups: dict[tuple[int, bool], list[UUID]] = defaultdict(list)
        for key in keys:
            groups[(key.first, key.newest_first)].append(key.conversation_id)
        pages: dict[FirstMessagesKey, Page[Message]] = {}
        for (first, newest_first), ids in groups.items():
            found = await stores.postgres.conversations.first_messages_of(
                ids, first=first, newest_first=newest_first
            )
            for conversation_id, page in found.items():
                pages[FirstMessagesKey(conversation_id, first, newest_first)] = page
        return [pages[key] for key in keys]

    return DataLoader(batch)


class ConversationLoaders:
    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    @cached_property
    def conversation_by_id(self) -> DataLoader[UUID, Conversation | None]:
        return _by_uuid(self._stores.postgres.conversations.by_ids, None)

    @cached_property
    def participants_by_conversation_id(self) -> DataLoader[UUID, list[Participant]]:
        return _by_uuid(self._stores.postgres.conversations.participants_of, [])

    @cached_property
    def task_ids_by_conversation_id(self) -> DataLoader[UUID, list[UUID]]:
        return _by_uuid(self._stores.postgres.conversations.task_ids_of, [])

    @cached_property
    def last_message_by_conversation_id(self) -> DataLoader[UUID, Message | None]:
        return _by_uuid(self._stores.postgres.conversations.last_messages_of, None)

    @cached_property
    def first_messages(self) -> DataLoader[FirstMessagesKey, Page[Message]]:
        return _first_messages_loader(self._stores)

    @cached_property
    def message_by_id(self) -> DataLoader[UUID, Message | None]:
        return _by_uuid(self._stores.postgres.conversations.messages_by_ids, None)

    @cached_property
    def resolution_links_by_conversation_id(self) -> DataLoader[UUID, ResolutionLinks | None]:
        graph = self._stores.graph

        async def links(ids: Sequence[UUID]) -> Mapping[UUID, ResolutionLinks]:
            return await resolutions_of(graph, ids)

        return _by_uuid(links, None)
