"""Client relations with ops.testing: the legacy ``redis`` interface, ``valkey_client``.

Our provider's output (relation data and the secrets it shares) is fed to real
requirers: the legacy library ``charms.redis_k8s.v0.redis`` and a requirer charm
built on ``dpcharmlibs-interfaces``' requirer handler (``tests/charms``). A
failover is Sentinel naming another primary at a higher epoch, recorded by the
leader's cluster machine as in production.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import ops
import pytest
import yaml
from charms.redis_k8s.v0.redis import RedisRelationCharmEvents, RedisRequires
from ops import testing

from charm import APPLIED_KEY, CLUSTER_JOURNAL_KEY, SECRET_ID_KEY, UNIT_JOURNAL_KEY
from machine import journal
from machine.types import ClusterState, Role, UnitFacts, UnitState
from relations import CLIENTS_KEY
from tests.charms.valkey_requirer import charm as requirer
from tests.state.fake_workload import FakeSentinel, monitored
from tests.state.test_charm import (
    APP,
    OWN,
    cluster_facts,
    lone_primary,
    peers_of,
)
from workload.config import password_hash
from workload.workload import ACL_FILE

HOST = "redis-k8s-{}.redis-k8s-endpoints"
LEGACY_FIELDS = ("hostname", "port", "password", "leader-host")
REQUIRER_META = yaml.safe_load((Path(requirer.__file__).parent / "charmcraft.yaml").read_text())


# ------------------------------------------------------------------ helpers


def replica_journal(number: int, primary: int, epoch: int = 0) -> str:
    facts = UnitFacts(
        state=UnitState.REPLICA if number != primary else UnitState.PRIMARY,
        redis_up=True,
        sentinel_up=True,
        ever_started=True,
        role=Role.SLAVE if number != primary else Role.MASTER,
        master_repl_offset=100,
        master_link_up=number != primary,
        following=f"{APP}/{primary}",
        epoch=1,
        sentinel_primary=f"{APP}/{primary}",
        sentinel_epoch=epoch,
        sentinel_generation=1,
        sentinels_seen=2,
        quorum=2,
    )
    return journal.dump(journal.UnitJournal(base=facts, current=facts))


def three_units(ctx, net, tmp_path, *, relations=()) -> testing.State:
    """The leader (unit 0) is the primary of an HA cluster of three units."""
    state = lone_primary(ctx, net, tmp_path)
    peers = peers_of(state)
    cluster = cluster_facts(state).model_copy(
        update={
            "state": ClusterState.HA,
            "members": (f"{APP}/0", f"{APP}/1", f"{APP}/2"),
            "quorum": 2,
        }
    )
    peers = dataclasses.replace(
        peers,
        local_app_data=dict(peers.local_app_data)
        | {
            CLUSTER_JOURNAL_KEY: journal.dump(
                journal.ClusterJournal(base=cluster, current=cluster)
            )
        },
        peers_data={
            1: {UNIT_JOURNAL_KEY: replica_journal(1, 0)},
            2: {UNIT_JOURNAL_KEY: replica_journal(2, 0)},
        },
    )
    net.sentinels[OWN].monitored["redis-k8s-g1"] = monitored(
        "redis-k8s-g1", HOST.format(0), quorum=2, others=2
    )
    return dataclasses.replace(state, relations={peers, *relations})


def fail_over_to_unit_2(net, state: testing.State) -> testing.State:
    """Every sentinel now names unit 2 at epoch 5 (as after a failover)."""
    net.sentinels[OWN] = FakeSentinel(
        {"redis-k8s-g1": monitored("redis-k8s-g1", HOST.format(2), epoch=5, quorum=2, others=2)}
    )
    peers = peers_of(state)
    peers = dataclasses.replace(
        peers,
        peers_data={
            1: {UNIT_JOURNAL_KEY: replica_journal(1, 2, epoch=5)},
            2: {UNIT_JOURNAL_KEY: replica_journal(2, 2, epoch=5)},
        },
    )
    others = {r for r in state.relations if r.endpoint != peers.endpoint}
    return dataclasses.replace(state, relations={peers, *others})


def peers_hold_the_users(ctx, state: testing.State) -> testing.State:
    """Units 1 and 2 loaded the client users the leader recorded (their report wakes it)."""
    peers = peers_of(state)
    digest = json.loads(peers.local_app_data[CLIENTS_KEY])["users_digest"]
    data = {n: dict(d) | {APPLIED_KEY: digest} for n, d in peers.peers_data.items()}
    peers = dataclasses.replace(peers, peers_data=data)
    state = dataclasses.replace(
        state, relations={*(r for r in state.relations if r.id != peers.id), peers}
    )
    return ctx.run(ctx.on.relation_changed(peers, remote_unit=1), state)


def relation(state: testing.State, endpoint: str) -> Any:
    return next(r for r in state.relations if r.endpoint == endpoint)


def with_relation(state: testing.State, rel) -> testing.State:
    others = {r for r in state.relations if r.id != rel.id}
    return dataclasses.replace(state, relations={*others, rel})


def internal_passwords(state: testing.State) -> dict[str, str]:
    secret_id = peers_of(state).local_app_data[SECRET_ID_KEY]
    return dict(next(s for s in state.secrets if s.id == secret_id).tracked_content)


# ------------------------------------------------------------ legacy redis


def test_legacy_relation_publishes_hosts_the_primary_and_the_password(ctx, net, tmp_path):
    legacy = testing.Relation("redis", remote_app_name="old-app")
    state = three_units(ctx, net, tmp_path, relations=[legacy])
    state = ctx.run(ctx.on.relation_changed(legacy, remote_unit=0), state)

    out = relation(state, "redis")
    password = internal_passwords(state)["client-password"]
    published = {
        k: v
        for k, v in out.local_unit_data.items()
        if k in ("hostname", "port", "password", "leader-host")
    }
    assert published == {"hostname": HOST.format(0), "port": "6379", "password": password}
    assert dict(out.local_app_data) == {
        "leader-host": HOST.format(0),
        "port": "6379",
        "password": password,
    }
    assert cluster_facts(state).primary == f"{APP}/0"


def test_legacy_leader_host_follows_a_failover(ctx, net, tmp_path):
    legacy = testing.Relation("redis", remote_app_name="old-app")
    state = three_units(ctx, net, tmp_path, relations=[legacy])
    state = ctx.run(ctx.on.update_status(), state)
    assert relation(state, "redis").local_app_data["leader-host"] == HOST.format(0)

    state = ctx.run(ctx.on.update_status(), fail_over_to_unit_2(net, state))

    assert cluster_facts(state).primary == f"{APP}/2"
    assert relation(state, "redis").local_app_data["leader-host"] == HOST.format(2)
    # This unit's own data still names itself: it is a unit of the application.
    assert relation(state, "redis").local_unit_data["hostname"] == HOST.format(0)


def test_a_non_leader_publishes_its_unit_data_only(ctx, net, tmp_path):
    legacy = testing.Relation("redis", remote_app_name="old-app")
    state = three_units(ctx, net, tmp_path, relations=[legacy])
    state = ctx.run(
        ctx.on.relation_joined(legacy, remote_unit=0), dataclasses.replace(state, leader=False)
    )
    out = relation(state, "redis")
    assert out.local_unit_data["hostname"] == HOST.format(0)
    assert "leader-host" not in out.local_app_data


# ------------------------------------------------------------ valkey_client


@pytest.fixture
def rctx() -> testing.Context:
    requirer.RECEIVED.clear()
    return testing.Context(
        requirer.ValkeyRequirerCharm, meta=REQUIRER_META, app_name="requirer", unit_id=0
    )


def requirer_asks(rctx) -> dict[str, str]:
    """The requirer's relation-created: what its handler writes in its application data."""
    rel = testing.Relation("valkey", remote_app_name=APP)
    out = rctx.run(rctx.on.relation_created(rel), testing.State(leader=True, relations={rel}))
    return dict(relation(out, "valkey").local_app_data)


def shared_secrets(state: testing.State, rel_id: int) -> list[testing.Secret]:
    """Our secrets granted to the relation, as the requirer sees them (not the owner)."""
    return [
        testing.Secret(
            id=s.id,
            tracked_content=s.latest_content or s.tracked_content,
            latest_content=s.latest_content or s.tracked_content,
            label=None,
        )
        for s in state.secrets
        if rel_id in s.remote_grants
    ]


def requirer_hears(rctx, asked: dict[str, str], ours: testing.State, rel_id: int, unit=None):
    """Feed our provider's output (databag and shared secrets) to the requirer.

    Returns what the requirer's handler remembers in its unit data (its diff base).
    """
    provided = relation(ours, "valkey-client")
    rel = testing.Relation(
        "valkey",
        remote_app_name=APP,
        local_app_data=asked,
        local_unit_data=unit or {},
        remote_app_data=dict(provided.local_app_data),
        remote_units_data={0: {}},
    )
    state = testing.State(leader=True, relations={rel}, secrets=shared_secrets(ours, rel_id))
    out = rctx.run(rctx.on.relation_changed(rel, remote_unit=0), state)
    return dict(relation(out, "valkey").local_unit_data)


def test_a_requirer_on_the_library_gets_a_user_endpoints_and_sentinels(ctx, net, tmp_path, rctx):
    asked = requirer_asks(rctx)
    client = testing.Relation("valkey-client", remote_app_name="requirer", remote_app_data=asked)
    state = three_units(ctx, net, tmp_path, relations=[client])
    state = ctx.run(ctx.on.relation_changed(client, remote_unit=0), state)
    state = peers_hold_the_users(ctx, state)
    print("provider app data:", json.dumps(dict(relation(state, "valkey-client").local_app_data)))

    requirer_hears(rctx, asked, state, client.id)

    (event, seen), *_ = requirer.RECEIVED
    assert event == "ResourceCreatedEvent"
    print("requirer sees:", json.dumps({k: v for k, v in seen.items() if k != "password"}))
    assert seen["username"] == f"relation-{client.id}"
    assert seen["endpoints"] == f"{HOST.format(0)}:6379"
    assert seen["read-only-endpoints"] == f"{HOST.format(1)}:6379,{HOST.format(2)}:6379"
    assert seen["sentinel-endpoints"] == ",".join(HOST.format(n) + ":26379" for n in range(3))
    assert seen["master-name"] == "redis-k8s-g1"
    assert (seen["mode"], seen["version"], seen["tls"]) == ("sentinel", "7.0", False)
    # The user exists on this unit (ACL file, hash only) with the prefix the requirer asked.
    acl = (tmp_path / "redis" / ACL_FILE.lstrip("/")).read_text()
    line = next(x for x in acl.splitlines() if x.startswith(f"user relation-{client.id} "))
    assert f"#{password_hash(seen['password'])}" in line
    assert "~app:* &app:*" in line and "-@admin" in line
    assert seen["password"] not in acl
    assert (OWN, "ACL LOAD") in net.commands
    assert f"relation-{client.id}" in net.redis[OWN].users
    # The password is in a secret, never in the databags.
    for rel in state.relations:
        for data in (rel.local_app_data, rel.local_unit_data):
            assert seen["password"] not in json.dumps(dict(data))


def test_the_requirer_sees_the_endpoints_change_after_a_failover(ctx, net, tmp_path, rctx):
    asked = requirer_asks(rctx)
    client = testing.Relation("valkey-client", remote_app_name="requirer", remote_app_data=asked)
    state = three_units(ctx, net, tmp_path, relations=[client])
    state = ctx.run(ctx.on.relation_changed(client, remote_unit=0), state)
    state = peers_hold_the_users(ctx, state)
    before = dict(relation(state, "valkey-client").local_app_data)
    remembered = requirer_hears(rctx, asked, state, client.id)

    state = ctx.run(ctx.on.update_status(), fail_over_to_unit_2(net, state))
    after = dict(relation(state, "valkey-client").local_app_data)
    print("before:", before["requests"])
    print("after:", after["requests"])
    requirer.RECEIVED.clear()
    requirer_hears(rctx, asked, state, client.id, unit=remembered)

    assert cluster_facts(state).primary == f"{APP}/2"
    events = dict(requirer.RECEIVED)
    assert "ResourceEndpointsChangedEvent" in events
    seen = events["ResourceEndpointsChangedEvent"]
    assert seen["endpoints"] == f"{HOST.format(2)}:6379"
    assert seen["read-only-endpoints"] == f"{HOST.format(0)}:6379,{HOST.format(1)}:6379"


@pytest.mark.parametrize("endpoint", ["valkey-client", "redis-client"])
def test_both_endpoints_serve_the_same_protocol(ctx, net, tmp_path, rctx, endpoint):
    asked = requirer_asks(rctx)
    client = testing.Relation(endpoint, remote_app_name="requirer", remote_app_data=asked)
    state = three_units(ctx, net, tmp_path, relations=[client])
    state = ctx.run(ctx.on.relation_changed(client, remote_unit=0), state)
    state = peers_hold_the_users(ctx, state)
    requests = json.loads(relation(state, endpoint).local_app_data["requests"])
    assert requests[0]["endpoints"] == f"{HOST.format(0)}:6379"
    assert requests[0]["secret-user"].startswith("secret:")
    assert f"relation-{client.id}" in net.redis[OWN].users


def test_credentials_wait_until_every_serving_unit_holds_the_user(ctx, net, tmp_path, rctx):
    asked = requirer_asks(rctx)
    client = testing.Relation("valkey-client", remote_app_name="requirer", remote_app_data=asked)
    state = three_units(ctx, net, tmp_path, relations=[client])
    state = ctx.run(ctx.on.relation_changed(client, remote_unit=0), state)

    (response,) = json.loads(relation(state, "valkey-client").local_app_data["requests"])
    assert response["endpoints"] == f"{HOST.format(0)}:6379"  # where, already
    assert not response.get("secret-user")  # but no credentials while units 1, 2 lack the user
    assert f"relation-{client.id}" in net.redis[OWN].users
    assert (
        peers_of(state).local_unit_data[APPLIED_KEY]
        == json.loads(peers_of(state).local_app_data[CLIENTS_KEY])["users_digest"]
    )

    state = peers_hold_the_users(ctx, state)
    (response,) = json.loads(relation(state, "valkey-client").local_app_data["requests"])
    assert response["secret-user"].startswith("secret:")


def created_user(ctx, net, tmp_path, rctx) -> tuple[testing.State, testing.Relation, str]:
    asked = requirer_asks(rctx)
    client = testing.Relation("valkey-client", remote_app_name="requirer", remote_app_data=asked)
    state = three_units(ctx, net, tmp_path, relations=[client])
    state = ctx.run(ctx.on.relation_changed(client, remote_unit=0), state)
    state = peers_hold_the_users(ctx, state)
    user = f"relation-{client.id}"
    assert user in net.redis[OWN].users
    return state, relation(state, "valkey-client"), user


GARBAGE = [
    {"version": "v1", "requests": "[{not json"},
    {"version": "v1", "requests": '[{"resource": 5, "salt": []}]'},
    {"version": "v1", "requests": '"a string"'},
    {"database": "x", "extra-user-roles": "admin"},  # v0, asking for admin
    {"version": "v1", "requests": '[{"resource": "*?[x]", "request-id": "r1", "salt": "s"}]'},
]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_requirer_sending_garbage_is_reported_and_loses_nothing(
    ctx, net, tmp_path, rctx, garbage
):
    state, client, user = created_user(ctx, net, tmp_path, rctx)
    published = dict(client.local_app_data)

    spoiled = dataclasses.replace(client, remote_app_data=garbage)
    state = ctx.run(ctx.on.relation_changed(spoiled, remote_unit=0), with_relation(state, spoiled))

    assert user in net.redis[OWN].users  # the user of the good request is still there
    assert relation(state, "valkey-client").local_app_data["requests"] == published["requests"]
    note = json.loads(peers_of(state).local_app_data[CLIENTS_KEY])["note"]
    assert note.startswith("requirer: ")
    assert isinstance(state.app_status, ops.ActiveStatus)
    assert "client relations: requirer: " in state.app_status.message


def test_a_request_for_a_bad_prefix_or_admin_gets_no_user(ctx, net, tmp_path):
    bad = testing.Relation(
        "valkey-client",
        remote_app_name="greedy",
        remote_app_data={"database": "x", "extra-user-roles": "admin"},
    )
    state = three_units(ctx, net, tmp_path, relations=[bad])
    state = ctx.run(ctx.on.relation_changed(bad, remote_unit=0), state)
    assert not [u for u in net.redis[OWN].users if u.startswith("relation-")]
    assert "extra-user-roles 'admin' is not one of default, read-only" in state.app_status.message


def test_breaking_the_relation_removes_its_user_everywhere(ctx, net, tmp_path, rctx):
    state, client, user = created_user(ctx, net, tmp_path, rctx)
    state = ctx.run(ctx.on.relation_broken(client), state)
    assert user not in net.redis[OWN].users
    assert user not in (tmp_path / "redis" / ACL_FILE.lstrip("/")).read_text()
    record = json.loads(peers_of(state).local_app_data[CLIENTS_KEY])
    users_secret = next(s for s in state.secrets if s.id == record["users_secret"])
    assert json.loads(users_secret.latest_content["users"]) == {}


def test_a_non_leader_holds_every_client_user(ctx, net, tmp_path, rctx):
    state, _, user = created_user(ctx, net, tmp_path, rctx)
    net.redis[OWN].users.clear()
    acl = tmp_path / "redis" / ACL_FILE.lstrip("/")
    acl.unlink()
    state = ctx.run(ctx.on.update_status(), dataclasses.replace(state, leader=False))
    assert user in acl.read_text()
    assert user in net.redis[OWN].users


def test_unreadable_client_users_change_nothing(ctx, net, tmp_path, rctx):
    state, client, user = created_user(ctx, net, tmp_path, rctx)
    acl = tmp_path / "redis" / ACL_FILE.lstrip("/")
    before = acl.read_text()
    peers = peers_of(state)
    record = json.loads(peers.local_app_data[CLIENTS_KEY]) | {"users_secret": "secret:gone"}
    peers = dataclasses.replace(
        peers, local_app_data=dict(peers.local_app_data) | {CLIENTS_KEY: json.dumps(record)}
    )
    state = with_relation(state, peers)
    for leader in (True, False):
        state = ctx.run(ctx.on.update_status(), dataclasses.replace(state, leader=leader))
        assert acl.read_text() == before  # not rewritten without the client users
        assert user in net.redis[OWN].users
    assert json.loads(peers_of(state).local_app_data[CLIENTS_KEY])["users_secret"] == "secret:gone"


# ------------------------------------------------------- the legacy library


class LegacyRequirer(ops.CharmBase):
    """A requirer charm of the legacy interface, on the library as charms vendor it."""

    on = RedisRelationCharmEvents()  # type: ignore[reportAssignmentType]

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.redis = RedisRequires(self)
        self.seen: list[tuple[str, str | None]] = []
        framework.observe(self.on.redis_relation_updated, self._updated)
        framework.observe(self.redis.on.primary_changed, self._moved)

    def _updated(self, event) -> None:
        self.seen.append(("updated", self.redis.url))

    def _moved(self, event) -> None:
        self.seen.append(("primary_changed", event.current))


LEGACY_META = {"name": "legacy", "requires": {"redis": {"interface": "redis"}}}


def test_the_legacy_library_reads_our_provider_and_follows_the_primary(ctx, net, tmp_path):
    legacy = testing.Relation("redis", remote_app_name="old-app")
    ours = three_units(ctx, net, tmp_path, relations=[legacy])
    ours = ctx.run(ctx.on.relation_changed(legacy, remote_unit=0), ours)
    password = internal_passwords(ours)["client-password"]
    lctx = testing.Context(LegacyRequirer, meta=LEGACY_META)

    def hear(ours: testing.State, stored=frozenset()) -> tuple[list, testing.State]:
        out = relation(ours, "redis")
        rel = testing.Relation(
            "redis",
            remote_app_name=APP,
            remote_app_data=dict(out.local_app_data),
            remote_units_data={0: dict(out.local_unit_data)},
        )
        state = testing.State(relations={rel}, stored_states=set(stored))
        with lctx(lctx.on.relation_changed(rel, remote_unit=0), state) as manager:
            after = manager.run()
            return manager.charm.seen, after

    seen, after = hear(ours)
    url = f"redis://:{password}@{HOST.format(0)}:6379"
    assert seen == [("updated", url), ("primary_changed", HOST.format(0))]

    ours = ctx.run(ctx.on.update_status(), fail_over_to_unit_2(net, ours))
    seen, _ = hear(ours, after.stored_states)
    assert seen == [
        ("updated", f"redis://:{password}@{HOST.format(2)}:6379"),
        ("primary_changed", HOST.format(2)),
    ]
