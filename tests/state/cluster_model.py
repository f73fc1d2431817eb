"""A model of a redis-k8s deployment that drives the real machines.

``World`` simulates what the charm cannot decide: pods, redis-server and
redis-sentinel processes, a partition of the network, and Juju's delivery of
events (per unit in order, across units in any interleaving). Hooks run the
real ``machine.hook`` functions, so the real unit and cluster machines and
the real journal (serialised to strings, as in peer relation data) are what
is exercised. Only the world is simplified:

- replication is instantaneous for a replica connected to its primary;
- a sentinel majority on one side of a partition fails a primary over that it
  cannot reach, promoting the most advanced connected replica, and turns a
  reachable stale master into a replica of the new primary;
- sentinels discover each other as soon as they can reach each other, and
  only ``SENTINEL RESET`` makes them forget one that left;
- a restarted pod has no Pebble layer: redis and sentinel run again only when
  the charm configures them; data survives only with persistence on.
"""

from __future__ import annotations

import dataclasses
from collections import deque

from machine import journal
from machine.cluster import PRIMARY_STATES, majority, unit_number
from machine.hook import leader_can_decide, report, run_cluster, run_unit
from machine.types import (
    HANDOVER_COMPLETED,
    AnnouncePrimary,
    ClusterFacts,
    ClusterState,
    ConfigureRedis,
    ConfigureSentinel,
    Effect,
    Event,
    Fence,
    HandOver,
    MemberReport,
    RefuseRequest,
    RequestSwitchover,
    ResetSentinel,
    Role,
    StopWorkload,
    UnitInput,
    UnitObservation,
    UnitState,
)

APP = "redis-k8s"
RESTART_SEQUENCE = (
    Event.UPGRADE_CHARM,
    Event.CONFIG_CHANGED,
    Event.START,
    Event.REDIS_PEBBLE_READY,
    Event.SENTINEL_PEBBLE_READY,
)
FIRST_SEQUENCE = (
    Event.INSTALL,
    Event.PEER_RELATION_CREATED,
    Event.STORAGE_ATTACHED,
    Event.CONFIG_CHANGED,
    Event.START,
    Event.REDIS_PEBBLE_READY,
    Event.SENTINEL_PEBBLE_READY,
)
REMOVAL_SEQUENCE = (
    Event.LEAVING,
    Event.PEER_RELATION_BROKEN,
    Event.STORAGE_DETACHING,
    Event.STOP,
    Event.REMOVE,
)


@dataclasses.dataclass
class Redis:
    up: bool = False
    defined: bool = False
    """Pebble's plan has the service (a restarted pod has no plan)."""
    role: Role = Role.MASTER
    replica_of: str | None = None
    fenced: bool = False
    offset: int = 0
    keys: int = 0
    frozen: bool = False
    master_epoch: int = 0
    """The Sentinel config epoch on its side of the network when it became a master."""


@dataclasses.dataclass
class Sentinel:
    up: bool = False
    generation: int = 0
    """Which generation's master name it monitors (the newest it was told)."""
    primary: str | None = None
    epoch: int = 0
    knows: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class Pod:
    name: str
    alive: bool = True
    side: int = 0
    redis: Redis = dataclasses.field(default_factory=Redis)
    sentinel: Sentinel = dataclasses.field(default_factory=Sentinel)
    queue: deque = dataclasses.field(default_factory=deque)
    unit_data: str = ""
    handover: str | None = None
    leaving: bool = False


class World:
    """Pods, processes, network and Juju, around the real machines."""

    def __init__(self, persistent: bool = True) -> None:
        self.persistent = persistent
        self.pods: dict[str, Pod] = {}
        self.members: list[str] = []  # units in the peer relation
        self.leader: str | None = None
        self.app_data: str = ""
        self.next_number = 0
        # What the invariants look at.
        self.announced: dict[int, str] = {}
        self.bootstraps: list[tuple[str, bool]] = []
        """(chosen unit, whether a member held data or a running sentinel knew a primary)."""
        self.records_lost = False
        """Some peer databag was lost: a bootstrap nobody acted on may be decided again."""
        self.elections: list[tuple[str, dict[str, int]]] = []
        """(elected unit, every member's true offset then) for every cold-start election."""
        self.stops_of_primary: list[tuple[str, str | None, int]] = []
        """(unit, recorded handover outcome, other members then) for every primary that stopped."""
        self.refusals: list[str] = []
        self.hooks_run = 0
        self._journals: dict[tuple, object] = {}

    # ------------------------------------------------------------ juju side

    def cluster(self) -> ClusterFacts:
        return self.cluster_journal().current

    def cluster_journal(self) -> journal.ClusterJournal:
        return self._loaded(self.app_data, journal.load_cluster)  # type: ignore[return-value]

    def unit_journal(self, name: str) -> journal.UnitJournal:
        return self._loaded(self.pods[name].unit_data, journal.load_unit)  # type: ignore[return-value]

    def _loaded(self, text, load):
        """Load a databag value as the charm does (validated, replayed), once per distinct text."""
        key = (load, text)
        if len(self._journals) > 4096:
            self._journals.clear()  # a long history: keep memory bounded
        if key not in self._journals:
            self._journals[key] = load(text)[0]  # unreadable data: a fresh journal
        return self._journals[key]

    def add_unit(self) -> str:
        name = f"{APP}/{self.next_number}"
        self.next_number += 1
        pod = Pod(name)
        self.pods[name] = pod
        for other in self.members:
            self.pods[other].queue.append((Event.PEER_RELATION_JOINED, name))
            self.pods[other].queue.append((Event.PEER_RELATION_CHANGED, name))
        self.members.append(name)
        pod.queue.extend((e, None) for e in FIRST_SEQUENCE)
        if self.leader is None:
            self.elect_leader(name)
        return name

    def elect_leader(self, name: str | None) -> None:
        self.leader = name
        if name is not None:
            self.pods[name].queue.append((Event.LEADER_ELECTED, None))

    def start_removal(self, name: str) -> None:
        """Juju starts tearing a unit down: its own hooks come first."""
        pod = self.pods[name]
        pod.leaving = True
        pod.queue.extend((e, None) for e in REMOVAL_SEQUENCE)

    def finish_removal(self, name: str) -> None:
        """The unit is gone: the others see it depart."""
        pod = self.pods.pop(name)
        pod.alive = False
        self.members.remove(name)
        for other in self.members:
            self.pods[other].queue.append((Event.PEER_RELATION_DEPARTED, name))
        if self.leader == name:
            self.elect_leader(self.members[0] if self.members else None)

    def delete_pod(self, name: str) -> None:
        """The pod dies at once (no stop hook) and is rescheduled with its storage.

        The sentinel's configuration file lives on that storage: it keeps what it knew
        (primary and epoch) and stops running until the charm configures it again.
        """
        pod = self.pods[name]
        pod.alive = False
        pod.queue.clear()
        pod.redis.up = False
        pod.redis.frozen = False
        pod.sentinel.up = False
        if not self.persistent:
            pod.redis.offset = pod.redis.keys = 0

    def wipe_sentinel_memory(self, name: str) -> None:
        """The sentinel's configuration file is lost (a volume replaced)."""
        self.pods[name].sentinel = Sentinel()

    def kill_redis(self, name: str) -> None:
        """SIGKILL redis-server.

        With persistence Pebble restarts it with its data; without, the charm's layer does
        not let Pebble restart it (an empty restart could wipe the replicas), so it stays
        down and the check fails.
        """
        pod = self.pods[name]
        if self.persistent:
            return  # restarted in about half a second, data and role as before
        pod.redis.up = False
        pod.redis.offset = pod.redis.keys = 0
        pod.queue.append((Event.PEBBLE_CHECK_FAILED, None))

    def restart_pod(self, name: str) -> None:
        pod = self.pods[name]
        pod.alive = True
        pod.redis = Redis(offset=pod.redis.offset, keys=pod.redis.keys)
        pod.queue.extend((e, None) for e in RESTART_SEQUENCE)

    def deliver(self, name: str) -> None:
        """Run the next queued hook of a unit, as Juju would."""
        pod = self.pods[name]
        if not pod.alive or not pod.queue:
            return
        event, subject = pod.queue.popleft()
        self.run_hook(name, event, subject)

    def run_hook(self, name: str, event: Event, subject: str | None) -> None:
        self.hooks_run += 1
        before = self.unit_journal(name)
        cluster = self.cluster()
        unit_journal = self.step_unit(name, before, event, cluster)
        self.publish_unit(name, journal.dump(unit_journal))
        if self.leader == name and leader_can_decide(event, unit_journal.current):
            cluster_before = self.cluster()
            truth = {m: self.pods[m].redis.offset for m in self.members}
            had_data = any(
                self.pods[m].redis.offset
                or self.pods[m].redis.keys
                or (self.pods[m].sentinel.up and self.pods[m].sentinel.primary)
                for m in self.members
            )
            cluster_journal = run_cluster(
                self.cluster_journal(),
                event,
                name,
                self.reports(),
                subject,
                lambda effect: self.execute(name, effect),
            )
            after = cluster_journal.current
            if cluster_before.bootstrapped is None and after.state is ClusterState.BOOTSTRAPPING:
                self.bootstraps.append((str(after.bootstrapped), had_data))
            elected = after.start_as_primary
            newly_elected = cluster_before.start_as_primary is None and elected is not None
            if newly_elected and after.state is ClusterState.RECOVERING:
                self.elections.append((str(elected), truth))
            self.publish_app(journal.dump(cluster_journal))
            if after != cluster:  # the leader's own unit acts on its decision at once
                unit_journal = self.step_unit(name, unit_journal, event, after)
                self.publish_unit(name, journal.dump(unit_journal))
        stopped = unit_journal.current.state is UnitState.STOPPED
        if stopped and before.current.state in PRIMARY_STATES:
            others = len([m for m in self.members if m != name])
            self.stops_of_primary.append((name, unit_journal.current.handover, others))

    def step_unit(
        self, name: str, unit_journal: journal.UnitJournal, event: Event, cluster: ClusterFacts
    ) -> journal.UnitJournal:
        """Step one unit's machine for one event, as ``machine.hook.run_unit`` does."""
        peers = tuple(m for m in self.members if m != name)
        return run_unit(
            unit_journal,
            lambda obs: UnitInput(
                event=event, unit=name, observation=obs, cluster=cluster, peers=peers
            ),
            lambda: self.observe(name),
            lambda effect: self.execute(name, effect),
        )

    def publish_unit(self, name: str, data: str) -> None:
        pod = self.pods[name]
        if data != pod.unit_data:
            pod.unit_data = data
            for other in self.members:
                if other != name and other in self.pods:
                    self.pods[other].queue.append((Event.PEER_RELATION_CHANGED, name))

    def publish_app(self, data: str) -> None:
        if data != self.app_data:
            self.app_data = data
            for other in self.members:
                if other != self.leader:
                    self.pods[other].queue.append((Event.PEER_RELATION_CHANGED, None))

    def lose_peer_data(self, which: str) -> None:
        """A databag is lost (the charm loads it as a fresh journal)."""
        self.records_lost = True
        if which == "app":
            self.app_data = "corrupt"
        else:
            self.pods[which].unit_data = "corrupt"

    def reports(self) -> list[MemberReport]:
        return [report(m, self.unit_journal(m)) for m in self.members]

    # --------------------------------------------------------- workload side

    def reachable(self, a: str, b: str) -> bool:
        pa, pb = self.pods.get(a), self.pods.get(b)
        return bool(pa and pb and pa.alive and pb.alive and pa.side == pb.side)

    def answers(self, name: str) -> bool:
        pod = self.pods.get(name)
        return bool(pod and pod.alive and pod.redis.up and not pod.redis.frozen)

    def link_up(self, name: str) -> bool:
        r = self.pods[name].redis
        return (
            r.role is Role.SLAVE
            and not r.fenced
            and r.replica_of is not None
            and self.answers(r.replica_of)
            and self.reachable(name, r.replica_of)
            and self.pods[r.replica_of].redis.role is Role.MASTER  # else NOMASTERLINK
        )

    def observe(self, name: str) -> UnitObservation:
        pod = self.pods[name]
        r, s = pod.redis, pod.sentinel
        self.sentinel_gossip()
        self.sync(name)
        redis_up = self.answers(name)
        sentinel_up = pod.alive and s.up
        if sentinel_up:
            s.knows |= set(self.sentinels_on_side(name)) - {name}
        observation = UnitObservation(
            containers_ready=pod.alive,
            redis_service_defined=pod.alive and r.defined,
            redis_up=redis_up,
            sentinel_up=sentinel_up,
            role=r.role if redis_up else Role.UNKNOWN,
            master_repl_offset=r.offset if redis_up else 0,
            keys=r.keys if redis_up else 0,
            master_host=r.replica_of if redis_up and r.role is Role.SLAVE else None,
            master_link_up=redis_up and self.link_up(name),
            sentinel_primary=s.primary if sentinel_up else None,
            sentinel_primary_is_master=sentinel_up
            and s.primary is not None
            and self.reachable(name, s.primary)
            and self.answers(s.primary)
            and self.pods[s.primary].redis.role is Role.MASTER,
            sentinel_epoch=s.epoch if sentinel_up else 0,
            sentinel_generation=s.generation if sentinel_up else 0,
            sentinels_seen=len(s.knows) if sentinel_up else 0,
            handover=pod.handover,
        )
        pod.handover = None
        return observation

    def sync(self, name: str) -> None:
        """A connected replica has what its primary has."""
        r = self.pods[name].redis
        if r.up and self.link_up(name):
            source = self.pods[r.replica_of].redis  # type: ignore[index]
            r.offset, r.keys = source.offset, source.keys

    def make_master(self, name: str, epoch: int | None = None) -> None:
        r = self.pods[name].redis
        if r.role is not Role.MASTER or r.fenced:
            r.master_epoch = (
                epoch
                if epoch is not None
                else max(
                    (self.pods[v].sentinel.epoch for v in self.sentinels_on_side(name)), default=0
                )
            )
        r.up, r.defined, r.role, r.replica_of, r.fenced = True, True, Role.MASTER, None, False

    def make_replica(self, name: str, primary: str | None) -> None:
        r = self.pods[name].redis
        r.up, r.defined, r.role, r.replica_of = True, True, Role.SLAVE, primary
        r.fenced = primary is None
        self.sync(name)

    def execute(self, name: str, effect: Effect) -> bool:
        """Carry ``effect`` out on ``name``'s pod; False when its workload could not."""
        pod = self.pods[name]
        if isinstance(effect, (ConfigureRedis, Fence)) and (not pod.alive or pod.redis.frozen):
            # Pebble takes the layer, but the command times out against a frozen
            # redis-server (and nothing runs on a dead pod).
            pod.redis.defined = pod.redis.defined or pod.alive
            return False
        match effect:
            case ConfigureRedis(replica_of=None):
                self.make_master(name)
            case ConfigureRedis(replica_of=primary):
                self.make_replica(name, primary)
            case Fence():
                self.make_replica(name, None)
            case ConfigureSentinel(primary=primary, generation=generation):
                # A sentinel that already monitors this generation keeps what it knows
                # (Sentinel is the truth); a new generation starts from the charm's word.
                s = pod.sentinel
                if generation > s.generation:
                    s.generation, s.primary, s.knows = generation, None, set()
                if s.primary is None:
                    s.primary = primary
                    s.epoch = max(
                        (
                            p.sentinel.epoch
                            for o, p in self.pods.items()
                            if p.sentinel.up
                            and p.sentinel.generation == generation
                            and p.sentinel.primary == primary
                            and self.reachable(name, o)
                        ),
                        default=0,
                    )
                s.up = True
            case HandOver(target=target):
                pod.handover = self.switchover(name, target)
            case ResetSentinel():
                pod.sentinel.knows = set(self.sentinels_on_side(name)) - {name}
            case StopWorkload():
                pod.redis.up = False
                pod.sentinel.up = False
            case AnnouncePrimary(primary=primary, epoch=epoch):
                # Epochs are remembered in peer data: only its loss can make one repeat.
                repeated = self.announced.get(epoch, primary) != primary
                assert self.records_lost or not repeated, "two primaries announced, one epoch"
                self.announced[epoch] = primary
            case RequestSwitchover():
                pass
            case RefuseRequest(reason=reason):
                self.refusals.append(reason)
        return True

    def sentinels_on_side(self, name: str) -> list[str]:
        """Running sentinels that reach ``name`` and monitor its sentinel's generation."""
        generation = self.pods[name].sentinel.generation
        return [
            o
            for o, p in self.pods.items()
            if p.sentinel.up and p.sentinel.generation == generation and self.reachable(name, o)
        ]

    def switchover(self, name: str, target: str | None) -> str:
        """A planned switchover run by the primary's charm: pause, catch up, fail over."""
        if not self.answers(name) or self.pods[name].redis.role is not Role.MASTER:
            return "this unit's redis is not a reachable master"
        voters = self.sentinels_on_side(name)
        if len(voters) < majority(len(self.members)):
            return "no sentinel majority to authorise the failover"
        candidates = [
            o
            for o in self.members
            if o != name and self.link_up(o) and self.pods[o].redis.replica_of == name
        ]
        if target is not None:
            candidates = [c for c in candidates if c == target]
        if not candidates:
            return "no connected replica to hand over to"
        chosen = candidates[0]
        self.promote(chosen, voters)
        return HANDOVER_COMPLETED

    def promote(self, chosen: str, voters: list[str]) -> None:
        """Sentinel promotes ``chosen``: a new epoch, replicas follow it."""
        epoch = max(self.pods[v].sentinel.epoch for v in voters) + 1
        old = self.pods[voters[0]].sentinel.primary
        self.make_master(chosen, epoch)
        for v in voters:
            self.pods[v].sentinel.primary = chosen
            self.pods[v].sentinel.epoch = epoch
        for o, p in self.pods.items():
            follows_old = p.redis.replica_of == old or o == old
            if o != chosen and follows_old and self.answers(o) and self.reachable(o, chosen):
                self.make_replica(o, chosen)

    def sentinel_gossip(self) -> None:
        """Sentinels that reach each other adopt the configuration with the highest epoch."""
        for name, pod in self.pods.items():
            if not (pod.alive and pod.sentinel.up):
                continue
            peers = [self.pods[v].sentinel for v in self.sentinels_on_side(name)]
            best = max(peers, key=lambda s: s.epoch)
            if best.epoch > pod.sentinel.epoch and best.primary is not None:
                pod.sentinel.primary, pod.sentinel.epoch = best.primary, best.epoch

    def sentinel_failover(self) -> bool:
        """Sentinels that cannot reach their primary fail it over, if a majority agrees."""
        for name in sorted(self.pods, key=unit_number):
            voters = self.sentinels_on_side(name)
            if not voters or len(voters) < majority(len(self.members)):
                continue
            primary = self.pods[voters[0]].sentinel.primary
            if primary is None or any(self.pods[v].sentinel.primary != primary for v in voters):
                continue
            if (
                self.answers(primary)
                and self.reachable(name, primary)
                and self.pods[primary].redis.role is Role.MASTER
            ):
                continue  # a master that answers as master is not failed over
            replicas = [
                o
                for o in voters
                if self.answers(o)
                and self.pods[o].redis.role is Role.SLAVE
                and self.pods[o].redis.replica_of == primary
            ]
            if not replicas:
                continue
            best = max(replicas, key=lambda o: self.pods[o].redis.offset)
            self.promote(best, voters)
            for v in self.members:
                if v in self.pods and self.pods[v].alive:
                    self.pods[v].queue.append((Event.PEBBLE_CUSTOM_NOTICE, None))
            return True
        return False

    def sentinel_demote_stale(self) -> None:
        """A master the sentinel majority does not name is turned into a replica."""
        for name, pod in self.pods.items():
            voters = self.sentinels_on_side(name)
            if len(voters) < majority(len(self.members)) or not self.answers(name):
                continue
            named = self.pods[voters[0]].sentinel.primary
            if (
                named not in (None, name)
                and pod.redis.role is Role.MASTER
                and all(self.pods[v].sentinel.primary == named for v in voters)
            ):
                self.make_replica(name, named)

    def write(self) -> None:
        """A client writes to every master that can acknowledge a write."""
        for name in self.writable_masters():
            r = self.pods[name].redis
            r.offset += 1
            r.keys += 1
            for o in self.pods:
                self.sync(o)

    def writable_masters_by_epoch(self) -> dict[int, list[str]]:
        by_epoch: dict[int, list[str]] = {}
        for name in self.writable_masters():
            by_epoch.setdefault(self.pods[name].redis.master_epoch, []).append(name)
        return by_epoch

    def writable_masters(self) -> list[str]:
        """Masters that accept writes: answering, with a replica (min-replicas-to-write 1)."""
        result = []
        for name, pod in self.pods.items():
            if not self.answers(name) or pod.redis.role is not Role.MASTER or pod.redis.fenced:
                continue
            replicas = [
                o for o in self.pods if self.pods[o].redis.replica_of == name and self.link_up(o)
            ]
            if len(self.members) == 1 or replicas:
                result.append(name)
        return result

    # ----------------------------------------------------------- settling

    def quiet(self) -> bool:
        return all(not p.queue for p in self.pods.values() if p.alive)

    def settle(self, max_hooks: int = 2000) -> int:
        """Deliver every queued hook fairly (round robin) until nothing is queued."""
        hooks = 0
        while hooks < max_hooks:
            progressed = False
            for name in sorted(self.pods, key=unit_number):
                if self.pods[name].alive and self.pods[name].queue:
                    self.deliver(name)
                    hooks += 1
                    progressed = True
            self.sentinel_gossip()
            if self.sentinel_failover():
                progressed = True
            self.sentinel_demote_stale()
            if not progressed:
                return hooks
        raise AssertionError(
            f"no quiescence after {max_hooks} hooks: an event storm or a livelock"
        )

    def update_status_everywhere(self) -> None:
        for name in self.members:
            if self.pods[name].alive:
                self.pods[name].queue.append((Event.UPDATE_STATUS, None))
