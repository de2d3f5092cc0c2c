"""The entity cache (see `stores.cache.entities`)."""

from stores.cache.entities import CacheCounts, CachedKind, CacheOptions, EntityCache

__all__ = ["CacheCounts", "CacheOptions", "CachedKind", "EntityCache"]
