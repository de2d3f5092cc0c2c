"""Roles are ordered, and `require` refuses with the right code and a useful message."""

from __future__ import annotations

import uuid

import pytest

from resolvers.auth import ANONYMOUS, Principal, Role, require
from resolvers.errors import ClientError, ErrorCode


def signed_in(role: Role) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        role=role,
        agent_id=None,
        session_id="s",
        api_key_id=None,
        scopes=frozenset(),
        via="session",
    )


def test_roles_are_ordered() -> None:
    assert Role.ADMIN > Role.OPERATOR > Role.AGENT > Role.VIEWER
    assert Role.VIEWER <= Role.VIEWER < Role.ADMIN
    assert sorted(Role) == [Role.VIEWER, Role.AGENT, Role.OPERATOR, Role.ADMIN]
    assert max(Role) is Role.ADMIN


@pytest.mark.parametrize("needed", list(Role))
@pytest.mark.parametrize("role", list(Role))
def test_require_table(role: Role, needed: Role) -> None:
    principal = signed_in(role)
    if role >= needed:
        require(principal, at_least=needed)
        return
    with pytest.raises(ClientError) as caught:
        require(principal, at_least=needed)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert caught.value.message == (
        f"This operation needs role {needed.value}; you are {role.value}."
    )


@pytest.mark.parametrize("needed", list(Role))
def test_anonymous_is_unauthenticated(needed: Role) -> None:
    with pytest.raises(ClientError) as caught:
        require(ANONYMOUS, at_least=needed)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    assert "Bearer" in caught.value.message
    assert not ANONYMOUS.authenticated
    assert signed_in(Role.VIEWER).authenticated
