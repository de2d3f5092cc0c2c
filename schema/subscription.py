from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry

from resolvers.context import RequestContext
from resolvers.health import check_health
from schema.health import Health


@strawberry.type
class Subscription:
    @strawberry.subscription(description="A fresh health report every `intervalSeconds`.")
    async def health_updates(
        self,
        info: strawberry.Info[RequestContext, None],
        interval_seconds: float = 5.0,
    ) -> AsyncGenerator[Health, None]:
        interval = min(max(interval_seconds, 0.1), 3600.0)
        while True:
            yield Health.from_report(await check_health(info.context.stores))
            await asyncio.sleep(interval)
