"""Persistence of a machine: a snapshot, a compact log of inputs, and the current facts.

A journal is what lives in peer relation data: the unit machine's in the
unit's databag, the cluster machine's in the application databag. It holds

- ``base``: the facts before the oldest logged input,
- ``log``: the inputs since then, each with the states it went from and to
  and the names of the effects it produced (the ``history`` an operator reads),
- ``current``: the facts now; replaying ``log`` over ``base`` gives them.

The serialised journal stays under ``BUDGET`` bytes whatever the number of
events: the oldest entries are folded into ``base`` when it would not.
Loading validates everything; data that is corrupt, of another version or
that does not replay gives a fresh journal (a safe state that claims no
primary) and says what was wrong.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .cluster import CLUSTER_MACHINE
from .cluster import TRIGGER_OF as CLUSTER_TRIGGER_OF
from .engine import Engine, Outcome
from .types import ClusterFacts, ClusterInput, UnitFacts, UnitInput
from .unit import TRIGGER_OF as UNIT_TRIGGER_OF
from .unit import UNIT_MACHINE

BUDGET = 3584
"""Bytes one serialised journal may take; Juju databags are kept well under 4 KiB each."""

VERSION = 1

F = TypeVar("F", UnitFacts, ClusterFacts)
I = TypeVar("I", UnitInput, ClusterInput)  # noqa: E741


class Entry(BaseModel, Generic[I]):
    """One processed input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: I
    before: str
    after: str
    effects: tuple[str, ...] = ()


class Journal(BaseModel, Generic[F, I]):
    """Snapshot + log + current facts of one machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = VERSION
    base: F
    log: tuple[Entry[I], ...] = ()
    current: F


UnitJournal = Journal[UnitFacts, UnitInput]
ClusterJournal = Journal[ClusterFacts, ClusterInput]


def _engine(journal: Journal) -> tuple[Engine, dict]:
    if isinstance(journal.current, UnitFacts):
        return UNIT_MACHINE, UNIT_TRIGGER_OF
    return CLUSTER_MACHINE, CLUSTER_TRIGGER_OF


def fresh_unit() -> UnitJournal:
    """The journal of a unit that has seen nothing."""
    return UnitJournal(base=UnitFacts(), current=UnitFacts())


def fresh_cluster() -> ClusterJournal:
    """The journal of a cluster that has decided nothing."""
    return ClusterJournal(base=ClusterFacts(), current=ClusterFacts())


def step(journal: Journal, input: UnitInput | ClusterInput) -> tuple[Journal, Outcome]:
    """Process ``input`` and return the journal that records it, with the outcome."""
    engine, trigger_of = _engine(journal)
    outcome = engine.run(journal.current, input, trigger_of[input.event])
    if outcome.facts == journal.current and not outcome.effects:
        return journal, outcome
    entry = Entry[type(input)](  # type: ignore[misc]
        input=input,
        before=journal.current.state.value,
        after=outcome.facts.state.value,
        effects=tuple(type(e).__name__ for e in outcome.effects),
    )
    recorded = journal.model_copy(update={"log": (*journal.log, entry), "current": outcome.facts})
    return compact(recorded), outcome


def replay(journal: Journal) -> UnitFacts | ClusterFacts:
    """The facts obtained by running the logged inputs over the base snapshot."""
    engine, trigger_of = _engine(journal)
    facts = journal.base
    for entry in journal.log:
        facts = engine.run(facts, entry.input, trigger_of[entry.input.event]).facts
    return facts


def dump(journal: Journal) -> str:
    """Serialise for a databag (compact JSON, defaults left out)."""
    return journal.model_dump_json(exclude_defaults=True)


def compact(journal: Journal) -> Journal:
    """Fold the oldest entries into the base until the journal fits ``BUDGET``."""
    engine, trigger_of = _engine(journal)
    while journal.log and len(dump(journal)) > BUDGET:
        oldest = journal.log[0]
        base = engine.run(journal.base, oldest.input, trigger_of[oldest.input.event]).facts
        journal = journal.model_copy(update={"base": base, "log": journal.log[1:]})
    return journal


def _load(text: str | None, kind: type[Journal], fresh: Journal) -> tuple[Journal, str | None]:
    if not text:
        return fresh, None
    try:
        journal = kind.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "journal"
        return fresh, f"unreadable machine data ({where}: {first['msg']})"
    if replay(journal) != journal.current:
        # Written by a charm revision whose rules differ: keep what really happened.
        return journal.model_copy(update={"base": journal.current, "log": ()}), None
    return journal, None


def load_unit(text: str | None) -> tuple[UnitJournal, str | None]:
    """Load a unit journal from its databag value; on bad data a fresh one and why."""
    return _load(text, UnitJournal, fresh_unit())


def load_cluster(text: str | None) -> tuple[ClusterJournal, str | None]:
    """Load the cluster journal from the app databag value; on bad data a fresh one and why."""
    return _load(text, ClusterJournal, fresh_cluster())
