"""The check every write made as an agent goes through: bound session, live grant."""

from __future__ import annotations

from uuid import uuid4

import pytest

from resolvers.agent_grants import require_acts_as
from resolvers.auth import Principal, Role
from resolvers.context import Stores
from resolvers.errors import ClientError, ErrorCode
from stores import GraphStore, PostgresStore, RedisStore
from stores.postgres import UserRepository
from tests.integration.auth.conftest import unique_email
from tests.integration.stores import new_agent, new_ctx


def _acting(user_id: object, agent_id: object, role: Role = Role.AGENT) -> Principal:
    return Principal(
        user_id=user_id,  # type: ignore[arg-type]
        role=role,
        agent_id=agent_id,  # type: ignore[arg-type]
        session_id="s",
        api_key_id=None,
        scopes=frozenset(),
        via="session",
    )


async def _refusal(stores: Stores, principal: Principal, agent_id: object) -> str:
    with pytest.raises(ClientError) as refused:
        await require_acts_as(stores, principal, agent_id, doing="testing")  # type: ignore[arg-type]
    assert refused.value.code is ErrorCode.FORBIDDEN
    return refused.value.message


async def test_a_write_as_an_agent_needs_the_bound_agent_and_its_grant(
    postgres: PostgresStore, redis: RedisStore, graph: GraphStore, users: UserRepository
) -> None:
    stores = Stores(postgres, graph, redis)
    user = await users.create_user(email=unique_email(), role="agent")
    agent, other = (await new_agent(postgres)).id, (await new_agent(postgres)).id
    bound = _acting(user.id, agent)

    # A principal bound to the agent whose grant is gone (revoked after the session was
    # checked, e.g. on another replica within its cache's lifetime) is refused.
    assert "no longer act" in await _refusal(stores, bound, agent)
    await postgres.agent_grants.grant(new_ctx(), user.id, agent)
    await require_acts_as(stores, bound, agent, doing="testing")
    assert "not for" in await _refusal(stores, bound, other)
    assert "bound" in await _refusal(stores, _acting(user.id, None), agent)
    assert "role agent" in await _refusal(stores, _acting(user.id, agent, Role.VIEWER), agent)
    await require_acts_as(stores, _acting(uuid4(), None, Role.OPERATOR), other, doing="testing")

    assert await postgres.agent_grants.revoke(new_ctx(), user.id, agent) is True
    assert "no longer act" in await _refusal(stores, bound, agent)
