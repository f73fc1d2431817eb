"""The stepping engine shared by the unit and cluster machines.

A machine is declared as a table of :class:`Rule` rows (trigger, source states,
destination, guard, actions) and handed to :class:`Engine`, which compiles it
into a ``transitions.Machine``. For one trigger and one state the rows are
tried top to bottom; the first whose guard holds fires. Every (state, trigger)
pair must end with an unguarded row (a transition or an explicit no-op); the
engine refuses to build a table that leaves a pair unhandled, so stepping can
never raise "invalid trigger".

An input is processed run-to-completion: rows fire one after another until
an explicit no-op fires (after the first row, a one-shot trigger such as
"member departed" continues as the machine's ``then`` trigger says, so the
same request is not applied twice), or a row emits effects (those must be executed and
observed before the machine can go on), or ``MAX_MICROSTEPS`` is reached (a
table bug that the property tests look for).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from transitions import Machine

from .types import Effect

F = TypeVar("F")
I = TypeVar("I")  # noqa: E741 - the conventional name for "input"

MAX_MICROSTEPS = 8


class Step(Generic[F, I]):
    """The mutable context of one input being processed: guards read it, actions write it."""

    def __init__(self, facts: F, input: I) -> None:  # noqa: D107
        self.facts = facts
        self.input = input
        self.effects: list[Effect] = []
        self.fired: Rule | None = None

    def update(self, **changes: Any) -> None:
        """Replace fields of the facts (they are immutable models)."""
        self.facts = self.facts.model_copy(update=changes)  # type: ignore[attr-defined]

    def emit(self, *effects: Effect) -> None:
        """Add effects for the workload to execute."""
        self.effects.extend(effects)


Guard = Callable[[Step[Any, Any]], bool]
Action = Callable[[Step[Any, Any]], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of a machine's table."""

    trigger: str
    source: tuple[str, ...]
    dest: str | None
    """The next state, or None to stay (an internal transition)."""
    guard: Guard | None = None
    actions: tuple[Action, ...] = ()
    noop: str | None = None
    """For an explicit no-op, why nothing happens."""


def _states(source: enum.Enum | Iterable[enum.Enum]) -> tuple[str, ...]:
    if isinstance(source, enum.Enum):
        return (source.value,)
    return tuple(s.value for s in source)


def go(
    trigger: str,
    source: enum.Enum | Iterable[enum.Enum],
    dest: enum.Enum | None,
    guard: Guard | None = None,
    *actions: Action,
) -> Rule:
    """A transition to ``dest`` (None: stay) when ``guard`` holds, running ``actions``."""
    return Rule(trigger, _states(source), None if dest is None else dest.value, guard, actions)


def noop(trigger: str, source: enum.Enum | Iterable[enum.Enum], why: str) -> Rule:
    """An explicit no-op: in these states this trigger changes nothing, because ``why``."""
    return Rule(trigger, _states(source), None, None, (), why)


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[F]):
    """What one input did: the new facts, the effects to execute and the states passed."""

    facts: F
    effects: tuple[Effect, ...]
    path: tuple[str, ...]
    """The states after each micro-step that changed something."""


class Engine(Generic[F, I]):
    """A compiled machine table."""

    def __init__(  # noqa: D107
        self,
        name: str,
        states: type[enum.Enum],
        triggers: Sequence[str],
        rules: Sequence[Rule],
        prepare: Callable[[Step[F, I]], None],
        then: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.states = tuple(s.value for s in states)
        self.state_type = states
        self.triggers = tuple(triggers)
        self.rules = tuple(rules)
        self.prepare = prepare
        self.then = dict(then or {})
        self._check_total()
        self._machine = Machine(
            model=None,
            states=list(self.states),
            transitions=[self._compile(rule) for rule in self.rules],
            initial=self.states[0],
            auto_transitions=False,
            send_event=False,
        )
        self._cursor = _Cursor()
        self._machine.add_model(self._cursor)

    def _check_total(self) -> None:
        for rule in self.rules:
            unknown = set(rule.source) - set(self.states)
            if rule.trigger not in self.triggers or unknown:
                raise ValueError(f"{self.name}: bad row {rule}")
        for state in self.states:
            for trigger in self.triggers:
                rows = self.rows(state, trigger)
                if not rows or rows[-1].guard is not None:
                    raise ValueError(
                        f"{self.name}: ({state}, {trigger}) must end with an unguarded row"
                    )

    def rows(self, state: str, trigger: str) -> list[Rule]:
        """The rows tried, in order, for ``trigger`` in ``state``."""
        return [r for r in self.rules if r.trigger == trigger and state in r.source]

    @staticmethod
    def _compile(rule: Rule) -> dict[str, Any]:
        return {
            "trigger": rule.trigger,
            "source": list(rule.source),
            "dest": rule.dest,
            "conditions": [rule.guard] if rule.guard else [],
            "after": [functools.partial(_mark_fired, rule), *rule.actions],
        }

    def run(self, facts: F, input: I, trigger: str) -> Outcome[F]:
        """Process one input run-to-completion. Pure: ``facts`` is not modified."""
        step: Step[F, I] = Step(facts, input)
        self.prepare(step)
        path: list[str] = []
        for _ in range(MAX_MICROSTEPS):
            step.fired = None
            emitted = len(step.effects)
            self._machine.set_state(step.facts.state.value, model=self._cursor)  # type: ignore[attr-defined]
            self._cursor.trigger(trigger, step)  # type: ignore[attr-defined]
            rule = step.fired
            if rule is None or rule.noop is not None:
                break
            if rule.dest is not None:
                step.update(state=self.state_type(rule.dest))
            path.append(step.facts.state.value)  # type: ignore[attr-defined]
            if len(step.effects) > emitted:
                break
            trigger = self.then.get(trigger, trigger)
        return Outcome(step.facts, tuple(step.effects), tuple(path))


class _Cursor:
    """The model ``transitions`` moves; it is set to the step's state before each micro-step.

    Guards and actions receive the Step, never the cursor: the cursor carries no data.
    """


def _mark_fired(rule: Rule, step: Step[Any, Any]) -> None:
    step.fired = rule
