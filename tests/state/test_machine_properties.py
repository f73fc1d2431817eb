"""Properties of the machines over arbitrary facts and inputs.

- totality: every (state, input) steps without raising, and stops within the
  micro-step bound;
- the tables are complete: every (state, trigger) pair ends with an unguarded row;
- persistence: a journal survives dump/load unchanged, replaying its log over
  its base gives its current facts, stepping is deterministic;
- size: after 10,000 random inputs each serialised journal is at most 4 KiB;
- corrupt or foreign data loads as a fresh journal that claims no primary.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machine import journal
from machine.cluster import CLUSTER_MACHINE
from machine.cluster import TRIGGER_OF as CLUSTER_TRIGGER_OF
from machine.engine import MAX_MICROSTEPS
from machine.types import ClusterState, Event, UnitState
from machine.unit import TRIGGER_OF as UNIT_TRIGGER_OF
from machine.unit import UNIT_MACHINE
from tests.state.strategies import (
    cluster_facts,
    cluster_inputs,
    random_cluster_input,
    random_unit_input,
    unit_facts,
    unit_inputs,
)


@pytest.mark.parametrize("engine", [UNIT_MACHINE, CLUSTER_MACHINE], ids=lambda e: e.name)
def test_every_state_and_trigger_ends_with_an_unguarded_row(engine) -> None:
    for state in engine.states:
        for trigger in engine.triggers:
            rows = engine.rows(state, trigger)
            assert rows, (state, trigger)
            assert rows[-1].guard is None, (state, trigger, rows[-1])


def test_every_event_has_a_trigger_on_both_machines() -> None:
    assert set(UNIT_TRIGGER_OF) == set(Event) == set(CLUSTER_TRIGGER_OF)
    assert set(UNIT_TRIGGER_OF.values()) <= set(UNIT_MACHINE.triggers)
    assert set(CLUSTER_TRIGGER_OF.values()) <= set(CLUSTER_MACHINE.triggers)


@settings(max_examples=3000)
@given(facts=unit_facts, inp=unit_inputs)
def test_unit_machine_is_total(facts, inp) -> None:
    outcome = UNIT_MACHINE.run(facts, inp, UNIT_TRIGGER_OF[inp.event])
    assert isinstance(outcome.facts.state, UnitState)
    assert len(outcome.path) < MAX_MICROSTEPS, outcome.path
    assert UNIT_MACHINE.run(facts, inp, UNIT_TRIGGER_OF[inp.event]) == outcome


@settings(max_examples=3000)
@given(facts=cluster_facts, inp=cluster_inputs)
def test_cluster_machine_is_total(facts, inp) -> None:
    outcome = CLUSTER_MACHINE.run(facts, inp, CLUSTER_TRIGGER_OF[inp.event])
    assert isinstance(outcome.facts.state, ClusterState)
    assert len(outcome.path) < MAX_MICROSTEPS, outcome.path
    assert CLUSTER_MACHINE.run(facts, inp, CLUSTER_TRIGGER_OF[inp.event]) == outcome


def assert_round_trips_and_replays(j, inputs, load) -> None:
    for inp in inputs:
        j, _ = journal.step(j, inp)
        loaded, problem = load(journal.dump(j))
        assert problem is None and loaded == j
        assert journal.replay(j) == j.current


@given(inputs=st.lists(unit_inputs, max_size=30))
def test_unit_journal_round_trips_and_replays(inputs) -> None:
    assert_round_trips_and_replays(journal.fresh_unit(), inputs, journal.load_unit)


@given(inputs=st.lists(cluster_inputs, max_size=30))
def test_cluster_journal_round_trips_and_replays(inputs) -> None:
    assert_round_trips_and_replays(journal.fresh_cluster(), inputs, journal.load_cluster)


@pytest.mark.parametrize("seed", [1, 2])
def test_journals_stay_under_4_kib_after_10000_inputs(seed) -> None:
    """Worst-case inputs: 7 members, every field set, offsets in the 10^12."""
    rng = random.Random(seed)
    unit_j, cluster_j = journal.fresh_unit(), journal.fresh_cluster()
    largest = 0
    for _ in range(10_000):
        unit_j, _ = journal.step(unit_j, random_unit_input(rng))
        cluster_j, _ = journal.step(cluster_j, random_cluster_input(rng))
        largest = max(largest, len(journal.dump(unit_j)), len(journal.dump(cluster_j)))
    assert largest <= 4096
    assert journal.replay(unit_j) == unit_j.current
    assert journal.replay(cluster_j) == cluster_j.current


CORRUPT = [
    "not json",
    "{}",
    "[]",
    '{"version": 2, "base": {}, "current": {}}',
    '{"base": {"state": "primary"}, "current": {"state": "ruling"}}',
    '{"base": {}, "current": {"following": "not a unit name"}}',
    '{"base": {}, "current": {}, "log": [{"input": {"event": "explode"}}]}',
    '{"base": {}, "current": {}, "extra": 1}',
]


@pytest.mark.parametrize("text", CORRUPT)
def test_corrupt_unit_data_loads_as_a_fresh_unit_with_a_reason(text) -> None:
    loaded, problem = journal.load_unit(text)
    assert loaded == journal.fresh_unit()
    assert problem and "unreadable machine data" in problem
    assert loaded.current.following is None


@pytest.mark.parametrize("text", [*CORRUPT, '{"base": {}, "current": {"primary": 7}}'])
def test_corrupt_cluster_data_claims_no_primary(text) -> None:
    loaded, problem = journal.load_cluster(text)
    assert loaded == journal.fresh_cluster()
    assert problem and "unreadable machine data" in problem
    assert loaded.current.primary is None and loaded.current.state is ClusterState.FORMING


def test_a_journal_from_different_rules_is_rebased_on_what_happened() -> None:
    j = journal.fresh_unit()
    data = json.loads(journal.dump(j))
    data["current"] = {"state": "replica", "following": "redis-k8s/0", "epoch": 3}
    data["log"] = []
    loaded, problem = journal.load_unit(json.dumps(data))
    assert problem is None
    assert loaded.current.state is UnitState.REPLICA and loaded.base == loaded.current


@given(text=st.text(max_size=200))
def test_any_text_loads_without_raising(text) -> None:
    journal.load_unit(text)
    journal.load_cluster(text)
