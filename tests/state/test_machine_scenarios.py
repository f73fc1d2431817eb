"""Readable scenarios of the protocol, each on the cluster model with the real machines.

The property tests explore arbitrary histories; these pin down, one by one,
what a reviewer expects of bootstrap, replica join, quorum, failover,
switchover, teardown, cold start and corrupt data.
"""

from __future__ import annotations

from machine import journal
from machine.cluster import majority
from machine.hook import MAX_ROUNDS, run_unit
from machine.types import (
    ClusterInput,
    ClusterState,
    ConfigureRedis,
    Event,
    HandOver,
    ResetSentinel,
    Role,
    StopWorkload,
    UnitInput,
    UnitObservation,
    UnitState,
)
from tests.state.cluster_model import World
from tests.state.test_cluster_model import assert_settled_ha


def deploy(units: int, persistent: bool = True) -> World:
    world = World(persistent=persistent)
    for _ in range(units):
        world.add_unit()
    settle(world)
    return world


def settle(world: World) -> None:
    """Deliver everything, then update-status everywhere, until nothing changes."""
    for _ in range(4):
        world.settle()
        world.update_status_everywhere()
    world.settle()


def state_of(world: World, unit: str) -> UnitState:
    return world.unit_journal(unit).current.state


def test_three_units_bootstrap_once_and_reach_ha() -> None:
    world = deploy(3)
    assert_settled_ha(world)
    assert world.bootstraps == [("redis-k8s/0", False)]
    assert world.cluster().quorum == 2
    assert world.announced == {1: "redis-k8s/0"}


def test_a_replica_is_ready_only_after_it_synced() -> None:
    world = deploy(3)
    world.write()
    new = world.add_unit()
    world.pods[new].side = 1  # the new unit cannot reach the primary
    settle(world)
    assert state_of(world, new) is UnitState.SYNCING
    world.pods[new].side = 0
    settle(world)
    assert state_of(world, new) is UnitState.REPLICA
    assert world.pods[new].redis.keys == world.pods["redis-k8s/0"].redis.keys == 1


def test_fewer_than_three_units_is_working_but_not_ha() -> None:
    world = deploy(2)
    cluster = world.cluster()
    assert cluster.state is ClusterState.NOT_HA
    assert cluster.primary is not None
    assert state_of(world, cluster.primary) is UnitState.PRIMARY


def test_a_sentinel_minority_makes_failover_impossible_and_says_so() -> None:
    world = deploy(3)
    assert world.cluster().state is ClusterState.HA
    two_sentinels_down = tuple(
        r.model_copy(update={"sentinel_up": r.unit == "redis-k8s/0"}) for r in world.reports()
    )
    after, _ = journal.step(
        world.cluster_journal(),
        ClusterInput(
            event=Event.PEBBLE_CHECK_FAILED, leader="redis-k8s/0", members=two_sentinels_down
        ),
    )
    assert after.current.state is ClusterState.NO_QUORUM
    healed, _ = journal.step(
        after,
        ClusterInput(
            event=Event.UPDATE_STATUS, leader="redis-k8s/0", members=tuple(world.reports())
        ),
    )
    assert healed.current.state is ClusterState.HA


def test_frozen_primary_fails_over_and_rejoins_as_replica() -> None:
    world = deploy(3)
    world.write()
    world.pods["redis-k8s/0"].redis.frozen = True
    assert world.sentinel_failover()
    settle(world)
    cluster = world.cluster()
    assert cluster.primary == "redis-k8s/1"
    assert cluster.epoch == 2 and world.announced[2] == "redis-k8s/1"
    assert state_of(world, "redis-k8s/1") is UnitState.PRIMARY
    world.pods["redis-k8s/0"].redis.frozen = False
    settle(world)
    assert_settled_ha(world)
    assert state_of(world, "redis-k8s/0") is UnitState.REPLICA
    assert world.pods["redis-k8s/0"].redis.keys == 1


def test_sentinels_split_at_one_epoch_keep_the_primary_most_of_them_name() -> None:
    """Two sentinel groups that failed over apart, at the same epoch, never reconcile alone.

    Sentinel adopts another configuration only at a higher epoch, so the leader
    keeps the primary most sentinels name and re-monitors it in a new generation.
    """
    world = deploy(5)
    world.write()
    minority = ["redis-k8s/3", "redis-k8s/4"]
    world.make_master("redis-k8s/3")
    world.make_replica("redis-k8s/4", "redis-k8s/3")
    epochs = {world.pods[m].sentinel.epoch for m in world.members}
    for name in minority:
        world.pods[name].sentinel.primary = "redis-k8s/3"
    assert len(epochs) == 1  # the same epoch on both sides: gossip changes nothing
    world.sentinel_gossip()
    assert world.pods["redis-k8s/3"].sentinel.primary == "redis-k8s/3"
    world.update_status_everywhere()
    settle(world)
    assert_settled_ha(world)
    cluster = world.cluster()
    assert cluster.primary == "redis-k8s/0"
    assert cluster.note == "sentinels named 2 primaries; kept redis-k8s/0"
    assert world.pods["redis-k8s/3"].redis.keys == world.pods["redis-k8s/0"].redis.keys == 1


def test_switchover_to_a_named_replica() -> None:
    world = deploy(3)
    world.write()
    world.pods["redis-k8s/0"].queue.append((Event.SWITCHOVER_ACTION, "redis-k8s/2"))
    settle(world)
    assert_settled_ha(world)
    assert world.cluster().primary == "redis-k8s/2"
    assert world.pods["redis-k8s/2"].redis.keys == 1
    assert world.cluster().switchover_target is None


def test_switchover_to_a_unit_that_is_not_a_synced_replica_is_refused_with_a_reason() -> None:
    world = deploy(3)
    world.pods["redis-k8s/0"].queue.append((Event.SWITCHOVER_ACTION, "redis-k8s/0"))
    world.pods["redis-k8s/0"].queue.append((Event.SWITCHOVER_ACTION, "redis-k8s/9"))
    settle(world)
    assert world.refusals == [
        "redis-k8s/0 is already the primary",
        "redis-k8s/9 is not a synced replica of redis-k8s/0",
    ]
    assert world.cluster().primary == "redis-k8s/0"


def test_removing_the_primary_hands_over_first_and_resets_sentinels_one_at_a_time() -> None:
    world = deploy(3)
    world.write()
    resets: list[tuple[str, tuple[str, ...]]] = []
    execute = world.execute

    def spy(name, effect):
        if isinstance(effect, ResetSentinel):
            resets.append((name, world.cluster().reset_queue))
        execute(name, effect)

    world.execute = spy  # type: ignore[method-assign]
    world.start_removal("redis-k8s/0")
    world.settle()
    assert world.stops_of_primary == [("redis-k8s/0", "completed", 2)]
    assert world.pods["redis-k8s/0"].redis.role is Role.SLAVE
    world.finish_removal("redis-k8s/0")
    settle(world)
    assert_settled_ha_or_not_ha(world)
    # Each reset happened when it was that unit's turn, the queue head first.
    assert [name for name, _ in resets] == ["redis-k8s/1", "redis-k8s/2"]
    assert all(queue and queue[0] == name for name, queue in resets)
    for unit in world.members:
        assert world.pods[unit].sentinel.knows == set(world.members) - {unit}


def assert_settled_ha_or_not_ha(world: World) -> None:
    cluster = world.cluster()
    assert cluster.state in (ClusterState.HA, ClusterState.NOT_HA)
    assert cluster.quorum == majority(len(world.members))
    masters = [m for m in world.members if world.pods[m].redis.role is Role.MASTER]
    assert masters == [cluster.primary]


def lose_everything_but_the_disks(world: World) -> None:
    """Every pod dies at once; unit 2 fell behind before; unit 0's disk is lost."""
    world.write()
    world.pods["redis-k8s/2"].side = 1
    world.write()
    world.write()
    world.pods["redis-k8s/2"].side = 0
    for unit in list(world.members):
        world.delete_pod(unit)
    world.pods["redis-k8s/0"].redis.offset = world.pods["redis-k8s/0"].redis.keys = 0
    for unit in list(world.members):
        world.restart_pod(unit)


def test_a_primary_that_lost_the_leaders_record_still_sees_its_peers_before_stopping() -> None:
    """The app databag is lost and a unit joins: the primary is not alone, it hands over first."""
    world = deploy(1)
    world.add_unit()
    settle(world)
    world.write()
    world.lose_peer_data("app")
    world.start_removal("redis-k8s/0")
    while world.pods["redis-k8s/0"].queue:
        world.deliver("redis-k8s/0")
    assert state_of(world, "redis-k8s/0") is UnitState.STOPPED
    [(name, handover, others)] = world.stops_of_primary
    assert (name, others) == ("redis-k8s/0", 1)
    assert handover == "completed"
    assert world.pods["redis-k8s/1"].redis.role is Role.MASTER
    assert world.pods["redis-k8s/1"].redis.keys == 1


def test_all_pods_restarted_the_most_advanced_member_becomes_primary() -> None:
    world = deploy(3)
    lose_everything_but_the_disks(world)
    settle(world)
    assert_settled_ha(world)
    assert world.cluster().primary == "redis-k8s/1"
    assert all(world.pods[m].redis.keys == 3 for m in world.members)
    assert len(world.bootstraps) == 1


def test_cold_start_without_any_record_elects_the_most_advanced_member() -> None:
    """Peer data and sentinel memory lost, redis data kept: the leader elects."""
    world = deploy(3)
    lose_everything_but_the_disks(world)
    for unit in world.members:
        world.wipe_sentinel_memory(unit)
    for databag in ["app", *world.members]:
        world.lose_peer_data(databag)
    settle(world)
    assert world.elections, "nobody knows a primary: the leader must elect"
    chosen, offsets = world.elections[-1]
    assert chosen == "redis-k8s/1"
    assert offsets == {"redis-k8s/0": 0, "redis-k8s/1": 3, "redis-k8s/2": 1}
    assert_settled_ha(world)
    assert all(world.pods[m].redis.keys == 3 for m in world.members)
    assert len(world.bootstraps) == 1, "never a second bootstrap"


def test_primary_killed_with_persistence_off_never_becomes_the_source_of_truth() -> None:
    world = deploy(3, persistent=False)
    world.write()
    states = [state_of(world, "redis-k8s/0").value]
    run_hook = world.run_hook

    def run_and_track(name, event, subject) -> None:
        run_hook(name, event, subject)
        states.append(state_of(world, "redis-k8s/0").value)

    world.run_hook = run_and_track  # type: ignore[method-assign]
    world.kill_redis("redis-k8s/0")
    settle(world)
    moves = [(a, b) for a, b in zip(states, states[1:], strict=False) if a != b]
    assert moves and moves[0] in (("primary", "syncing"), ("primary", "replica")), moves
    assert not [m for m in moves if m[1] in ("starting_primary", "primary") and m[0] != m[1]]
    assert_settled_ha(world)
    assert world.cluster().primary != "redis-k8s/0"
    assert all(world.pods[m].redis.keys == 1 for m in world.members), "no replica emptied"


def test_corrupt_cluster_data_claims_no_primary_then_adopts_sentinels_view() -> None:
    world = deploy(3)
    world.app_data = '{"version": 1, "garbage": true}'
    loaded, problem = journal.load_cluster(world.app_data)
    assert problem is not None and loaded.current.primary is None
    world.app_data = ""  # the charm replaces unreadable data with the safe state
    world.update_status_everywhere()
    settle(world)
    assert_settled_ha(world)
    assert world.cluster().primary == "redis-k8s/0"
    assert len(world.bootstraps) == 1, "never a second bootstrap"


def test_departures_remembered_during_recovery_reset_only_the_units_that_left() -> None:
    """Two units left while no primary was established (the primary and the leader among them).

    The wave that resets them out starts on whatever event comes next, here a
    relation-changed about a peer that stays: that peer must not be recorded as
    departed too (the wave would wait for it forever).
    """
    world = deploy(3)
    facts = world.cluster_journal().current.model_copy(
        update={"state": ClusterState.NOT_HA, "departed": ("redis-k8s/3", "redis-k8s/4")}
    )
    pending = journal.fresh_cluster().model_copy(update={"base": facts, "current": facts})
    after, _ = journal.step(
        pending,
        ClusterInput(
            event=Event.PEER_RELATION_CHANGED,
            leader="redis-k8s/0",
            subject="redis-k8s/1",
            members=tuple(world.reports()),
        ),
    )
    assert after.current.state is ClusterState.RESETTING_SENTINELS
    assert after.current.departed == ("redis-k8s/3", "redis-k8s/4")


def promoted_replica_steps(
    world: World,
    replica: str,
    switchover_target: str | None,
    event: Event = Event.UPDATE_STATUS,
    failover_in_progress: bool = False,
):
    """A replica whose redis is a master while its sentinel still names redis-k8s/0."""
    cluster = world.cluster().model_copy(update={"switchover_target": switchover_target})
    promoted = UnitObservation(
        containers_ready=True,
        redis_service_defined=True,
        redis_up=True,
        sentinel_up=True,
        role=Role.MASTER,
        sentinel_primary="redis-k8s/0",
        sentinel_epoch=cluster.sentinel_epoch,
        sentinel_generation=cluster.generation,
        sentinels_seen=2,
        failover_in_progress=failover_in_progress,
    )
    _, outcome = journal.step(
        world.unit_journal(replica),
        UnitInput(
            event=event,
            unit=replica,
            observation=promoted,
            cluster=cluster,
            peers=tuple(m for m in world.members if m != replica),
        ),
    )
    return [e for e in outcome.effects if isinstance(e, ConfigureRedis | HandOver | StopWorkload)]


def test_a_replica_being_promoted_by_a_switchover_is_not_demoted_again() -> None:
    """A switchover's target is never re-made a replica while Sentinel promotes it.

    Sentinel has sent it REPLICAOF NO ONE; the old primary is still up, so the
    replica's own sentinel still names the old primary until the promotion shows.
    An event in that second (the leader's own hooks, when it is the target) must
    not re-impose replication: that aborts the promotion and leaves no primary.
    """
    world = deploy(3)
    assert state_of(world, "redis-k8s/1") is UnitState.REPLICA
    assert promoted_replica_steps(world, "redis-k8s/1", "redis-k8s/1") == []


def test_a_replica_a_leaving_primary_hands_over_to_is_not_demoted_while_promoted() -> None:
    """No cluster switchover names it: the primary's sentinel runs the failover.

    A leaving primary hands over with SENTINEL FAILOVER on its own sentinel. Until
    that sentinel confirms the promotion, this unit's sentinel still names the
    old primary; demoting the target then aborts the promotion (measured: a
    removal of two units with the primary refused writes for 9 s).
    """
    world = deploy(3)
    steps = promoted_replica_steps(world, "redis-k8s/1", None, failover_in_progress=True)
    assert steps == []


def test_a_stray_master_that_sentinel_does_not_name_is_made_a_replica() -> None:
    """The old primary, thawed after a failover, is a master nobody promoted: it follows."""
    world = deploy(3)
    effects = promoted_replica_steps(world, "redis-k8s/1", None)
    assert effects == [ConfigureRedis(replica_of="redis-k8s/0")]


def test_a_leaving_replica_that_was_just_handed_the_primary_role_hands_it_over_too() -> None:
    """Two units removed at once: the leaving primary handed over to the other leaving one."""
    world = deploy(3)
    effects = promoted_replica_steps(world, "redis-k8s/1", None, Event.LEAVING)
    assert effects == [HandOver(target=None)], effects


def test_a_hook_does_not_retry_an_effect_its_workload_could_not_carry_out() -> None:
    """A frozen redis: one observation and one attempt per hook, the next event retries.

    Each further round would time out against the same server and delay the rest
    of the hook: on the leader, the record of the failover that froze it.
    """
    world = deploy(3)
    replica = "redis-k8s/1"
    observed: list[UnitObservation] = []
    attempts: list[object] = []

    def hook(carried_out: bool) -> journal.UnitJournal:
        def observe() -> UnitObservation:
            observed.append(UnitObservation(containers_ready=True, redis_service_defined=True))
            return observed[-1]  # redis does not answer

        def execute(effect) -> bool:
            attempts.append(effect)
            return carried_out

        observed.clear()
        return run_unit(
            world.unit_journal(replica),
            lambda obs: UnitInput(
                event=Event.UPDATE_STATUS,
                unit=replica,
                observation=obs,
                cluster=world.cluster(),
                peers=tuple(m for m in world.members if m != replica),
            ),
            observe,
            execute,
        )

    after = hook(carried_out=False)
    assert len(observed) == 1
    assert attempts and all(isinstance(a, ConfigureRedis) for a in attempts)
    assert after.current.redis_up is False  # what it saw is recorded all the same
    hook(carried_out=True)
    assert len(observed) == MAX_ROUNDS  # carried out but never taking: observed again


def test_the_leader_records_a_failover_its_own_sentinel_confirms_before_the_new_primary_reports():
    """The leader's own hook of Sentinel's notice records the switch.

    Every unit gets the notice at once, so the promoted unit has not published its
    new role yet when the leader's hook reads the reports. The leader's sentinel
    names it at a newer epoch and the leader asked its redis: a master. Without that
    answer the leader waits for the promoted unit's own report, as before.
    """
    world = deploy(3)
    cluster = world.cluster()
    leader, promoted = "redis-k8s/0", "redis-k8s/1"
    assert cluster.primary == leader
    reports = {r.unit: r for r in world.reports()}
    assert reports[promoted].role is Role.SLAVE  # its own hook has not published yet

    def leader_sees(confirmed: bool):
        own = reports[leader].model_copy(
            update={
                "redis_up": False,  # frozen
                "sentinel_primary": promoted,
                "sentinel_epoch": cluster.sentinel_epoch + 1,
                "sentinel_primary_is_master": confirmed,
            }
        )
        after, outcome = journal.step(
            world.cluster_journal(),
            ClusterInput(
                event=Event.PEBBLE_CUSTOM_NOTICE,
                leader=leader,
                members=(own, reports[promoted], reports["redis-k8s/2"]),
            ),
        )
        return after.current, outcome.effects

    recorded, effects = leader_sees(confirmed=True)
    assert recorded.primary == promoted
    assert [type(e).__name__ for e in effects] == ["AnnouncePrimary"]
    unconfirmed, _ = leader_sees(confirmed=False)
    assert unconfirmed.primary == leader
