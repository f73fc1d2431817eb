"""The cluster model: 1 to 7 units, arbitrary Juju interleavings and faults, real machines.

Each history is a sequence of Juju events delivered to units in any order
(joins, departures, leader changes, update-status, the switchover action),
and faults (pod deletions and restarts, frozen redis, partitions, Sentinel
failovers). After every step the safety properties of DESIGN.md are checked;
at the end of every history the faults are healed and, with three or more
units, the cluster must reach a settled HA state within a bounded number of
fairly delivered hooks (liveness).
"""

from __future__ import annotations

import os

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from machine import journal
from machine.cluster import majority
from machine.types import ClusterState, Event, Role, UnitState
from tests.state.cluster_model import World

CLUSTER_HISTORIES = int(
    os.environ.get(
        "CLUSTER_HISTORIES", 20_000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 2_000
    )
)
"""Histories checked per run: 2,000 in CI, 20,000 with the long profile, or as set."""
STEPS_PER_HISTORY = 50 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 25
"""Rules (each may deliver up to 12 hooks) per history, before the liveness check."""
MAX_UNITS = 7
LIVENESS_HOOK_BOUND = 2000
"""Fairly delivered hooks within which a healed cluster must go quiet (7 units: ~450)."""


class ClusterHistories(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(persistent=True)
        self.world.add_unit()
        self.checked_databags: set[str] = set()

    # ------------------------------------------------------------ juju
    @precondition(lambda self: len(self.world.members) < MAX_UNITS)
    @rule()
    def add_unit(self) -> None:
        self.world.add_unit()

    @rule(data=st.data())
    def deliver_hook(self, data: st.DataObject) -> None:
        ready = [n for n, p in sorted(self.world.pods.items()) if p.alive and p.queue]
        if ready:
            self.world.deliver(data.draw(st.sampled_from(ready), label="unit"))

    @rule(data=st.data(), count=st.integers(1, 12))
    def deliver_many(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            self.deliver_hook(data)

    @rule(data=st.data())
    def update_status(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.world.members), label="unit")
        if self.world.pods[name].alive:
            self.world.pods[name].queue.append((Event.UPDATE_STATUS, None))

    @precondition(lambda self: len(self.world.members) > 1)
    @rule(data=st.data())
    def change_leader(self, data: st.DataObject) -> None:
        alive = [m for m in self.world.members if self.world.pods[m].alive]
        if alive:
            self.world.elect_leader(data.draw(st.sampled_from(alive), label="leader"))

    @precondition(lambda self: len(self.world.members) > 1)
    @rule(data=st.data())
    def remove_unit(self, data: st.DataObject) -> None:
        staying = [m for m in self.world.members if not self.world.pods[m].leaving]
        if len(staying) > 1:
            self.world.start_removal(data.draw(st.sampled_from(staying), label="unit"))

    @rule()
    def finish_removals(self) -> None:
        for name in list(self.world.members):
            pod = self.world.pods[name]
            if pod.leaving and (not pod.queue or not pod.alive) and len(self.world.members) > 1:
                self.world.finish_removal(name)

    @rule(data=st.data(), to_best=st.booleans())
    def switchover_action(self, data: st.DataObject, to_best: bool) -> None:
        leader = self.world.leader
        if leader is None or not self.world.pods[leader].alive:
            return
        target = None if to_best else data.draw(st.sampled_from(self.world.members))
        self.world.pods[leader].queue.append((Event.SWITCHOVER_ACTION, target))

    # ---------------------------------------------------------- faults
    @rule(data=st.data())
    def delete_pod(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.world.members), label="unit")
        if self.world.pods[name].alive:
            self.world.delete_pod(name)

    @rule(data=st.data())
    def restart_pod(self, data: st.DataObject) -> None:
        dead = [m for m in self.world.members if not self.world.pods[m].alive]
        if dead:
            self.world.restart_pod(data.draw(st.sampled_from(dead), label="unit"))

    @rule(data=st.data(), frozen=st.booleans())
    def freeze_or_thaw(self, data: st.DataObject, frozen: bool) -> None:
        name = data.draw(st.sampled_from(self.world.members), label="unit")
        self.world.pods[name].redis.frozen = frozen

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.world.members), label="unit")
        self.world.pods[name].side = 1

    @rule()
    def heal(self) -> None:
        for pod in self.world.pods.values():
            pod.side = 0

    @rule()
    def sentinels_act(self) -> None:
        self.world.sentinel_gossip()
        self.world.sentinel_failover()
        self.world.sentinel_demote_stale()

    @rule(data=st.data())
    def lose_peer_data(self, data: st.DataObject) -> None:
        """A databag is lost or corrupt: the charm loads it as a fresh, safe journal."""
        self.world.lose_peer_data(
            data.draw(st.sampled_from(["app", *self.world.members]), label="databag")
        )

    @rule()
    def write(self) -> None:
        self.world.write()

    # ------------------------------------------------------ invariants
    @invariant()
    def at_most_one_writable_primary_per_epoch(self) -> None:
        for epoch, masters in self.world.writable_masters_by_epoch().items():
            assert len(masters) <= 1, f"several writable primaries at epoch {epoch}: {masters}"

    @invariant()
    def one_bootstrap_never_over_data(self) -> None:
        """Never over data or a known primary; once per lifetime while peer data is intact."""
        assert not any(had_data for _, had_data in self.world.bootstraps), self.world.bootstraps
        if not self.world.records_lost:
            assert len(self.world.bootstraps) <= 1, self.world.bootstraps

    @invariant()
    def cold_start_elects_most_advanced(self) -> None:
        for chosen, offsets in self.world.elections:
            assert offsets[chosen] == max(offsets.values()), (chosen, offsets)

    @invariant()
    def primary_stops_only_after_handover(self) -> None:
        for name, handover, others in self.world.stops_of_primary:
            assert others == 0 or handover is not None, (name, handover)

    @invariant()
    def quorum_is_majority_of_members(self) -> None:
        cluster = self.world.cluster()
        if cluster.members:
            assert cluster.quorum == majority(len(cluster.members))

    @invariant()
    def journals_replay_and_fit(self) -> None:
        """Every databag written fits in 4 KiB and replays to its facts (each text once)."""
        written = [(self.world.app_data, self.world.cluster_journal())] + [
            (pod.unit_data, self.world.unit_journal(name)) for name, pod in self.world.pods.items()
        ]
        for text, loaded in written:
            if text in self.checked_databags:
                continue
            assert len(text.encode()) <= 4096
            assert journal.replay(loaded) == loaded.current
            self.checked_databags.add(text)

    # ------------------------------------------------------- liveness
    def teardown(self) -> None:
        w = self.world
        for name in list(w.members):
            if w.pods[name].leaving:
                w.settle()
                w.finish_removal(name)
        if len(w.members) < 3:
            return
        for name in w.members:
            pod = w.pods[name]
            pod.side = 0
            pod.redis.frozen = False
            if not pod.alive:
                w.restart_pod(name)
        for _ in range(6):
            w.settle(LIVENESS_HOOK_BOUND)
            w.update_status_everywhere()
        w.settle(LIVENESS_HOOK_BOUND)
        assert_settled_ha(w)


def assert_settled_ha(w: World) -> None:
    """One primary, every sentinel names it and sees exactly the others, replicas follow it."""
    cluster = w.cluster()
    assert cluster.state is ClusterState.HA, cluster
    primary = cluster.primary
    assert primary is not None
    states = {m: w.unit_journal(m).current.state for m in w.members}
    assert states[primary] is UnitState.PRIMARY, states
    for m in w.members:
        pod = w.pods[m]
        assert pod.sentinel.primary == primary, (m, pod.sentinel.primary, primary)
        assert pod.sentinel.knows == set(w.members) - {m}, (m, pod.sentinel.knows)
        if m != primary:
            assert states[m] is UnitState.REPLICA, states
            assert pod.redis.role is Role.SLAVE and pod.redis.replica_of == primary
    assert [m for m in w.members if w.pods[m].redis.role is Role.MASTER] == [primary]


class ClusterSafety(ClusterHistories):
    """The same histories, checked for safety only (no healing and liveness at the end)."""

    def teardown(self) -> None:
        pass


ClusterSafety.TestCase.settings = settings(
    max_examples=CLUSTER_HISTORIES, stateful_step_count=STEPS_PER_HISTORY
)
test_cluster_safety = ClusterSafety.TestCase

ClusterHistories.TestCase.settings = settings(
    max_examples=CLUSTER_HISTORIES // 4,
    stateful_step_count=STEPS_PER_HISTORY,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
test_cluster_liveness = ClusterHistories.TestCase
