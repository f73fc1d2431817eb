"""The unit machine: one unit's redis-server and sentinel, from first start to teardown.

Every unit runs this machine on every event. It reads its own observation of
redis and sentinel and the cluster facts the leader published; it never picks
a primary itself. Sentinel is the truth about who is primary once a primary
exists: a unit follows what its own sentinel reports, and otherwise the
primary the leader recorded from the sentinels (or elected for a bootstrap or
a cold start).

Two triggers: ``observe`` (every event that brings news) and ``teardown``
(stop, storage-detaching, remove, peer-relation-broken). The table below is
the whole protocol of a unit; read it top to bottom.
"""

from __future__ import annotations

from .engine import Engine, Step, go, noop
from .types import (
    HANDOVER_COMPLETED,
    SERVING_CLUSTER_STATES,
    ClusterState,
    ConfigureRedis,
    ConfigureSentinel,
    Event,
    Fence,
    HandOver,
    ResetSentinel,
    Role,
    StopWorkload,
    UnitFacts,
    UnitInput,
    UnitName,
    UnitState,
)

OBSERVE = "observe"
TEARDOWN = "teardown"

TRIGGER_OF: dict[Event, str] = {
    event: TEARDOWN
    if event
    in {
        Event.LEAVING,
        Event.STOP,
        Event.STORAGE_DETACHING,
        Event.REMOVE,
        Event.PEER_RELATION_BROKEN,
    }
    else OBSERVE
    for event in Event
}
"""Which trigger each event fires on the unit machine."""

UnitStep = Step[UnitFacts, UnitInput]


# ------------------------------------------------------------------ helpers


def _me(s: UnitStep) -> UnitName:
    return s.input.unit


def _others(s: UnitStep) -> int:
    """Other units that may hold data or take over: the leader's members and this unit's peers.

    Juju shows each unit its peers directly; the leader's record may lag or be
    lost, and a primary must not believe it is alone because of that.
    """
    return len(({*s.input.cluster.members, *s.input.peers}) - {s.input.unit})


def _other_members(s: UnitStep) -> int:
    """Other members as the leader recorded them (whose sentinels a reset must see)."""
    return len([m for m in s.input.cluster.members if m != s.input.unit])


def newer_primary(s: UnitStep) -> UnitName | None:
    """The primary that supersedes the one this unit follows, if there is one.

    The unit's own sentinel wins when it names someone; otherwise a primary
    the leader decided at a newer cluster epoch (a failover it recorded from
    the other sentinels, or a cold-start election).
    """
    cluster, facts = s.input.cluster, s.facts
    named = sentinel_names(s)
    if named and named != facts.following:
        return named
    if cluster.primary and cluster.primary != facts.following and cluster.epoch > facts.epoch:
        return cluster.primary
    return None


def sentinel_names(s: UnitStep) -> UnitName | None:
    """The primary this unit's sentinel names under the cluster's current generation."""
    obs = s.input.observation
    current = obs.sentinel_up and obs.sentinel_generation >= s.input.cluster.generation
    return obs.sentinel_primary if current else None


def believed_primary(s: UnitStep) -> UnitName | None:
    """Who the primary is, for a unit that is not following anyone yet."""
    return sentinel_names(s) or s.input.cluster.primary


# ------------------------------------------------------------------- guards


def containers_ready(s: UnitStep) -> bool:
    """Pebble answers in both containers: redis-server can be started."""
    return s.input.observation.containers_ready


def containers_lost(s: UnitStep) -> bool:
    """Pebble no longer answers in one of the containers."""
    return not s.input.observation.containers_ready


def elected_primary(s: UnitStep) -> bool:
    """The leader elected this unit to start as primary and waits for it (bootstrap, cold start).

    Nobody holds newer data then, so the elected unit starts as primary even if empty.
    """
    c = s.input.cluster
    return (
        c.start_as_primary == _me(s)
        and c.primary == _me(s)
        and c.state in (ClusterState.BOOTSTRAPPING, ClusterState.RECOVERING)
    )


def named_primary_but_empty(s: UnitStep) -> bool:
    """Named primary, came back with no data, and other members may hold it (rule 8)."""
    return (
        believed_primary(s) == _me(s)
        and s.facts.ever_started
        and s.facts.keys == 0
        and s.facts.master_repl_offset == 0
        and _others(s) > 0
    )


def named_primary(s: UnitStep) -> bool:
    """Sentinel (or the leader's record of it) names this unit primary."""
    return believed_primary(s) == _me(s)


def primary_known(s: UnitStep) -> bool:
    """Another unit serves as primary: this unit's sentinel names it, or the leader recorded it.

    While the leader's chosen primary is still starting (bootstrap or cold
    start), the others wait: a sentinel told to monitor a redis that is not
    yet a master would soon fail it over.
    """
    cluster, named = s.input.cluster, sentinel_names(s)
    if named:
        return named != _me(s)
    return cluster.primary not in (None, _me(s)) and cluster.state in SERVING_CLUSTER_STATES


def confirmed_primary(s: UnitStep) -> bool:
    """redis-server reports master and this unit's sentinel names it."""
    return s.input.observation.role is Role.MASTER and sentinel_names(s) == _me(s)


def superseded(s: UnitStep) -> bool:
    """Another unit is now the primary than the one this unit follows."""
    return newer_primary(s) not in (None, _me(s))


def promoted(s: UnitStep) -> bool:
    """Sentinel promoted this unit: it names it and redis-server reports master."""
    return newer_primary(s) == _me(s) and s.input.observation.role is Role.MASTER


def synced(s: UnitStep) -> bool:
    """The replica's link to its primary is up and no sync is in progress."""
    obs = s.input.observation
    return (
        obs.role is Role.SLAVE
        and obs.master_host == s.facts.following
        and obs.master_link_up
        and not obs.sync_in_progress
    )


def link_lost(s: UnitStep) -> bool:
    """A synced replica lost its link to the primary (or stopped being a replica)."""
    obs = s.input.observation
    return (
        obs.role is not Role.SLAVE
        or obs.master_host != s.facts.following
        or not obs.master_link_up
    )


def restarted_empty(s: UnitStep) -> bool:
    """The primary's redis-server came back with no data while replicas may hold it (rule 8)."""
    obs = s.input.observation
    return (
        obs.redis_up
        and obs.role is Role.MASTER
        and obs.keys == 0
        and obs.master_repl_offset == 0
        and _had_data(s)
        and _others(s) > 0
    )


def switchover_requested(s: UnitStep) -> bool:
    """The leader asks this primary to hand over, and it has not answered yet."""
    c = s.input.cluster
    return c.switchover_target not in (None, _me(s)) and s.facts.handover is None


def handover_answered(s: UnitStep) -> bool:
    """The switchover request this unit answered is no longer pending."""
    return s.facts.handover is not None and s.input.cluster.switchover_target is None


def promoted_while_leaving(s: UnitStep) -> bool:
    """This leaving replica's redis is a master, and other units remain: it hands over too.

    A primary that was leaving at the same time may just have handed over to it.
    """
    obs = s.input.observation
    return obs.redis_up and obs.role is Role.MASTER and _others(s) > 0


def has_other_members(s: UnitStep) -> bool:
    """Other units exist that can take over as primary."""
    return _others(s) > 0


def handed_over(s: UnitStep) -> bool:
    """The handover completed: another unit is primary and this one follows it."""
    return (
        s.input.observation.handover == HANDOVER_COMPLETED
        or s.input.observation.role is Role.SLAVE
    ) and superseded(s)


def handover_failed(s: UnitStep) -> bool:
    """The handover could not be done; the workload said why."""
    outcome = s.input.observation.handover
    return outcome is not None and outcome != HANDOVER_COMPLETED


def sentinel_reset_due(s: UnitStep) -> bool:
    """It is this unit's turn to reset its sentinel in the current reset wave."""
    c = s.input.cluster
    return c.reset_turn == _me(s) and s.facts.reset_wave < c.reset_wave


def sentinel_reset_verified(s: UnitStep) -> bool:
    """After its reset, this unit's sentinel sees exactly the other members' sentinels."""
    c = s.input.cluster
    return (
        c.reset_wave > 0
        and s.facts.reset_wave == c.reset_wave
        and not s.facts.reset_verified
        and s.input.observation.sentinels_seen == _other_members(s)
    )


def quorum_stale(s: UnitStep) -> bool:
    """The leader set a new sentinel quorum that this unit's sentinel does not have."""
    q = s.input.cluster.quorum
    return q > 0 and q != s.facts.quorum and s.facts.following is not None


def redis_not_running(s: UnitStep) -> bool:
    """redis-server does not answer (its start or reconfiguration did not take)."""
    return not s.input.observation.redis_up


def pod_restarted(s: UnitStep) -> bool:
    """Pebble's plan has no redis service although this unit configured one: a new pod."""
    return s.input.observation.containers_ready and not s.input.observation.redis_service_defined


def unfenced(s: UnitStep) -> bool:
    """redis-server runs as a master although this unit fenced it (the fence did not take)."""
    return s.input.observation.role is Role.MASTER


def not_replicating(s: UnitStep) -> bool:
    """redis-server is down, or replicates from another unit than the one Sentinel confirms.

    A running redis whose role differs is re-configured only when this unit's
    sentinel names the primary it follows: while Sentinel names nobody (it is
    failing over, or sees the primary down) the difference may be Sentinel's own
    doing (a promotion), and re-imposing the old role would fight it. A running
    redis that is a *master* while it is being promoted is left alone: this unit
    is the target of a switchover, or a sentinel is failing the primary over (a
    leaving primary's handover, which is no cluster switchover). A planned
    switchover leaves the old primary up, so this unit's sentinel still names it
    until the promotion is confirmed, and re-imposing the old role would abort
    the promotion and leave no primary at all. Any other stray master (the old
    primary, thawed after a failover) is made a replica at once, as Sentinel
    itself would some seconds later.
    """
    obs = s.input.observation
    if not obs.redis_up:
        return True
    being_promoted = s.input.cluster.switchover_target == _me(s) or obs.failover_in_progress
    if obs.role is Role.MASTER and being_promoted:
        return False
    differs = obs.role is not Role.SLAVE or obs.master_host != s.facts.following
    return differs and sentinel_names(s) == s.facts.following


def not_master(s: UnitStep) -> bool:
    """This unit was configured as primary but redis-server is down or not a master."""
    obs = s.input.observation
    return not obs.redis_up or obs.role is not Role.MASTER


def sentinel_stale(s: UnitStep) -> bool:
    """This unit's sentinel was configured but does not answer, or monitors an old generation."""
    obs = s.input.observation
    return s.facts.following is not None and (
        not obs.sentinel_up or obs.sentinel_generation < s.input.cluster.generation
    )


def _had_data(s: UnitStep) -> bool:
    return s.facts.master_repl_offset > 0 or s.facts.keys > 0


# ------------------------------------------------------------------ actions


def record_observation(s: UnitStep) -> None:
    """Fold what was observed into the facts the unit publishes (before any row).

    Offset and key count are published only while they stand still (the unit
    is neither a primary nor a live replica) or when they first become
    non-zero: they move with every write, and a databag rewritten on every
    hook would wake every other unit with relation-changed, for nothing. The
    leader needs them only for a cold start, when nothing replicates.
    A primary that comes back empty keeps its last values until
    ``restarted_empty`` has seen the difference; ``fence`` then records zeros.
    """
    obs = s.input.observation
    live = obs.role is Role.MASTER or (obs.role is Role.SLAVE and obs.master_link_up)
    named = obs.sentinel_up and obs.sentinel_generation >= s.facts.sentinel_generation
    changes: dict[str, object] = {
        "redis_up": obs.redis_up,
        "sentinel_up": obs.sentinel_up,
        "sentinel_primary": obs.sentinel_primary if named else None,
        "sentinel_primary_is_master": named and obs.sentinel_primary_is_master,
        "sentinel_epoch": obs.sentinel_epoch if obs.sentinel_up else 0,
        # Generations only rise; a sentinel that is down still has the one on its disk.
        "sentinel_generation": max(
            s.facts.sentinel_generation, obs.sentinel_generation if obs.sentinel_up else 0
        ),
        "sentinels_seen": obs.sentinels_seen if obs.sentinel_up else 0,
        "role": obs.role if obs.redis_up else Role.UNKNOWN,
        "master_link_up": obs.redis_up and obs.master_link_up,
    }
    unknown = s.facts.master_repl_offset == 0 and s.facts.keys == 0
    if obs.redis_up and (not live or unknown):
        changes.update(master_repl_offset=obs.master_repl_offset, keys=obs.keys)
    s.update(**changes)


def monitor(s: UnitStep, primary: UnitName) -> ConfigureSentinel:
    """The sentinel configuration for ``primary`` in the cluster's current generation."""
    c = s.input.cluster
    return ConfigureSentinel(primary=primary, quorum=c.quorum, generation=c.generation)


def configure_as_primary(s: UnitStep) -> None:
    """Run redis-server as primary and make this unit's sentinel monitor it."""
    me, c = _me(s), s.input.cluster
    s.update(following=me, epoch=c.epoch, ever_started=True, quorum=c.quorum, handover=None)
    s.emit(ConfigureRedis(replica_of=None), monitor(s, me))


def configure_as_replica(s: UnitStep) -> None:
    """Replicate from the primary Sentinel names and monitor it."""
    primary = newer_primary(s) or believed_primary(s)
    assert primary is not None  # guarded by primary_known / superseded
    c = s.input.cluster
    s.update(
        following=primary, epoch=max(c.epoch, s.facts.epoch), ever_started=True, quorum=c.quorum
    )
    s.emit(ConfigureRedis(replica_of=primary), monitor(s, primary))


def follow_promotion(s: UnitStep) -> None:
    """Sentinel made this unit primary: render its config as primary, nothing restarts."""
    me, c = _me(s), s.input.cluster
    s.update(following=me, epoch=max(c.epoch, s.facts.epoch))
    s.emit(ConfigureRedis(replica_of=None))


def start_fenced(s: UnitStep) -> None:
    """Start redis-server fenced: its offset can be read, it serves no write and no sync."""
    s.emit(Fence())


def fence(s: UnitStep) -> None:
    """Keep the empty restarted redis from serving writes or a sync to the replicas."""
    me, c = _me(s), s.input.cluster
    s.update(
        following=me,
        epoch=max(c.epoch, s.facts.epoch),
        quorum=c.quorum,
        master_repl_offset=s.input.observation.master_repl_offset,
        keys=s.input.observation.keys,
    )
    s.emit(Fence(), monitor(s, me))


def reapply_replica(s: UnitStep) -> None:
    """Configure redis-server again as a replica of the primary this unit follows."""
    s.emit(ConfigureRedis(replica_of=s.facts.following))


def reapply_primary(s: UnitStep) -> None:
    """Configure redis-server again as the primary it was elected to be."""
    s.emit(ConfigureRedis(replica_of=None))


def reapply_sentinel(s: UnitStep) -> None:
    """Start this unit's sentinel again, monitoring the primary it follows."""
    assert s.facts.following is not None  # guarded by sentinel_stale
    s.emit(monitor(s, s.facts.following))


def hand_over_to_target(s: UnitStep) -> None:
    """Switch over to the replica the leader named."""
    s.update(handover=None)
    s.emit(HandOver(target=s.input.cluster.switchover_target))


def hand_over_to_best(s: UnitStep) -> None:
    """Switch over to the best replica before stopping."""
    s.update(handover=None)
    s.emit(HandOver(target=None))


def record_handover(s: UnitStep) -> None:
    """Keep the handover outcome for the leader and the operator."""
    s.update(handover=s.input.observation.handover or "no outcome observed")


def clear_handover(s: UnitStep) -> None:
    """Forget the answer to a switchover request the leader has closed."""
    s.update(handover=None)


def stop_workload(s: UnitStep) -> None:
    """Stop redis-server and the sentinel; publish them down (no observation follows)."""
    s.update(
        redis_up=False,
        sentinel_up=False,
        role=Role.UNKNOWN,
        sentinel_primary=None,
        sentinel_primary_is_master=False,
        master_link_up=False,
    )
    s.emit(StopWorkload())


def reset_sentinel(s: UnitStep) -> None:
    """Reset this unit's sentinel for the current wave."""
    wave = s.input.cluster.reset_wave
    s.update(reset_wave=wave, reset_verified=False)
    s.emit(ResetSentinel(wave=wave, sentinels=_other_members(s)))


def mark_reset_verified(s: UnitStep) -> None:
    """Tell the leader this sentinel's reset is done and verified."""
    s.update(reset_verified=True)


def apply_quorum(s: UnitStep) -> None:
    """Set the leader's quorum on this unit's sentinel."""
    c = s.input.cluster
    assert s.facts.following is not None  # guarded by quorum_stale
    s.update(quorum=c.quorum)
    s.emit(monitor(s, s.facts.following))


# -------------------------------------------------------------------- table

S = UnitState
RUNNING = (S.PRIMARY, S.SYNCING, S.REPLICA)

TABLE = (
    # --- waiting for the containers -------------------------------------------------------
    go(OBSERVE, S.WAITING_FOR_WORKLOAD, S.WAITING_FOR_PRIMARY, containers_ready, start_fenced),
    noop(OBSERVE, S.WAITING_FOR_WORKLOAD, "redis or sentinel container not reachable yet"),
    # --- a restarted pod starts over, fenced, whatever it was ------------------------------------
    go(OBSERVE, (S.STARTING_PRIMARY, S.PRIMARY, S.SYNCING, S.REPLICA, S.FENCED), S.WAITING_FOR_PRIMARY, pod_restarted, start_fenced),
    # --- waiting for a primary to exist ---------------------------------------------------
    go(OBSERVE, S.WAITING_FOR_PRIMARY, S.WAITING_FOR_WORKLOAD, containers_lost),
    go(OBSERVE, S.WAITING_FOR_PRIMARY, S.STARTING_PRIMARY, elected_primary, configure_as_primary),
    go(OBSERVE, S.WAITING_FOR_PRIMARY, S.FENCED, named_primary_but_empty, fence),
    go(OBSERVE, S.WAITING_FOR_PRIMARY, S.STARTING_PRIMARY, named_primary, configure_as_primary),
    go(OBSERVE, S.WAITING_FOR_PRIMARY, S.SYNCING, primary_known, configure_as_replica),
    go(OBSERVE, S.WAITING_FOR_PRIMARY, None, redis_not_running, start_fenced),
    noop(OBSERVE, S.WAITING_FOR_PRIMARY, "no primary yet: the leader bootstraps or recovers"),
    # --- configured as primary, waiting for redis and sentinel to agree --------------------
    go(OBSERVE, S.STARTING_PRIMARY, S.PRIMARY, confirmed_primary),
    go(OBSERVE, S.STARTING_PRIMARY, S.SYNCING, superseded, configure_as_replica),
    go(OBSERVE, S.STARTING_PRIMARY, None, not_master, reapply_primary),
    go(OBSERVE, S.STARTING_PRIMARY, None, sentinel_stale, reapply_sentinel),
    noop(OBSERVE, S.STARTING_PRIMARY, "waiting for redis to report master and sentinel to name it"),
    # --- primary ---------------------------------------------------------------------------
    go(OBSERVE, S.PRIMARY, S.FENCED, restarted_empty, fence),
    go(OBSERVE, S.PRIMARY, S.SYNCING, superseded, configure_as_replica),
    go(OBSERVE, S.PRIMARY, S.HANDING_OVER, switchover_requested, hand_over_to_target),
    go(OBSERVE, S.PRIMARY, None, handover_answered, clear_handover),
    # --- replica ---------------------------------------------------------------------------
    go(OBSERVE, (S.SYNCING, S.REPLICA), S.STARTING_PRIMARY, elected_primary, configure_as_primary),
    go(OBSERVE, S.SYNCING, S.PRIMARY, promoted, follow_promotion),
    go(OBSERVE, S.SYNCING, None, superseded, configure_as_replica),
    go(OBSERVE, S.SYNCING, S.REPLICA, synced),
    go(OBSERVE, S.SYNCING, None, not_replicating, reapply_replica),
    go(OBSERVE, S.REPLICA, S.PRIMARY, promoted, follow_promotion),
    go(OBSERVE, S.REPLICA, S.SYNCING, superseded, configure_as_replica),
    go(OBSERVE, S.REPLICA, S.SYNCING, link_lost),
    # --- every serving unit: sentinel quorum and reset waves --------------------------------
    go(OBSERVE, RUNNING, None, sentinel_stale, reapply_sentinel),
    go(OBSERVE, RUNNING, None, quorum_stale, apply_quorum),
    go(OBSERVE, RUNNING, None, sentinel_reset_due, reset_sentinel),
    go(OBSERVE, RUNNING, None, sentinel_reset_verified, mark_reset_verified),
    noop(OBSERVE, RUNNING, "steady: redis and sentinel agree with the recorded role"),
    # --- fenced: an empty restart must not become the source of truth ----------------------
    go(OBSERVE, S.FENCED, S.STARTING_PRIMARY, elected_primary, configure_as_primary),
    go(OBSERVE, S.FENCED, S.SYNCING, superseded, configure_as_replica),
    go(OBSERVE, S.FENCED, S.SYNCING, primary_known, configure_as_replica),
    go(OBSERVE, S.FENCED, None, unfenced, start_fenced),
    noop(OBSERVE, S.FENCED, "restarted empty: waiting for Sentinel to promote a replica"),
    # --- planned switchover away from this primary -----------------------------------------
    go(OBSERVE, S.HANDING_OVER, S.SYNCING, handed_over, record_handover, configure_as_replica),
    go(OBSERVE, S.HANDING_OVER, S.PRIMARY, handover_failed, record_handover),
    noop(OBSERVE, S.HANDING_OVER, "waiting for the handover outcome"),
    # --- stopped (a restarted pod starts over) ----------------------------------------------
    go(OBSERVE, S.STOPPED, S.WAITING_FOR_WORKLOAD),
    # --- teardown: a primary hands over before it stops -------------------------------------
    go(TEARDOWN, (S.PRIMARY, S.STARTING_PRIMARY), S.HANDING_OVER, has_other_members, hand_over_to_best),
    go(TEARDOWN, (S.PRIMARY, S.STARTING_PRIMARY), S.STOPPED, None, stop_workload),
    go(TEARDOWN, S.HANDING_OVER, S.STOPPED, handed_over, record_handover, stop_workload),
    go(TEARDOWN, S.HANDING_OVER, S.STOPPED, handover_failed, record_handover, stop_workload),
    noop(TEARDOWN, S.HANDING_OVER, "waiting for the handover outcome before stopping"),
    go(TEARDOWN, (S.SYNCING, S.REPLICA), S.HANDING_OVER, promoted_while_leaving, hand_over_to_best),
    go(
        TEARDOWN,
        (S.WAITING_FOR_WORKLOAD, S.WAITING_FOR_PRIMARY, S.SYNCING, S.REPLICA, S.FENCED),
        S.STOPPED,
        None,
        stop_workload,
    ),
    noop(TEARDOWN, S.STOPPED, "already stopped"),
)  # fmt: skip

UNIT_MACHINE: Engine[UnitFacts, UnitInput] = Engine(
    "unit", UnitState, (OBSERVE, TEARDOWN), TABLE, record_observation
)
