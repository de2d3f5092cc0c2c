"""The default quotas against the request cost limit."""

from __future__ import annotations

from gateway.limits.options import DEFAULT_LIMITS
from gateway.settings import Settings
from resolvers.auth import Role
from resolvers.rate_limits import DEFAULT_POLICY


def test_every_default_quota_holds_the_dearest_operation_the_cost_limit_allows() -> None:
    # A quota is also the most one operation may cost: below `max_cost`, some allowed
    # operations could never run for that role, however long the caller waited.
    dearest = DEFAULT_POLICY.request_cost(DEFAULT_LIMITS.max_cost)
    for role in (None, *Role):
        policy, quota = DEFAULT_POLICY.quota(role)
        assert quota >= dearest, policy


def test_settings_default_to_the_policy() -> None:
    settings = Settings(_env_file=None)
    assert settings.rate_limit_policy() == DEFAULT_POLICY
    assert settings.request_limits() == DEFAULT_LIMITS
