"""Hypothesis strategies for the machine's vocabulary: any facts, any input."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from machine.types import (
    ClusterFacts,
    ClusterInput,
    ClusterState,
    Event,
    MemberReport,
    Role,
    UnitFacts,
    UnitInput,
    UnitObservation,
    UnitState,
)

APP = "redis-k8s"
units = st.integers(0, 6).map(lambda n: f"{APP}/{n}")
maybe_unit = st.none() | units
small = st.integers(0, 5)
offsets = st.integers(0, 10**12)
handovers = st.none() | st.sampled_from(["completed", "no connected replica to hand over to"])

observations = st.builds(
    UnitObservation,
    containers_ready=st.booleans(),
    redis_service_defined=st.booleans(),
    redis_up=st.booleans(),
    sentinel_up=st.booleans(),
    role=st.sampled_from(Role),
    master_repl_offset=offsets,
    keys=offsets,
    master_host=maybe_unit,
    master_link_up=st.booleans(),
    sync_in_progress=st.booleans(),
    sentinel_primary=maybe_unit,
    sentinel_epoch=small,
    sentinel_generation=small,
    sentinels_seen=small,
    handover=handovers,
)

unit_facts = st.builds(
    UnitFacts,
    state=st.sampled_from(UnitState),
    redis_up=st.booleans(),
    sentinel_up=st.booleans(),
    ever_started=st.booleans(),
    role=st.sampled_from(Role),
    master_repl_offset=offsets,
    keys=offsets,
    master_link_up=st.booleans(),
    following=maybe_unit,
    epoch=small,
    sentinel_primary=maybe_unit,
    sentinel_epoch=small,
    sentinel_generation=small,
    sentinels_seen=small,
    quorum=small,
    reset_wave=small,
    reset_verified=st.booleans(),
    handover=handovers,
)

member_sets = st.sets(units, min_size=0, max_size=7).map(
    lambda s: tuple(sorted(s, key=lambda u: int(u.split("/")[1])))
)

cluster_facts = st.builds(
    ClusterFacts,
    state=st.sampled_from(ClusterState),
    bootstrapped=maybe_unit,
    members=member_sets,
    primary=maybe_unit,
    start_as_primary=maybe_unit,
    epoch=small,
    generation=small,
    sentinel_epoch=small,
    quorum=small,
    departed=member_sets,
    reset_queue=member_sets,
    reset_wave=small,
    switchover_target=maybe_unit,
    note=st.none() | st.just("refused"),
)


@st.composite
def member_reports(draw: st.DrawFn) -> tuple[MemberReport, ...]:
    names = draw(member_sets)
    return tuple(MemberReport(unit=name, **draw(unit_facts).model_dump()) for name in names)


unit_inputs = st.builds(
    UnitInput,
    event=st.sampled_from(Event),
    unit=units,
    observation=observations,
    cluster=cluster_facts,
)

cluster_inputs = st.builds(
    ClusterInput,
    event=st.sampled_from(Event),
    leader=units,
    subject=maybe_unit,
    members=member_reports(),
)


# Plain random generators, for long streams where hypothesis' own generation
# would be too slow (the 10,000-input size bound).


def _rng_unit(rng: random.Random) -> str | None:
    return None if rng.random() < 0.2 else f"{APP}/{rng.randrange(7)}"


def random_unit_facts(rng: random.Random) -> UnitFacts:
    return UnitFacts(
        state=rng.choice(list(UnitState)),
        redis_up=rng.random() < 0.8,
        sentinel_up=rng.random() < 0.8,
        ever_started=rng.random() < 0.8,
        role=rng.choice(list(Role)),
        master_repl_offset=rng.randrange(10**12),
        keys=rng.randrange(10**9),
        master_link_up=rng.random() < 0.5,
        following=_rng_unit(rng),
        epoch=rng.randrange(10**4),
        sentinel_primary=_rng_unit(rng),
        sentinel_epoch=rng.randrange(10**4),
        sentinel_generation=rng.randrange(10**3),
        sentinels_seen=rng.randrange(7),
        quorum=rng.randrange(1, 5),
        reset_wave=rng.randrange(10**3),
        reset_verified=rng.random() < 0.5,
        handover=rng.choice([None, "completed", "no connected replica to hand over to"]),
    )


def random_unit_input(rng: random.Random) -> UnitInput:
    members = tuple(f"{APP}/{n}" for n in range(rng.randrange(1, 8)))
    facts = random_unit_facts(rng)
    observation = UnitObservation(
        containers_ready=rng.random() < 0.9,
        redis_service_defined=rng.random() < 0.9,
        redis_up=facts.redis_up,
        sentinel_up=facts.sentinel_up,
        role=facts.role,
        master_repl_offset=facts.master_repl_offset,
        keys=facts.keys,
        master_host=facts.following,
        master_link_up=facts.master_link_up,
        sentinel_primary=facts.sentinel_primary,
        sentinel_epoch=facts.sentinel_epoch,
        sentinel_generation=facts.sentinel_generation,
        sentinels_seen=facts.sentinels_seen,
        handover=facts.handover,
    )
    cluster = ClusterFacts(
        state=rng.choice(list(ClusterState)),
        bootstrapped=_rng_unit(rng),
        members=members,
        primary=_rng_unit(rng),
        start_as_primary=_rng_unit(rng),
        epoch=rng.randrange(10**4),
        generation=rng.randrange(10**3),
        sentinel_epoch=rng.randrange(10**4),
        quorum=len(members) // 2 + 1,
        departed=tuple(f"{APP}/{n}" for n in range(7, 7 + rng.randrange(3))),
        reset_queue=members[: rng.randrange(len(members) + 1)],
        reset_wave=rng.randrange(10**3),
        switchover_target=_rng_unit(rng),
        note=rng.choice([None, "switchover failed: no connected replica to hand over to"]),
    )
    return UnitInput(
        event=rng.choice(list(Event)),
        unit=rng.choice(members),
        observation=observation,
        cluster=cluster,
    )


def random_cluster_input(rng: random.Random) -> ClusterInput:
    members = tuple(f"{APP}/{n}" for n in range(rng.randrange(1, 8)))
    return ClusterInput(
        event=rng.choice(list(Event)),
        leader=rng.choice(members),
        subject=_rng_unit(rng),
        members=tuple(
            MemberReport(unit=m, **random_unit_facts(rng).model_dump()) for m in members
        ),
    )
