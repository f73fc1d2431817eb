"""The pure client projections: endpoints from the cluster facts, users from the requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machine.clients import (
    client_rules,
    credentials_ready,
    endpoints,
    legacy_app_data,
    plan_users,
    relation_of,
    user_name,
    users_digest,
)
from machine.types import ClusterFacts, ClusterState


def host_of(unit: str) -> str:
    return f"redis-k8s-{unit.rsplit('/', 1)[1]}.redis-k8s-endpoints"


def where(cluster: ClusterFacts):
    return endpoints(cluster, host_of, lambda g: f"redis-k8s-g{g}", port=6379, sentinel_port=26379)


READ_ONLY = "+@read +@connection -@dangerous +info +role"
MEMBERS = ("redis-k8s/0", "redis-k8s/1", "redis-k8s/10", "redis-k8s/2")


def test_endpoints_name_the_recorded_primary_the_others_and_every_sentinel() -> None:
    cluster = ClusterFacts(
        state=ClusterState.HA, members=MEMBERS, primary="redis-k8s/10", generation=3
    )
    got = where(cluster)
    assert got.primary == "redis-k8s-10.redis-k8s-endpoints:6379"
    assert got.replicas == tuple(
        f"{host_of(m)}:6379" for m in ("redis-k8s/0", "redis-k8s/1", "redis-k8s/2")
    )
    assert len(got.sentinels) == 4 and got.master_name == "redis-k8s-g3"
    assert legacy_app_data(got) == {"leader-host": host_of("redis-k8s/10"), "port": "6379"}


@pytest.mark.parametrize(
    "state", [ClusterState.FORMING, ClusterState.BOOTSTRAPPING, ClusterState.RECOVERING]
)
def test_no_primary_is_published_before_one_is_established(state) -> None:
    got = where(ClusterFacts(state=state, members=MEMBERS, primary="redis-k8s/0"))
    assert got.primary is None and legacy_app_data(got) == {}


@pytest.mark.parametrize(
    ("resource", "roles", "rules"),
    [
        ("", None, "resetchannels ~* &* +@all -@admin -@dangerous +info +role"),
        ("*", "default", "resetchannels ~* &* +@all -@admin -@dangerous +info +role"),
        ("app:", None, "resetchannels ~app:* &app:* +@all -@admin -@dangerous +info +role"),
        ("app:", "read-only", f"resetchannels ~app:* &app:* {READ_ONLY}"),
    ],
)  # fmt: skip
def test_client_rules_grant_the_prefix_and_data_commands_only(resource, roles, rules) -> None:
    assert client_rules(resource, roles) == (rules, None)


@pytest.mark.parametrize(
    ("resource", "roles"),
    [
        ("a b", None), ("x*", None), ("~all", None), ("a" * 65, None),
        ("app", "admin"), ("", "superuser"),
    ],
)  # fmt: skip
def test_client_rules_refuse_what_they_cannot_grant_with_a_reason(resource, roles) -> None:
    rules, problem = client_rules(resource, roles)
    assert rules is None and problem


names = st.builds(user_name, st.integers(0, 50), st.integers(0, 3))
internal = st.sampled_from(["default", "charm-admin", "replication", "sentinel"])


@given(st.sets(names), st.sets(names | internal))
def test_plan_users_creates_the_missing_removes_the_unwanted_never_an_internal_one(
    wanted, existing
) -> None:
    plan = plan_users(wanted, existing)
    assert set(plan.create) == wanted - existing
    assert set(plan.keep) == wanted & existing
    assert set(plan.remove) == {u for u in existing - wanted if relation_of(u) is not None}
    assert not set(plan.remove) & {"default", "charm-admin", "replication", "sentinel"}


@given(st.integers(0, 10_000), st.integers(0, 5))
def test_user_names_give_back_their_relation(relation_id, index) -> None:
    assert relation_of(user_name(relation_id, index)) == relation_id


def test_credentials_wait_for_the_primary_and_every_serving_member() -> None:
    digest = users_digest({"relation-1": {"password": "p", "rules": "r"}})
    applied = {"redis-k8s/0": digest, "redis-k8s/1": digest, "redis-k8s/2": "old"}
    assert not credentials_ready(digest, applied, ["redis-k8s/0", "redis-k8s/2"], "redis-k8s/0")
    assert credentials_ready(digest, applied, ["redis-k8s/0", "redis-k8s/1"], "redis-k8s/0")
    assert not credentials_ready(digest, applied, ["redis-k8s/1"], "redis-k8s/2")  # the primary
    assert not credentials_ready(None, applied, ["redis-k8s/0"], "redis-k8s/0")
