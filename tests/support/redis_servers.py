"""A Redis server of a test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.local.profiles import Profile
from infra.local.redis_server import RedisServer
from tests.support.serving import free_port


@contextmanager
def own_redis_server(profile: Profile, var_dir: Path) -> Iterator[RedisServer]:
    """A Redis on a free port, its data under `var_dir`: stopping or filling it
    disturbs no other test."""
    own = Profile(
        name=f"{profile.name}-private-redis",
        postgres_port=profile.postgres_port,
        redis_port=free_port(),
        bolt_port=profile.bolt_port,
        var_dir=var_dir,
    )
    server = RedisServer(own)
    server.start()
    try:
        yield server
    finally:
        server.stop()
