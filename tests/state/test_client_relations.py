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

import pytest
import yaml
from ops import testing

from charm import CLUSTER_JOURNAL_KEY, SECRET_ID_KEY, UNIT_JOURNAL_KEY
from machine import journal
from machine.types import ClusterState, Role, UnitFacts, UnitState
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


def relation(state: testing.State, endpoint: str):
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
