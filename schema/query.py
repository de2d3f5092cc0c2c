from __future__ import annotations

import strawberry

from resolvers.context import RequestContext
from resolvers.health import check_health
from schema.health import Health


@strawberry.type
class Query:
    @strawberry.field(description="Live health of the gateway and each store it uses.")
    async def health(self, info: strawberry.Info[RequestContext, None]) -> Health:
        return Health.from_report(await check_health(info.context.stores))
