"""Fixtures of the charm's ops.testing tests: the charm's context and the fake redis network."""

import pytest
from ops import testing

from charm import RedisK8sCharm
from tests.state.fake_workload import FakeNetwork
from workload import admin

APP = "redis-k8s"


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    network = FakeNetwork()
    monkeypatch.setattr(admin, "RedisAdmin", network.redis_admin)
    monkeypatch.setattr(admin, "SentinelAdmin", network.sentinel_admin)
    return network


@pytest.fixture
def ctx() -> testing.Context:
    return testing.Context(RedisK8sCharm, app_name=APP, unit_id=0)
