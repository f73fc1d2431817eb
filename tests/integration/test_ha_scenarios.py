"""HA claims on `redis-k8s-local`: faults under a continuous writer, then the same end state.

Each scenario starts a fresh 3-unit cluster (down-after 2 s; update-status only
every hour, so what the charm learns it learns from Pebble notices and checks),
runs a `Writer` through the fault, and ends with `assert_converged`: one master,
replicas linked and caught up, every sentinel naming it with no ghosts, the
charm's records and statuses agreeing. Acknowledged writes must all be present
unless the scenario states a bound for the ones that may be lost, and asserts it.
With ``KEEP_CLUSTER=1`` the last cluster is left running for a look at its logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_k8s_local import cli

from tests.integration.cluster_support import (
    DOWN_AFTER_MS,
    SETTLE_TIMEOUT_S,
    Writer,
    assert_converged,
    deployed,
    local,
    monitored,
    record_figure,
    redis_of,
    skip_without_local_cluster,
    status,
    wait_for,
)

pytestmark = pytest.mark.integration

skip_without_local_cluster()

ASYNC_REPLICATION_WINDOW_S = 0.5
"""A write acknowledged this shortly before the primary froze may not have reached a replica."""
KILL_DOWN_AFTER_MS = 5000
"""For the SIGKILL scenario: Pebble restarts redis in about 1 s (backoff 1 s), far inside it."""


@pytest.fixture
def cluster() -> Iterator[None]:
    yield from deployed()


@pytest.fixture
def four_units() -> Iterator[None]:
    yield from deployed(units=4)


@pytest.fixture
def cluster_without_persistence() -> Iterator[None]:
    yield from deployed("persistence=none")


@pytest.fixture
def cluster_with_default_down_after() -> Iterator[None]:
    """A down-after Pebble's restart of a killed redis beats even on a loaded machine."""
    yield from deployed(f"sentinel-down-after-ms={KILL_DOWN_AFTER_MS}")


def addresses() -> list[str]:
    return [u["address"] for u in status()["units"]]


def sentinel_names_other_than(old: dict) -> bool:
    """A sentinel of another unit names a primary other than ``old``."""
    others = [u for u in status()["units"] if u["name"] != old["name"]]
    return any(monitored(u)[0]["ip"] != old["hostname"] for u in others)


def writes_continue(writer: Writer, after: float) -> bool:
    """The writer had a write acknowledged after ``after`` (monotonic time)."""
    return any(t > after for t in list(writer.acknowledged.values())[-50:])


def dispatched(unit: str, hook: str) -> bool:
    """The unit's dispatch log shows ``hook`` was run."""
    log = cli.state_dir() / "logs" / f"{unit.replace('/', '-')}.dispatch.log"
    return f" {hook}\n" in log.read_text()


def test_primary_frozen_past_down_after_fails_over_and_rejoins_as_replica(cluster):
    old = assert_converged(3)
    with Writer(addresses()) as writer:
        frozen_at = time.monotonic()
        local("freeze", old["name"])
        wait_for("Sentinel to fail over", lambda: sentinel_names_other_than(old), timeout=30)
        wait_for("writes to the new primary", lambda: writes_continue(writer, frozen_at), 30)
        local("thaw", old["name"])
        time.sleep(0.5)  # let the writer keep going a moment after the thaw
    new = assert_converged(3)
    assert new["name"] != old["name"]
    assert any(dispatched(u["name"], "sentinel-pebble-custom-notice") for u in status()["units"])
    report = writer.report(new)
    record_figure(f"frozen primary: {report}")
    late = [
        i for i in report.lost if writer.acknowledged[i] < frozen_at - ASYNC_REPLICATION_WINDOW_S
    ]
    assert late == [], f"lost writes acknowledged well before the freeze: {late[:10]}"


def test_primary_pod_deleted_fails_over_and_comes_back_as_a_replica_with_its_data(cluster):
    old = assert_converged(3)
    with Writer(addresses()) as writer:
        deleted_at = time.monotonic()
        local("delete-pod", old["name"])
        wait_for("Sentinel to fail over", lambda: sentinel_names_other_than(old), timeout=30)
        wait_for("writes to the new primary", lambda: writes_continue(writer, deleted_at), 30)
    new = assert_converged(3)
    assert new["name"] != old["name"]
    report = writer.report(new)
    record_figure(f"deleted primary pod: {report}")
    late = [
        i for i in report.lost if writer.acknowledged[i] < deleted_at - ASYNC_REPLICATION_WINDOW_S
    ]
    assert late == [], f"lost writes acknowledged well before the deletion: {late[:10]}"
    assert redis_of(old).dbsize() == redis_of(new).dbsize()  # it came back with the data


def test_redis_killed_on_the_primary_with_aof_restarts_in_place_losing_nothing(
    cluster_with_default_down_after,
):
    old = assert_converged(3)
    with Writer(addresses()) as writer:
        local("kill", old["name"], "--service", "redis")
        killed_at = time.monotonic()
        wait_for("writes after the kill", lambda: writes_continue(writer, killed_at + 1), 30)
    new = assert_converged(3)
    assert new["name"] == old["name"], "Pebble restarted it before Sentinel's down-after"
    report = writer.report(new)
    record_figure(f"redis SIGKILL with AOF: {report}")
    assert report.lost == [], report


def test_planned_switchover_to_a_named_replica_loses_nothing(cluster):
    old = assert_converged(3)
    leader = next(u for u in status()["units"] if u["leader"])
    target = next(u for u in status()["units"] if u["name"] != old["name"])
    with Writer(addresses()) as writer:
        local("run", leader["name"], "switchover", f"target={target['name']}")
        wait_for(
            "Sentinel to name the target",
            lambda: monitored(target)[0]["ip"] == target["hostname"],
            timeout=60,
        )
        switched_at = time.monotonic()
        wait_for("writes to the new primary", lambda: writes_continue(writer, switched_at), 30)
    new = assert_converged(3)
    assert new["name"] == target["name"]
    report = writer.report(new)
    record_figure(f"planned switchover: {report}")
    assert report.lost == [], report


def test_removing_the_primary_hands_over_first_and_loses_nothing(cluster):
    old = assert_converged(3)
    with Writer(addresses()) as writer:
        local("remove-unit", old["name"])
        wait_for("the unit to go", lambda: len(status()["units"]) == 2, SETTLE_TIMEOUT_S)
        gone_at = time.monotonic()
        wait_for("writes after the removal", lambda: writes_continue(writer, gone_at), 30)
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    new = assert_converged(2)
    assert new["name"] != old["name"]
    report = writer.report(new)
    record_figure(f"primary removed: {report}")
    assert report.lost == [], report
    assert not Path(cli.state_dir() / "pods" / old["name"].replace("/", "-")).exists()


def test_a_replica_pod_restart_resyncs_without_a_failover(cluster):
    primary = assert_converged(3)
    replica = next(u for u in status()["units"] if u["name"] != primary["name"])
    with Writer(addresses()) as writer:
        local("delete-pod", replica["name"])
        wait_for(
            "the replica to serve again",
            lambda: redis_of(replica).info("replication")["master_link_status"] == "up",
            timeout=60,
        )
    final = assert_converged(3)
    assert final["name"] == primary["name"], "a replica restart must not fail over"
    report = writer.report(final)
    record_figure(f"replica pod restarted: {report}")
    assert report.lost == [], report


def test_scale_up_after_a_failover_gives_quorum_3_and_data_on_the_new_unit(cluster):
    old = assert_converged(3)
    local("freeze", old["name"])
    wait_for("Sentinel to fail over", lambda: sentinel_names_other_than(old), timeout=30)
    local("thaw", old["name"])
    first = assert_converged(3)
    redis_of(first).set("before-scale-up", "kept")
    local("add-unit")
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    final = assert_converged(4)
    assert final["name"] == first["name"]
    new = status()["units"][-1]
    assert redis_of(new).get("before-scale-up") == b"kept"


def test_the_primary_partitioned_from_the_majority_loses_only_writes_within_the_lag_bound(
    cluster,
):
    """The isolated primary keeps acknowledging writes until it has no replica within lag.

    Clients on the host still reach it (the partition cuts the pods from each
    other, not from clients), so writes it acknowledges after the cut are lost
    when it rejoins as a replica: at most those of `min-replicas-max-lag` (10 s)
    plus the replicas' last acknowledgement (up to 1 s).
    """
    old = assert_converged(3)
    max_lag_s = 10 + 1
    with Writer(addresses()) as writer:
        cut_at = time.monotonic()
        local("partition", old["name"])
        wait_for("the majority to fail over", lambda: sentinel_names_other_than(old), 30)
        wait_for("writes to the new primary", lambda: writes_continue(writer, cut_at + 3), 60)
        local("heal")
        healed_at = time.monotonic()
        wait_for("writes after the heal", lambda: writes_continue(writer, healed_at + 1), 60)
    final = assert_converged(3)
    assert final["name"] != old["name"]
    report = writer.report(final)
    record_figure(f"primary partitioned: {report}")
    outside = [
        i
        for i in report.lost
        if not cut_at - ASYNC_REPLICATION_WINDOW_S <= writer.acknowledged[i] <= cut_at + max_lag_s
    ]
    assert outside == [], f"lost writes outside the min-replicas-max-lag window: {outside[:10]}"


def test_a_killed_primary_with_persistence_off_never_empties_the_replicas(
    cluster_without_persistence,
):
    old = assert_converged(3)
    redis_of(old).set("must-survive", "yes")
    wait_for(
        "the key on every replica",
        lambda: all(redis_of(u).get("must-survive") == b"yes" for u in status()["units"]),
    )
    local("kill", old["name"], "--service", "redis")
    wait_for("Sentinel to fail over", lambda: sentinel_names_other_than(old), timeout=30)
    final = assert_converged(3)
    assert final["name"] != old["name"], "Pebble must not restart an empty primary in place"
    for unit in status()["units"]:
        assert redis_of(unit).get("must-survive") == b"yes", unit["name"]


def test_all_pods_deleted_at_once_come_back_with_the_most_advanced_primary_and_all_data(
    cluster,
):
    """Every pod dies in the same instant (a node loss); each comes back with its storage.

    Redis writes the AOF to the kernel before it acknowledges, so the member
    that was primary holds every acknowledged write and no member is more
    advanced; whichever unit the cold start elects must hold every one of them
    (an election of a less advanced member loses the last writes, and fails).
    """
    old = assert_converged(3)
    units = status()["units"]
    with Writer(addresses()) as writer:
        wait_for("writes flowing", lambda: len(writer.acknowledged) > 50, timeout=30)
        for unit in units:
            local("delete-pod", unit["name"])
        deleted_at = time.monotonic()
        wait_for(
            "writes after every pod came back",
            lambda: writes_continue(writer, deleted_at + 5),
            timeout=SETTLE_TIMEOUT_S,
        )
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    new = assert_converged(3)
    report = writer.report(new)
    record_figure(
        f"all pods deleted (primary before: {old['name']}, after: {new['name']}): {report}"
    )
    assert report.lost == [], report


def test_removing_two_units_at_once_the_primary_among_them_loses_nothing(four_units):
    old = assert_converged(4)
    replica = next(u for u in status()["units"] if u["name"] != old["name"])
    with Writer(addresses()) as writer:
        local("remove-unit", old["name"], replica["name"])
        wait_for("both units to go", lambda: len(status()["units"]) == 2, SETTLE_TIMEOUT_S)
        gone_at = time.monotonic()
        wait_for("writes after the removal", lambda: writes_continue(writer, gone_at), 30)
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    new = assert_converged(2)
    assert new["name"] not in (old["name"], replica["name"])
    report = writer.report(new)
    record_figure(f"primary and a replica removed together: {report}")
    assert report.lost == [], report


def test_a_sentinel_minority_cannot_fail_over_and_says_so_until_the_others_return(cluster):
    """Two of three sentinels frozen (down to everyone): below quorum, nothing may fail over.

    The one sentinel left sees the frozen primary down but alone is not a
    quorum, so the primary stays; the application status says failover is
    impossible. When the sentinels return the cluster is HA again, same primary.
    """
    primary = assert_converged(3)
    replicas = [u for u in status()["units"] if u["name"] != primary["name"]]
    with Writer(addresses()) as writer:
        for unit in replicas:
            local("freeze", unit["name"], "--service", "sentinel")
        wait_for(
            "the application status to say failover is impossible",
            lambda: "failover impossible" in status()["app"]["message"],
            timeout=60,
        )
        local("freeze", primary["name"])
        frozen_at = time.monotonic()
        held_s = 3 * DOWN_AFTER_MS / 1000
        while time.monotonic() < frozen_at + held_s:  # long enough for a quorum to act
            assert monitored(primary)[0]["ip"] == primary["hostname"], "a minority failed over"
            time.sleep(0.5)
        local("thaw", primary["name"])
        thawed_at = time.monotonic()
        wait_for("writes after the thaw", lambda: writes_continue(writer, thawed_at), 30)
        for unit in replicas:
            local("thaw", unit["name"], "--service", "sentinel")
        wait_for(
            "the application status to say HA again",
            lambda: ", sentinel quorum 2/3" in status()["app"]["message"],
            timeout=60,
        )
    final = assert_converged(3)
    assert final["name"] == primary["name"]
    report = writer.report(final)
    record_figure(f"sentinel minority: {report}")
    assert report.lost == [], report
