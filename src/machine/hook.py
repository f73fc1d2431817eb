"""One hook, run to completion: observe, step, execute effects, observe again.

The charm and the cluster model in the tests both run hooks through these
two functions, with the real workload or the simulated one behind the
``observe`` and ``execute`` callables. This module does no I/O itself.

A hook steps the unit machine at most ``MAX_ROUNDS`` times: after a step that
produced effects, the effects are executed and the unit is observed again,
so that a step such as "hand over, then stop" completes within one hook when
the workload answers, and is otherwise recorded and resumed by the next
event; a round with an effect the workload could not carry out is the last.
The leader then steps the cluster machine once with every member's published
facts, its own included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .journal import ClusterJournal, UnitJournal, step
from .types import (
    ClusterInput,
    Effect,
    Event,
    MemberReport,
    UnitFacts,
    UnitInput,
    UnitObservation,
    UnitState,
)

MAX_ROUNDS = 3


def run_unit(
    journal: UnitJournal,
    unit_input: Callable[[UnitObservation], UnitInput],
    observe: Callable[[], UnitObservation],
    execute: Callable[[Effect], bool],
) -> UnitJournal:
    """Step the unit machine for one event until it settles or ``MAX_ROUNDS`` are used.

    ``execute`` says whether the workload carried an effect out. After a round with
    one it could not (a redis that does not answer), the hook observes no more: the
    same step would only ask for the same effect again, against the same server,
    and delay what the rest of the hook records (a failover, on the leader whose
    own redis froze). The next event observes again.
    """
    for _ in range(MAX_ROUNDS):
        journal, outcome = step(journal, unit_input(observe()))
        if not outcome.effects:
            break
        carried_out = [execute(effect) for effect in outcome.effects]
        if not all(carried_out):
            break
    return journal


def run_cluster(
    journal: ClusterJournal,
    event: Event,
    leader: str,
    members: Sequence[MemberReport],
    subject: str | None,
    execute: Callable[[Effect], object],
) -> ClusterJournal:
    """Step the leader's cluster machine once for one event and execute its effects."""
    cluster_input = ClusterInput(
        event=event, leader=leader, subject=subject, members=tuple(members)
    )
    journal, outcome = step(journal, cluster_input)
    for effect in outcome.effects:
        execute(effect)
    return journal


def report(unit: str, journal: UnitJournal) -> MemberReport:
    """The facts a unit publishes, as the leader reads them."""
    return MemberReport(unit=unit, **journal.current.model_dump())


def leader_can_decide(event: Event, unit: UnitFacts) -> bool:
    """Whether the leader steps the cluster machine in this hook.

    Not once it is leaving: after its own teardown it no longer sees its peers (in
    ``peer-relation-broken`` Juju shows it none), and would record every one of
    them as departed. The next leader carries on.
    """
    return event not in (Event.LEAVING, Event.PEER_RELATION_BROKEN) and (
        unit.state is not UnitState.STOPPED
    )
