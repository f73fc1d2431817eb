"""The machine's vocabulary: events, observations, facts, inputs and effects.

Everything here is plain, immutable, validated data. Inputs and facts are
pydantic models because they are persisted in peer relation data and must be
validated when loaded; effects are frozen dataclasses because they only travel
from the machine to the workload within one hook.

Names follow Redis where Redis has a word for the thing: ``role`` is
``master`` or ``slave`` as ``INFO replication`` says it, ``master_repl_offset``
is the replication offset, a Sentinel's view is ``sentinel_primary`` and
``sentinel_epoch`` (the ``config-epoch`` of the monitored master).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

UnitName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]*/[0-9]+$", max_length=64)]
"""A Juju unit name such as ``redis-k8s/0``: the stable identity of a member."""

Offset = Annotated[int, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


# --------------------------------------------------------------------- events


class Event(enum.StrEnum):
    """Every Juju and Pebble event the charm observes, plus the operator's actions."""

    INSTALL = "install"
    LEADER_ELECTED = "leader-elected"
    CONFIG_CHANGED = "config-changed"
    UPGRADE_CHARM = "upgrade-charm"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"
    UPDATE_STATUS = "update-status"
    REDIS_PEBBLE_READY = "redis-pebble-ready"
    SENTINEL_PEBBLE_READY = "sentinel-pebble-ready"
    PEBBLE_CHECK_FAILED = "pebble-check-failed"
    PEBBLE_CHECK_RECOVERED = "pebble-check-recovered"
    PEBBLE_CUSTOM_NOTICE = "pebble-custom-notice"
    PEER_RELATION_CREATED = "peer-relation-created"
    PEER_RELATION_JOINED = "peer-relation-joined"
    PEER_RELATION_CHANGED = "peer-relation-changed"
    PEER_RELATION_DEPARTED = "peer-relation-departed"
    PEER_RELATION_BROKEN = "peer-relation-broken"
    LEAVING = "leaving"
    """This unit's own ``peer-relation-departed``: Juju is removing it (its first sign)."""
    STORAGE_ATTACHED = "storage-attached"
    STORAGE_DETACHING = "storage-detaching"
    SECRET_CHANGED = "secret-changed"
    CLIENT_RELATION_CHANGED = "client-relation-changed"
    """A client relation (``redis``, ``valkey-client``, ``redis-client``) came or changed."""
    CLIENT_RELATION_BROKEN = "client-relation-broken"
    """A client relation is going: its user is removed."""
    SWITCHOVER_ACTION = "switchover-action"
    ROTATE_PASSWORDS_ACTION = "rotate-passwords-action"


# ------------------------------------------------------------------- states


class UnitState(enum.StrEnum):
    """Where one unit's redis-server and sentinel are in their life."""

    WAITING_FOR_WORKLOAD = "waiting_for_workload"
    WAITING_FOR_PRIMARY = "waiting_for_primary"
    STARTING_PRIMARY = "starting_primary"
    PRIMARY = "primary"
    SYNCING = "syncing"
    REPLICA = "replica"
    FENCED = "fenced"
    HANDING_OVER = "handing_over"
    STOPPED = "stopped"


class ClusterState(enum.StrEnum):
    """Where the cluster is, as decided by the leader."""

    FORMING = "forming"
    BOOTSTRAPPING = "bootstrapping"
    RECOVERING = "recovering"
    NOT_HA = "not_ha"
    HA = "ha"
    NO_QUORUM = "no_quorum"
    SWITCHING_OVER = "switching_over"
    RESETTING_SENTINELS = "resetting_sentinels"


SERVING_CLUSTER_STATES = frozenset(
    {
        ClusterState.NOT_HA,
        ClusterState.HA,
        ClusterState.NO_QUORUM,
        ClusterState.SWITCHING_OVER,
        ClusterState.RESETTING_SENTINELS,
    }
)
"""Cluster states in which a primary is established and Sentinel is its truth."""


class Role(enum.StrEnum):
    """The replication role as ``INFO replication`` reports it."""

    MASTER = "master"
    SLAVE = "slave"
    UNKNOWN = "unknown"


HANDOVER_COMPLETED = "completed"
"""The ``handover`` outcome of a switchover that moved the primary away."""


# ------------------------------------------------------------- observations


class UnitObservation(_Frozen):
    """What the charm saw of its own unit's redis and sentinel while handling the event."""

    containers_ready: bool = False
    """Pebble answers in both the redis and the sentinel container."""
    redis_service_defined: bool = False
    """Pebble's plan has the redis service: false in a new or restarted pod until configured."""
    redis_up: bool = False
    sentinel_up: bool = False
    role: Role = Role.UNKNOWN
    master_repl_offset: Offset = 0
    keys: Count = 0
    master_host: UnitName | None = None
    """The unit a replica replicates from (``master_host`` of INFO replication)."""
    master_link_up: bool = False
    sync_in_progress: bool = False
    sentinel_primary: UnitName | None = None
    sentinel_primary_is_master: bool = False
    """The redis ``sentinel_primary`` names answered as a master, asked directly in this hook."""
    failover_in_progress: bool = False
    """This unit's redis is a master that its sentinel does not name, and a sentinel (its
    own, or the named primary's) is failing the primary over: it may be the replica
    being promoted."""
    sentinel_epoch: Count = 0
    sentinel_generation: Count = 0
    """The generation of the newest monitor this unit's sentinel has (see ClusterFacts)."""
    sentinels_seen: Count = 0
    """How many *other* sentinels this unit's sentinel knows of for the primary."""
    handover: str | None = Field(default=None, max_length=120)
    """Outcome of a handover run in this hook: ``completed`` or why it could not."""


class UnitFacts(_Frozen):
    """A unit's persisted state and the facts it publishes to the leader."""

    state: UnitState = UnitState.WAITING_FOR_WORKLOAD
    redis_up: bool = False
    sentinel_up: bool = False
    ever_started: bool = False
    """redis-server was configured on this unit's storage at least once."""
    role: Role = Role.UNKNOWN
    master_repl_offset: Offset = 0
    keys: Count = 0
    master_link_up: bool = False
    """A replica's link to its primary was up when last observed: its offset is moving."""
    following: UnitName | None = None
    """The primary this unit replicates from (or itself when primary)."""
    epoch: Count = 0
    """The cluster epoch at which ``following`` was last decided."""
    sentinel_primary: UnitName | None = None
    sentinel_primary_is_master: bool = False
    """When last observed, the primary this unit's sentinel names answered as a master.

    The leader can then record a failover from one member's report, its own, without
    waiting for the new primary's own hook to publish its role."""
    sentinel_epoch: Count = 0
    sentinel_generation: Count = 0
    sentinels_seen: Count = 0
    quorum: Count = 0
    """The quorum last applied to this unit's sentinel."""
    reset_wave: Count = 0
    """The last sentinel reset wave this unit's sentinel was reset in."""
    reset_verified: bool = False
    """After that reset, the sentinel was seen to know exactly the other members' sentinels."""
    handover: str | None = Field(default=None, max_length=120)


class MemberReport(UnitFacts):
    """One member's published facts as the leader reads them from its unit databag."""

    unit: UnitName


class ClusterFacts(_Frozen):
    """The cluster's persisted state: what the leader decided, read by every unit."""

    state: ClusterState = ClusterState.FORMING
    bootstrapped: UnitName | None = None
    """The unit chosen for the one bootstrap of this cluster's lifetime."""
    members: tuple[UnitName, ...] = ()
    primary: UnitName | None = None
    """The primary as Sentinel reports it (or as the leader elected it)."""
    start_as_primary: UnitName | None = None
    """The unit the leader elected to start as primary (bootstrap or recovery)."""
    epoch: Count = 0
    """Cluster epoch: incremented on every change of primary."""
    generation: Count = 0
    """Incremented by the bootstrap and by every cold-start election. The sentinels
    monitor the primary under a name of this generation, so what they remember of an
    older one (a dead primary, a higher config-epoch) cannot pull them back."""
    sentinel_epoch: Count = 0
    """Highest Sentinel config-epoch recorded for the current generation."""
    quorum: Count = 0
    departed: tuple[UnitName, ...] = ()
    """Units that left and must be reset out of the remaining sentinels."""
    reset_queue: tuple[UnitName, ...] = ()
    """Members whose sentinel still has to be reset, one at a time, head first."""
    reset_wave: Count = 0
    switchover_target: UnitName | None = None
    note: str | None = Field(default=None, max_length=200)
    """Why the last request was refused or could not complete, for the operator."""

    @property
    def reset_turn(self) -> UnitName | None:
        """The unit whose sentinel must reset now, if any."""
        if self.state is ClusterState.RESETTING_SENTINELS and self.reset_queue:
            return self.reset_queue[0]
        return None


# ------------------------------------------------------------------- inputs


class UnitInput(_Frozen):
    """One event as the unit machine sees it."""

    machine: Literal["unit"] = "unit"
    event: Event
    unit: UnitName
    observation: UnitObservation = UnitObservation()
    cluster: ClusterFacts = ClusterFacts()
    peers: tuple[UnitName, ...] = ()
    """The other units in the peer relation, as Juju shows them to this unit."""


class ClusterInput(_Frozen):
    """One event as the leader's cluster machine sees it."""

    machine: Literal["cluster"] = "cluster"
    event: Event
    leader: UnitName
    subject: UnitName | None = None
    """The departed unit, or the switchover target the operator named."""
    members: tuple[MemberReport, ...] = ()


# ------------------------------------------------------------------ effects


@dataclasses.dataclass(frozen=True)
class ConfigureRedis:
    """Render redis.conf and make redis-server run as primary (``replica_of`` None) or replica."""

    replica_of: str | None


@dataclasses.dataclass(frozen=True)
class ConfigureSentinel:
    """Make the sentinel run, monitoring ``primary`` under the name of ``generation``.

    A sentinel that already monitors this generation keeps what it knows (Sentinel
    is the truth); only ``quorum`` is applied. Monitors of older generations go.
    """

    primary: str
    quorum: int
    generation: int


@dataclasses.dataclass(frozen=True)
class Fence:
    """Run redis-server as a replica of nothing: its data can be read, it takes no writes.

    Every start begins fenced (and a primary that restarted empty stays so):
    redis-server becomes a primary only when the machine says so.
    """


@dataclasses.dataclass(frozen=True)
class HandOver:
    """Planned switchover away from this primary: pause writes, catch a replica up, fail over."""

    target: str | None


@dataclasses.dataclass(frozen=True)
class ResetSentinel:
    """``SENTINEL RESET`` this unit's sentinel for reset wave ``wave`` and check whom it sees.

    ``sentinels`` is how many other sentinels it should find again (the other
    members'): the workload gives it a few seconds to, so that the same hook can
    see the reset verified (nothing else would raise an event when it is).
    """

    wave: int
    sentinels: int = 0


@dataclasses.dataclass(frozen=True)
class StopWorkload:
    """Stop redis-server and the sentinel on this unit."""


@dataclasses.dataclass(frozen=True)
class AnnouncePrimary:
    """Tell clients and units the primary at ``epoch`` (app data, client relations)."""

    primary: str
    epoch: int


@dataclasses.dataclass(frozen=True)
class RequestSwitchover:
    """Ask the current primary to hand over to ``target``."""

    target: str


@dataclasses.dataclass(frozen=True)
class RefuseRequest:
    """An operator request was refused; ``reason`` says why."""

    reason: str


Effect = (
    ConfigureRedis
    | ConfigureSentinel
    | Fence
    | HandOver
    | ResetSentinel
    | StopWorkload
    | AnnouncePrimary
    | RequestSwitchover
    | RefuseRequest
)
