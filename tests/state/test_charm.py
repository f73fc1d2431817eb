"""The charm with ops.testing: events in, relation data, layers, files, secrets and status out.

Juju and Pebble are ops.testing's; redis and sentinel are the fakes of
``fake_workload`` at the admin-client boundary (the real processes are tested in
``tests/integration``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from pathlib import Path

import ops
import pytest
from ops import testing

from charm import (
    CLUSTER_JOURNAL_KEY,
    PEER,
    SECRET_ID_KEY,
    UNIT_JOURNAL_KEY,
    app_status,
    unit_status,
)
from machine import journal
from machine.types import ClusterFacts, ClusterState, UnitFacts, UnitState
from tests.state.fake_workload import FakeNetwork, FakeSentinel, monitored
from workload import layers
from workload.config import RDB_SAVE_SCHEDULE, password_hash
from workload.workload import (
    ACL_FILE,
    CONFIG_DIR,
    FAILED_OVER_TIMEOUT_S,
    OWN_SERVER_TIMEOUT_S,
    REDIS_CONF,
    REDIS_SECRETS,
    SENTINEL_CONF,
    SENTINEL_DIR,
    SWITCH_SCRIPT,
)

APP = "redis-k8s"
ME = f"{APP}/0"
OWN = "192.0.2.0"  # ops.testing's network-get address for the unit
DOCS = Path(__file__).parents[2] / "docs" / "events.md"


def containers(tmp_path: Path, **layers_by_container) -> tuple[testing.Container, ...]:
    result = []
    for name in ("redis", "sentinel"):
        mounts = {}
        for label, location in (("etc", "/etc"), ("data", "/var/lib/redis")):
            source = tmp_path / name / location.lstrip("/")
            source.mkdir(parents=True, exist_ok=True)
            mounts[label] = testing.Mount(location=location, source=source)
        result.append(
            testing.Container(
                name,
                can_connect=True,
                mounts=mounts,
                layers=layers_by_container.get(name, {}),
            )
        )
    return tuple(result)


def fresh_state(tmp_path: Path, *, leader: bool = True, peers=(), config=None, **kw):
    relation = testing.PeerRelation(PEER, peers_data={n: {} for n in peers})
    return testing.State(
        leader=leader,
        relations={relation},
        containers=set(containers(tmp_path)),
        config=config or {},
        **kw,
    )


def run_hooks(ctx, net: FakeNetwork, tmp_path: Path, state, events) -> testing.State:
    """Run events one after the other, starting what the charm configured after each."""
    for make_event in events:
        state = ctx.run(make_event(ctx, state), state)
        net.boot(OWN, tmp_path / "redis", tmp_path / "sentinel")
    return state


def peers_of(state: testing.State) -> testing.PeerRelation:
    return next(r for r in state.relations if r.endpoint == PEER)  # type: ignore[return-value]


def unit_facts(state: testing.State):
    return journal.load_unit(peers_of(state).local_unit_data.get(UNIT_JOURNAL_KEY))[0].current


def cluster_facts(state: testing.State):
    return journal.load_cluster(peers_of(state).local_app_data.get(CLUSTER_JOURNAL_KEY))[0].current


def update_status(ctx, state):
    return ctx.on.update_status()


def start(ctx, state):
    return ctx.on.start()


# ---------------------------------------------------------------- events table


def documented_events() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z-]+)`(?: \(action\))? \| `([a-z-]+)` \|", DOCS.read_text(), re.M)
    return dict(rows)


def test_the_charm_observes_exactly_the_events_of_the_table(ctx, tmp_path) -> None:
    with ctx(ctx.on.update_status(), fresh_state(tmp_path)) as manager:
        charm = manager.charm
        observed = {
            kind.replace("_", "-").removesuffix("-action"): machine_input.value
            for kind, (_, machine_input) in charm.inputs.items()
        }
        handlers = charm.framework._observers  # (observer path, method, emitter path, kind)
        observed_kinds = {kind for _, method, _, kind in handlers if method == "_on_event"}
    assert observed == documented_events()
    assert observed_kinds == set(charm.inputs)


# ----------------------------------------------------------------- first start


def test_first_hook_starts_redis_fenced_with_private_files_and_a_secret(
    ctx, net, tmp_path
) -> None:
    state = ctx.run(ctx.on.start(), fresh_state(tmp_path))

    facts = unit_facts(state)
    assert facts.state is UnitState.WAITING_FOR_PRIMARY
    redis_root = tmp_path / "redis"
    conf = (redis_root / REDIS_CONF.lstrip("/")).read_text()
    assert "replicaof 127.255.255.254 1" in conf  # fenced: takes no writes, serves no sync
    assert f'include "{REDIS_SECRETS}"' in conf
    assert "replica-announce-ip redis-k8s-0.redis-k8s-endpoints" in conf
    assert f"bind {OWN}\n" in conf  # the pod's address from network-get
    for path, mode in ((CONFIG_DIR, 0o700), (REDIS_CONF, 0o600), (REDIS_SECRETS, 0o600)):
        assert stat.S_IMODE((redis_root / path.lstrip("/")).stat().st_mode) == mode, path
    plan = state.get_container("redis").plan
    assert layers.REDIS_SERVICE in plan.services
    assert layers.REDIS_CHECK in plan.checks
    assert f"-h {OWN} -p 6379 PING" in plan.checks[layers.REDIS_CHECK].exec["command"]
    assert plan.services[layers.REDIS_SERVICE].on_failure == "restart"  # aof by default

    app_data = peers_of(state).local_app_data
    secret = next(iter(state.secrets))
    assert app_data[SECRET_ID_KEY] == secret.id
    passwords = set(secret.tracked_content.values())
    assert len(passwords) == 4  # admin, replication, sentinel, default (legacy clients)
    secrets_text = (redis_root / REDIS_SECRETS.lstrip("/")).read_text()
    assert secrets_text == (
        f'masteruser replication\nmasterauth "{secret.tracked_content["replication-password"]}"\n'
    )
    acl_text = (redis_root / ACL_FILE.lstrip("/")).read_text()
    assert stat.S_IMODE((redis_root / ACL_FILE.lstrip("/")).stat().st_mode) == 0o600
    assert f'aclfile "{ACL_FILE}"' in conf
    for password in passwords:  # every user by hash, no password in the file
        assert password not in acl_text
        assert f"#{password_hash(password)}" in acl_text
    users = {line.split()[1] for line in acl_text.splitlines()}
    assert users == {"charm-admin", "default", "replication", "sentinel"}
    assert_no_password_in(ctx, state, passwords)
    assert state.unit_status == ops.WaitingStatus(
        "fenced until a primary is known (cluster forming)"
    )


def lone_primary(ctx, net, tmp_path) -> testing.State:
    """A one-unit application, bootstrapped: the leader is the primary."""
    events = [start, update_status, update_status, update_status]
    return run_hooks(ctx, net, tmp_path, fresh_state(tmp_path), events)


def test_a_lone_leader_bootstraps_and_serves_as_primary_not_ha(ctx, net, tmp_path) -> None:
    state = lone_primary(ctx, net, tmp_path)

    assert unit_facts(state).state is UnitState.PRIMARY
    cluster = cluster_facts(state)
    assert cluster.state is ClusterState.NOT_HA
    assert cluster.primary == cluster.bootstrapped == ME
    assert (OWN, "REPLICAOF", "NO", "ONE") in net.commands
    sentinel_root = tmp_path / "sentinel"
    sentinel_conf = (sentinel_root / SENTINEL_CONF.lstrip("/")).read_text()
    assert "sentinel monitor redis-k8s-g1 redis-k8s-0.redis-k8s-endpoints 6379 1" in sentinel_conf
    assert f'client-reconfig-script redis-k8s-g1 "{SWITCH_SCRIPT}"' in sentinel_conf
    for path, mode in ((SENTINEL_DIR, 0o700), (SENTINEL_CONF, 0o600), (SWITCH_SCRIPT, 0o755)):
        assert stat.S_IMODE((sentinel_root / path.lstrip("/")).stat().st_mode) == mode, path
    assert layers.SENTINEL_CHECK in state.get_container("sentinel").plan.checks
    assert state.unit_status == ops.ActiveStatus("primary")
    assert state.app_status == ops.ActiveStatus(
        "primary redis-k8s/0; not HA: 1 unit, failover needs 3"
    )
    secret = next(iter(state.secrets))
    assert_no_password_in(ctx, state, set(secret.tracked_content.values()))


def assert_no_password_in(ctx: testing.Context, state: testing.State, passwords: set[str]):
    """No password in a layer (commands, environment), a databag, the status or the log."""
    visible = [
        json.dumps([layer.to_dict() for layer in c.layers.values()]) for c in state.containers
    ]
    for relation in state.relations:
        visible.append(json.dumps(dict(relation.local_app_data)))
        visible.append(json.dumps(dict(relation.local_unit_data)))
    visible += [state.unit_status.message, state.app_status.message]
    visible += [line.message for line in ctx.juju_log]
    assert ctx.juju_log  # the log was captured
    for text in visible:
        for password in passwords:
            assert password not in text


# --------------------------------------------------------------------- config


AT_LEAST, AT_MOST = (
    "Input should be greater than or equal to",
    "Input should be less than or equal to",
)
BAD_VALUES = [
    ("sentinel-down-after-ms", 100, f"sentinel-down-after-ms: {AT_LEAST} 500"),
    ("sentinel-failover-timeout-ms", 10, f"sentinel-failover-timeout-ms: {AT_LEAST} 1000"),
    ("min-replicas-to-write", 9, f"min-replicas-to-write: {AT_MOST} 6"),
    ("min-replicas-max-lag-s", 0, f"min-replicas-max-lag-s: {AT_LEAST} 1"),
    ("persistence", "sometimes", "persistence: Input should be 'aof', 'rdb', 'aof+rdb' or 'none'"),
    ("maxmemory", "lots", "maxmemory: must be a memory size such as 0, 512mb or 2gb"),
    ("maxmemory-policy", "lru", "maxmemory-policy: Input should be 'noeviction', 'allkeys-lru'"),
]  # fmt: skip


@pytest.mark.parametrize(("option", "value", "message"), BAD_VALUES)
def test_a_bad_value_blocks_naming_the_option_and_touches_nothing(
    ctx, net, tmp_path, option, value, message
) -> None:
    state = ctx.run(ctx.on.config_changed(), fresh_state(tmp_path, config={option: value}))

    assert isinstance(state.unit_status, ops.BlockedStatus)
    assert state.unit_status.message.startswith(f"invalid config: {message}")
    assert not (tmp_path / "redis" / REDIS_CONF.lstrip("/")).exists()  # nothing rendered
    assert not net.commands


def test_a_bad_value_on_a_running_primary_restarts_nothing_and_a_fix_is_applied_live(
    ctx, net, tmp_path
) -> None:
    state = run_hooks(ctx, net, tmp_path, fresh_state(tmp_path), [start, update_status])
    conf_before = (tmp_path / "redis" / REDIS_CONF.lstrip("/")).read_text()
    net.commands.clear()

    bad = dataclasses.replace(state, config={"maxmemory": "lots"})
    state = ctx.run(ctx.on.config_changed(), bad)
    assert state.unit_status.message.startswith("invalid config: maxmemory")
    assert (tmp_path / "redis" / REDIS_CONF.lstrip("/")).read_text() == conf_before
    assert not [c for c in net.commands if c[1] == "CONFIG SET"]

    good = dataclasses.replace(state, config={"maxmemory": "64mb"})
    state = ctx.run(ctx.on.config_changed(), good)
    assert net.redis[OWN].config["maxmemory"] == str(64 * 1024**2)
    assert "maxmemory 67108864" in (tmp_path / "redis" / REDIS_CONF.lstrip("/")).read_text()
    assert not isinstance(state.unit_status, ops.BlockedStatus)


@pytest.mark.parametrize(
    ("persistence", "appendonly", "save"),
    [("none", "no", ""), ("rdb", "no", RDB_SAVE_SCHEDULE), ("aof+rdb", "yes", RDB_SAVE_SCHEDULE)],
)
def test_persistence_changed_on_a_running_primary_applies_at_once(
    ctx, net, tmp_path, persistence, appendonly, save
) -> None:
    state = run_hooks(ctx, net, tmp_path, fresh_state(tmp_path), [start, update_status])
    state = ctx.run(
        ctx.on.config_changed(), dataclasses.replace(state, config={"persistence": persistence})
    )
    live = net.redis[OWN].config
    assert (live["appendonly"], live["save"]) == (appendonly, save)  # not only at the next start
    assert f'save "{save}"' in (tmp_path / "redis" / REDIS_CONF.lstrip("/")).read_text()


def test_persistence_none_makes_pebble_leave_a_dead_redis_down(ctx, net, tmp_path) -> None:
    state = ctx.run(ctx.on.start(), fresh_state(tmp_path, config={"persistence": "none"}))
    plan = state.get_container("redis").plan
    assert plan.services[layers.REDIS_SERVICE].on_failure == "ignore"


# ------------------------------------------------------------ failover events


def test_a_sentinel_notice_of_a_new_primary_makes_the_old_one_replicate_from_it(
    ctx, net, tmp_path
) -> None:
    state = lone_primary(ctx, net, tmp_path)
    assert unit_facts(state).state is UnitState.PRIMARY
    # Sentinel failed over to unit 2 at a higher epoch, and says so.
    net.sentinels[OWN] = FakeSentinel(
        {"redis-k8s-g1": monitored("redis-k8s-g1", "redis-k8s-2.redis-k8s-endpoints", epoch=5)}
    )
    net.commands.clear()
    notice = testing.Notice(key=layers.PRIMARY_SWITCH_NOTICE)
    container = dataclasses.replace(state.get_container("sentinel"), notices=[notice])
    state = dataclasses.replace(
        state,
        containers={c for c in state.containers if c.name != "sentinel"} | {container},
        leader=False,  # leadership moved on; this unit only follows Sentinel's word
    )
    state = ctx.run(ctx.on.pebble_custom_notice(container, notice), state)

    assert (OWN, "REPLICAOF", "redis-k8s-2.redis-k8s-endpoints", "6379") in net.commands
    facts = unit_facts(state)
    assert facts.state is UnitState.SYNCING and facts.following == "redis-k8s/2"
    # Still syncing when the hook ends: the sync-done check runs, to wake the charm.
    assert sync_check(state) == ops.pebble.CheckStatus.UP
    redis_dir = tmp_path / "redis" / CONFIG_DIR.lstrip("/")
    assert (redis_dir / "replication-password").read_text() in content_of_secret(state)

    net.redis[OWN].link_up = True  # the sync is over: the check failed, Juju says so
    check = next(c for c in state.get_container("redis").check_infos if c.name == SYNC_CHECK)
    state = ctx.run(ctx.on.pebble_check_failed(state.get_container("redis"), check), state)
    assert unit_facts(state).state is UnitState.REPLICA
    assert state.unit_status == ops.ActiveStatus("replica of redis-k8s/2")
    assert sync_check(state) == ops.pebble.CheckStatus.INACTIVE  # stopped until the next sync


@pytest.mark.parametrize(
    ("from_host", "timeout"),
    [
        ("redis-k8s-0.redis-k8s-endpoints", FAILED_OVER_TIMEOUT_S),
        ("redis-k8s-1.redis-k8s-endpoints", OWN_SERVER_TIMEOUT_S),
    ],
)
def test_the_hook_of_a_switch_away_from_this_unit_waits_little_for_its_own_redis(
    ctx, net, tmp_path, from_host, timeout
) -> None:
    """Sentinel found this redis unresponsive: a frozen one must not delay the record."""
    state = lone_primary(ctx, net, tmp_path)
    switch = {
        "master": "redis-k8s-g1",
        "role": "observer",
        "state": "start",
        "from-host": from_host,
        "from-port": "6379",
        "to-host": "redis-k8s-2.redis-k8s-endpoints",
        "to-port": "6379",
    }
    notice = testing.Notice(key=layers.PRIMARY_SWITCH_NOTICE, last_data=switch)
    container = dataclasses.replace(state.get_container("sentinel"), notices=[notice])
    state = dataclasses.replace(
        state, containers={c for c in state.containers if c.name != "sentinel"} | {container}
    )
    net.redis_timeouts.clear()
    ctx.run(ctx.on.pebble_custom_notice(container, notice), state)

    assert {t for host, t in net.redis_timeouts if host == OWN} == {timeout}


@pytest.mark.parametrize("promotion_confirmed", [True, False])
def test_the_sentinel_running_a_failover_names_the_replica_it_promoted(
    ctx, net, tmp_path, promotion_confirmed
) -> None:
    """Its unit's switch notice comes at the promotion, seconds before the failover ends.

    ``SENTINEL MASTERS`` still shows the old address then; what Sentinel tells
    clients is already the promoted replica, once the promotion is confirmed.
    """
    state = lone_primary(ctx, net, tmp_path)
    old = "redis-k8s-0.redis-k8s-endpoints"
    failing_over = dataclasses.replace(
        monitored("redis-k8s-g1", old, epoch=5),
        flags=frozenset({"master", "s_down", "o_down", "failover_in_progress"}),
    )
    net.sentinels[OWN] = FakeSentinel({"redis-k8s-g1": failing_over})
    if promotion_confirmed:
        net.sentinels[OWN].promoted["redis-k8s-g1"] = "redis-k8s-2.redis-k8s-endpoints"

    state = ctx.run(ctx.on.update_status(), state)

    expected = "redis-k8s/2" if promotion_confirmed else None
    assert unit_facts(state).sentinel_primary == expected


def test_a_redis_that_does_not_answer_is_logged_once_per_hook(ctx, net, tmp_path) -> None:
    """Each log line is a juju-log process: one per failure, however often it is met."""
    state = lone_primary(ctx, net, tmp_path)
    del net.redis[OWN]  # connection refused, in every observation and every command
    ctx.juju_log.clear()

    ctx.run(ctx.on.update_status(), state)

    lines = [line.message for line in ctx.juju_log]
    assert sum("redis does not answer" in line for line in lines) == 1, lines


SYNC_CHECK = layers.SYNC_DONE_CHECK


def sync_check(state: testing.State) -> ops.pebble.CheckStatus:
    infos = state.get_container("redis").check_infos
    return next(c.status for c in infos if c.name == SYNC_CHECK)


def content_of_secret(state: testing.State) -> list[str]:
    secret = next(iter(state.secrets))
    return list((secret.latest_content or secret.tracked_content).values())


# --------------------------------------------------------------- the action


def test_switchover_on_a_non_leader_fails_with_a_reason(ctx, net, tmp_path) -> None:
    with pytest.raises(testing.ActionFailed, match="run the switchover action on the leader"):
        ctx.run(ctx.on.action("switchover"), fresh_state(tmp_path, leader=False))


def test_switchover_to_a_bad_target_fails_with_a_reason(ctx, net, tmp_path) -> None:
    with pytest.raises(testing.ActionFailed, match="target must be a unit of redis-k8s"):
        ctx.run(ctx.on.action("switchover", params={"target": "x; rm"}), fresh_state(tmp_path))


def test_switchover_before_the_cluster_settled_is_refused_with_a_reason(
    ctx, net, tmp_path
) -> None:
    with pytest.raises(testing.ActionFailed, match="cluster is forming"):
        ctx.run(ctx.on.action("switchover"), fresh_state(tmp_path))


# -------------------------------------------------------------- corrupt data


def test_corrupt_peer_data_loads_as_a_safe_state_without_a_traceback(ctx, net, tmp_path) -> None:
    relation = testing.PeerRelation(
        PEER,
        local_app_data={CLUSTER_JOURNAL_KEY: "{not json", SECRET_ID_KEY: "secret:nope"},
        local_unit_data={UNIT_JOURNAL_KEY: json.dumps({"foreign": True})},
    )
    state = testing.State(leader=False, relations={relation}, containers=set(containers(tmp_path)))
    state = ctx.run(ctx.on.update_status(), state)
    assert cluster_facts(state).primary is None
    assert isinstance(state.unit_status, ops.WaitingStatus)


def test_before_the_peer_relation_exists_nothing_is_started(ctx, net, tmp_path) -> None:
    state = ctx.run(ctx.on.install(), testing.State(containers=set(containers(tmp_path))))
    assert state.unit_status == ops.WaitingStatus("waiting for the peer relation")
    assert not state.get_container("redis").layers


# ---------------------------------------------------------------- teardown


def test_a_primary_with_peers_tries_to_hand_over_before_it_stops(ctx, net, tmp_path) -> None:
    state = lone_primary(ctx, net, tmp_path)
    peers = peers_of(state)
    joined = dataclasses.replace(peers, peers_data={1: {}})
    state = dataclasses.replace(state, relations={joined})

    state = ctx.run(ctx.on.stop(), state)

    facts = unit_facts(state)
    assert facts.state is UnitState.STOPPED
    assert facts.handover == "no connected replica to hand over to"  # recorded, not ignored
    for name, service in (("redis", layers.REDIS_SERVICE), ("sentinel", layers.SENTINEL_SERVICE)):
        assert (
            state.get_container(name).service_statuses[service]
            == ops.pebble.ServiceStatus.INACTIVE
        )


# ------------------------------------------------------------------ status


def test_status_says_a_failover_is_in_progress_while_sentinel_and_the_unit_disagree() -> None:
    facts = UnitFacts(
        state=UnitState.REPLICA, following="redis-k8s/0", sentinel_primary="redis-k8s/2"
    )
    assert unit_status(facts, ClusterFacts()) == ops.MaintenanceStatus(
        "failover in progress: Sentinel names redis-k8s/2, following redis-k8s/0"
    )


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            ClusterFacts(state=ClusterState.HA, primary="redis-k8s/0", quorum=2,
                         members=("redis-k8s/0", "redis-k8s/1", "redis-k8s/2")),
            ops.ActiveStatus("primary redis-k8s/0; HA, sentinel quorum 2/3"),
        ),
        (
            ClusterFacts(state=ClusterState.NOT_HA, primary="redis-k8s/0",
                         members=("redis-k8s/0", "redis-k8s/1")),
            ops.ActiveStatus("primary redis-k8s/0; not HA: 2 units, failover needs 3"),
        ),
        (
            ClusterFacts(state=ClusterState.NO_QUORUM, primary="redis-k8s/0", quorum=2,
                         members=("redis-k8s/0", "redis-k8s/1", "redis-k8s/2")),
            ops.BlockedStatus(
                "primary redis-k8s/0; fewer than 2 of 3 sentinels up: failover impossible"
            ),
        ),
    ],
)  # fmt: skip
def test_the_application_status_says_whether_failover_is_possible(cluster, expected) -> None:
    assert app_status(cluster) == expected
