"""The cluster machine: what the leader decides for the whole application.

Only the leader steps it, on every event it sees, with the facts every member
published in its unit databag. The leader decides four things and nothing
else: the one bootstrap of the cluster's life, the cold-start election of the
most advanced member when no primary exists anywhere, the order in which the
remaining sentinels are reset after units leave, and whether an operator's
switchover request may go ahead. Everything else it *records* from Sentinel:
after bootstrap, Sentinel is the truth about who is primary.

Three triggers: ``observe`` (every event), ``member_departed`` (a peer left;
``subject`` names it) and ``switchover_requested`` (the operator's action;
``subject`` names the target, or None for the best replica).
"""

from __future__ import annotations

from .engine import Engine, Step, go, noop
from .types import (
    HANDOVER_COMPLETED,
    SERVING_CLUSTER_STATES,
    AnnouncePrimary,
    ClusterFacts,
    ClusterInput,
    ClusterState,
    Event,
    MemberReport,
    RefuseRequest,
    RequestSwitchover,
    Role,
    UnitName,
    UnitState,
)

OBSERVE = "observe"
MEMBER_DEPARTED = "member_departed"
SWITCHOVER_REQUESTED = "switchover_requested"

TRIGGER_OF: dict[Event, str] = {
    event: {
        Event.PEER_RELATION_DEPARTED: MEMBER_DEPARTED,
        Event.SWITCHOVER_ACTION: SWITCHOVER_REQUESTED,
    }.get(event, OBSERVE)
    for event in Event
}
"""Which trigger each event fires on the cluster machine."""

ClusterStep = Step[ClusterFacts, ClusterInput]

PRIMARY_STATES = frozenset({UnitState.PRIMARY, UnitState.STARTING_PRIMARY, UnitState.HANDING_OVER})


def majority(n: int) -> int:
    """The smallest majority of ``n`` voters (the sentinel quorum for ``n`` sentinels)."""
    return n // 2 + 1


def unit_number(unit: str) -> int:
    """The number after the slash of a unit name."""
    return int(unit.rsplit("/", 1)[1])


# ------------------------------------------------------------------ helpers


def _report(s: ClusterStep, unit: str | None) -> MemberReport | None:
    return next((m for m in s.input.members if m.unit == unit), None)


def sentinel_claims(s: ClusterStep) -> tuple[dict[UnitName, int], int]:
    """Who the sentinels of the newest generation name at their highest epoch, and how many.

    Returns (primary -> number of sentinels naming it, that epoch); empty when no
    sentinel of the newest generation names anyone.
    """
    named = [m for m in s.input.members if m.sentinel_primary and m.sentinel_up]
    if not named:
        return {}, 0
    newest = max(max(m.sentinel_generation for m in named), s.facts.generation)
    views = [
        (m.sentinel_epoch, m.sentinel_primary) for m in named if m.sentinel_generation == newest
    ]
    if not views:
        return {}, 0
    top = max(epoch for epoch, _ in views)
    claims: dict[UnitName, int] = {}
    for epoch, primary in views:
        if epoch == top and primary is not None:
            claims[primary] = claims.get(primary, 0) + 1
    return claims, top


def sentinel_view(s: ClusterStep) -> tuple[UnitName, int] | None:
    """The primary the sentinels name at the highest epoch, if they agree on it."""
    claims, top = sentinel_claims(s)
    if len(claims) != 1:
        return None
    return next(iter(claims)), top


def most_advanced(members: tuple[MemberReport, ...]) -> MemberReport:
    """The member with the highest offset, then the most keys, then the lowest number."""
    return max(members, key=lambda m: (m.master_repl_offset, m.keys, -unit_number(m.unit)))


def switchover_candidate(s: ClusterStep) -> MemberReport | None:
    """The replica a switchover would go to: the named one, or the most advanced synced one."""
    synced = tuple(
        m
        for m in s.input.members
        if m.state is UnitState.REPLICA and m.following == s.facts.primary and m.redis_up
    )
    if s.input.subject is not None:
        return next((m for m in synced if m.unit == s.input.subject), None)
    return most_advanced(synced) if synced else None


# ------------------------------------------------------------------- guards


def sentinel_knows_primary(s: ClusterStep) -> bool:
    """Some sentinel names a primary."""
    return sentinel_view(s) is not None


def sentinel_names_serving_primary(s: ClusterStep) -> bool:
    """The sentinels name a primary whose redis reports master: adopt it, Sentinel is the truth."""
    view = sentinel_view(s)
    return view is not None and _is_serving(s, view[0])


def members_have_data(s: ClusterStep) -> bool:
    """Some member has data or has run redis before: never bootstrap over it."""
    return any(m.ever_started or m.keys or m.master_repl_offset for m in s.input.members)


def can_bootstrap(s: ClusterStep) -> bool:
    """Every member reported, none ever started or has data, no sentinel knows a primary.

    A member that has not reported yet might hold data: the bootstrap waits for it.
    """
    return (
        s.facts.bootstrapped is None
        and bool(s.input.members)
        and all(m.redis_up for m in s.input.members)
        and not members_have_data(s)
        and not sentinel_knows_primary(s)
    )


def elected_primary_serving(s: ClusterStep) -> bool:
    """The unit elected to start as primary reports itself primary and its sentinel agrees."""
    report = _report(s, s.facts.start_as_primary)
    return (
        report is not None
        and report.state is UnitState.PRIMARY
        and report.sentinel_primary == report.unit
    )


def elected_primary_gone(s: ClusterStep) -> bool:
    """The unit elected to start as primary left before it served."""
    elected = s.facts.start_as_primary
    return elected is not None and elected not in s.facts.members


def everyone_waiting(s: ClusterStep) -> bool:
    """Every member is up, none is or claims to be primary, none replicates, no sentinel knows one.

    Their published offsets then stand still, so the election compares current values.
    """
    return (
        bool(s.input.members)
        and all(m.redis_up for m in s.input.members)
        and not any(m.role is Role.MASTER or m.state in PRIMARY_STATES for m in s.input.members)
        and not any(m.master_link_up for m in s.input.members)
        and not any(
            m.sentinel_primary and _is_serving(s, m.sentinel_primary) for m in s.input.members
        )
    )


def election_due(s: ClusterStep) -> bool:
    """Cold start: everyone is waiting and nobody has been elected yet."""
    return s.facts.start_as_primary is None and everyone_waiting(s)


def sentinel_moved_primary(s: ClusterStep) -> bool:
    """The sentinels name a different primary at a newer epoch: a failover happened."""
    view = sentinel_view(s)
    return (
        view is not None
        and view[0] != s.facts.primary
        and view[1] > s.facts.sentinel_epoch
        and _is_serving(s, view[0])
    )


def sentinels_split(s: ClusterStep) -> bool:
    """The sentinels name different primaries at the same epoch, and each of them serves.

    Sentinel never resolves this by itself: two groups of sentinels that each
    failed over while they could not see each other (a partition during a
    membership change) keep their own primary, because a sentinel adopts
    another's configuration only at a higher epoch. Both primaries run.
    """
    claims, _ = sentinel_claims(s)
    return len(claims) > 1 and all(_is_serving(s, primary) for primary in claims)


def sentinel_epoch_advanced(s: ClusterStep) -> bool:
    """The sentinels name the same primary at a newer epoch."""
    view = sentinel_view(s)
    return view is not None and view[0] == s.facts.primary and view[1] > s.facts.sentinel_epoch


def ha_possible(s: ClusterStep) -> bool:
    """Three or more members and a majority of their sentinels up: failover can happen."""
    n = len(s.facts.members)
    return n >= 3 and _sentinels_up(s) >= majority(n)


def sentinel_minority(s: ClusterStep) -> bool:
    """Three or more members but only a minority of sentinels up: failover is impossible."""
    n = len(s.facts.members)
    return n >= 3 and _sentinels_up(s) < majority(n)


def fewer_than_three(s: ClusterStep) -> bool:
    """One or two members: it works, but one loss stops it. Not HA."""
    return len(s.facts.members) < 3


def departed_is_gone(s: ClusterStep) -> bool:
    """The departed unit no longer publishes: reset it out of the sentinels."""
    return s.input.subject is not None and s.input.subject not in s.facts.members


def switchover_allowed(s: ClusterStep) -> bool:
    """A synced replica can take over and the sentinels can authorise the failover."""
    return switchover_candidate(s) is not None and s.facts.primary is not None


def switchover_reached_target(s: ClusterStep) -> bool:
    """The sentinels now name the switchover target."""
    view = sentinel_view(s)
    return view is not None and view[0] == s.facts.switchover_target


def switchover_failed(s: ClusterStep) -> bool:
    """The primary reported that it could not hand over."""
    report = _report(s, s.facts.primary)
    return report is not None and report.handover not in (None, HANDOVER_COMPLETED)


def departures_pending(s: ClusterStep) -> bool:
    """Units left while no primary was established: their sentinels must be forgotten now."""
    return bool(s.facts.departed)


def reset_turn_done(s: ClusterStep) -> bool:
    """The unit at the head of the reset queue is gone or reported its verified reset."""
    if not s.facts.reset_queue:
        return False
    head = s.facts.reset_queue[0]
    report = _report(s, head)
    return head not in s.facts.members or (
        report is not None and report.reset_wave == s.facts.reset_wave and report.reset_verified
    )


def reset_complete(s: ClusterStep) -> bool:
    """Every remaining sentinel was reset and sees exactly the others."""
    return not s.facts.reset_queue


def _is_serving(s: ClusterStep, unit: str) -> bool:
    """``unit``'s redis is a master: by its own report, or as a sentinel naming it saw it.

    A member whose sentinel names ``unit`` asks that redis directly, so the leader
    knows a promotion from its own hook, before the promoted unit has published.
    """
    report = _report(s, unit)
    if report is None:
        return False
    return report.role is Role.MASTER or any(
        m.sentinel_primary == unit and m.sentinel_primary_is_master for m in s.input.members
    )


def _sentinels_up(s: ClusterStep) -> int:
    return sum(1 for m in s.input.members if m.sentinel_up)


# ------------------------------------------------------------------ actions


def next_epoch(s: ClusterStep) -> int:
    """The epoch of a new primary: above every epoch recorded here or by any member.

    Members remember the epoch they follow, so epochs keep rising even when
    the application databag was lost or unreadable.
    """
    return max((s.facts.epoch, *(m.epoch for m in s.input.members))) + 1


def next_generation(s: ClusterStep) -> int:
    """The sentinel generation of a bootstrap or an election: above any a member has seen."""
    return max((s.facts.generation, *(m.sentinel_generation for m in s.input.members))) + 1


def record_members(s: ClusterStep) -> None:
    """Fold the membership into the facts (before any row): members and sentinel quorum.

    A member that is gone is remembered as departed even if no departed event said so
    (a new leader, a lost event): its sentinel must be reset out. If a reset wave is
    under way, it starts again, so that sentinels already reset forget this one too.
    """
    members = tuple(sorted({m.unit for m in s.input.members} | {s.input.leader}, key=unit_number))
    gone = set(s.facts.members) - set(members)
    changes: dict[str, object] = {"members": members, "quorum": majority(len(members))}
    if gone:
        changes["departed"] = tuple(sorted(set(s.facts.departed) | gone, key=unit_number))
        if s.facts.state is ClusterState.RESETTING_SENTINELS:
            changes.update(reset_queue=members, reset_wave=s.facts.reset_wave + 1)
    s.update(**changes)


def bootstrap(s: ClusterStep) -> None:
    """Choose the one bootstrap primary of this cluster's life: the lowest-numbered member."""
    ready = [m.unit for m in s.input.members if m.redis_up]
    chosen = min(ready, key=unit_number)
    epoch = next_epoch(s)
    s.update(
        bootstrapped=chosen,
        primary=chosen,
        start_as_primary=chosen,
        epoch=epoch,
        generation=next_generation(s),
        note=None,
    )
    s.emit(AnnouncePrimary(primary=chosen, epoch=epoch))


def withdraw_primary(s: ClusterStep) -> None:
    """No primary exists anywhere: claim none until the cold-start election."""
    s.update(primary=None, start_as_primary=None, sentinel_epoch=0, switchover_target=None)


def elect_most_advanced(s: ClusterStep) -> None:
    """Cold start: the member with the highest replication offset becomes primary."""
    chosen = most_advanced(s.input.members).unit
    epoch = next_epoch(s)
    s.update(
        primary=chosen,
        start_as_primary=chosen,
        epoch=epoch,
        generation=next_generation(s),
        sentinel_epoch=0,
    )
    s.emit(AnnouncePrimary(primary=chosen, epoch=epoch))


def adopt_sentinel_primary(s: ClusterStep) -> None:
    """Record the primary Sentinel names (it is the truth once a primary exists)."""
    view = sentinel_view(s)
    assert view is not None  # guarded
    primary, sentinel_epoch = view
    epoch = next_epoch(s)
    s.update(
        primary=primary,
        start_as_primary=None,
        epoch=epoch,
        generation=max((s.facts.generation, *(m.sentinel_generation for m in s.input.members))),
        sentinel_epoch=sentinel_epoch,
        bootstrapped=s.facts.bootstrapped or primary,
    )
    s.emit(AnnouncePrimary(primary=primary, epoch=epoch))


def reunite_sentinels(s: ClusterStep) -> None:
    """Split sentinels: keep the primary most of them name, re-monitor it everywhere.

    The kept primary is the serving one named by the most sentinels, then the one
    with the most replicas following it, then the most advanced. A new sentinel
    generation makes every sentinel monitor it afresh (a new master name, so no
    old epoch can win), and the new cluster epoch turns the other primary into
    its replica: the writes it took while split are lost, which
    ``min-replicas-to-write`` keeps to those of an isolated primary that still
    had replicas.
    """
    claims, _ = sentinel_claims(s)

    def strength(primary: UnitName) -> tuple[int, int, int, int, int]:
        report = _report(s, primary)
        assert report is not None  # _is_serving
        followers = sum(1 for m in s.input.members if m.following == primary and m.unit != primary)
        return (
            claims[primary],
            followers,
            report.master_repl_offset,
            report.keys,
            -unit_number(primary),
        )

    chosen = max((p for p in claims if _is_serving(s, p)), key=strength)
    epoch = next_epoch(s)
    s.update(
        primary=chosen,
        start_as_primary=None,
        epoch=epoch,
        generation=next_generation(s),
        sentinel_epoch=0,
        note=f"sentinels named {len(claims)} primaries; kept {chosen}",
    )
    s.emit(AnnouncePrimary(primary=chosen, epoch=epoch))


def record_failover(s: ClusterStep) -> None:
    """Sentinel moved the primary: record it at a new cluster epoch and announce it."""
    adopt_sentinel_primary(s)


def record_sentinel_epoch(s: ClusterStep) -> None:
    """Keep the newest Sentinel epoch for the same primary."""
    view = sentinel_view(s)
    assert view is not None  # guarded
    s.update(sentinel_epoch=view[1])


def serve(s: ClusterStep) -> None:
    """The elected primary serves: from now on Sentinel is the truth."""
    s.update(start_as_primary=None)


def start_reset_wave(s: ClusterStep) -> None:
    """A unit left: reset every remaining sentinel, one at a time, lowest number first.

    Only a subject that is no longer a member left: the same row also starts the
    wave for departures remembered earlier, on an event about a present peer.
    """
    subject = s.input.subject
    left = {subject} if subject is not None and subject not in s.facts.members else set()
    departed = tuple(sorted(set(s.facts.departed) | left, key=unit_number))
    s.update(
        departed=departed,
        reset_queue=s.facts.members,
        reset_wave=s.facts.reset_wave + 1,
        switchover_target=None,
    )


def remember_departure(s: ClusterStep) -> None:
    """A unit left before a primary was established: reset it out once one is."""
    assert s.input.subject is not None  # guarded by departed_is_gone
    s.update(departed=tuple(sorted({*s.facts.departed, s.input.subject}, key=unit_number)))


def pop_reset_turn(s: ClusterStep) -> None:
    """The head of the queue is reset and verified (or gone): next one."""
    s.update(reset_queue=s.facts.reset_queue[1:])


def finish_reset_wave(s: ClusterStep) -> None:
    """All remaining sentinels were reset: nothing departed is remembered."""
    s.update(departed=())


def request_switchover(s: ClusterStep) -> None:
    """Ask the primary to hand over to the chosen replica."""
    candidate = switchover_candidate(s)
    assert candidate is not None  # guarded by switchover_allowed
    s.update(switchover_target=candidate.unit, note=None)
    s.emit(RequestSwitchover(target=candidate.unit))


def refuse_switchover(s: ClusterStep) -> None:
    """Say why a switchover cannot happen now."""
    if s.facts.state not in (ClusterState.HA, ClusterState.NOT_HA):
        reason = f"cluster is {s.facts.state.value}; switchover needs a settled cluster"
    elif s.input.subject is not None and s.input.subject == s.facts.primary:
        reason = f"{s.input.subject} is already the primary"
    elif s.input.subject is not None:
        reason = f"{s.input.subject} is not a synced replica of {s.facts.primary}"
    else:
        reason = f"no synced replica of {s.facts.primary} to switch over to"
    s.update(note=reason)
    s.emit(RefuseRequest(reason=reason))


def close_switchover(s: ClusterStep) -> None:
    """The switchover reached its target."""
    s.update(switchover_target=None, note=None)


def abandon_switchover(s: ClusterStep) -> None:
    """The primary could not hand over: say why, close the request."""
    report = _report(s, s.facts.primary)
    reason = report.handover if report is not None else None
    s.update(switchover_target=None, note=f"switchover failed: {reason}")


# -------------------------------------------------------------------- table

C = ClusterState
SERVING = tuple(sorted(SERVING_CLUSTER_STATES))
SETTLED = (C.NOT_HA, C.HA, C.NO_QUORUM)

TABLE = (
    # --- forming: the only state in which a bootstrap can happen ---------------------------
    go(OBSERVE, C.FORMING, C.NOT_HA, sentinel_names_serving_primary, adopt_sentinel_primary),
    go(OBSERVE, C.FORMING, C.RECOVERING, members_have_data, withdraw_primary),
    go(OBSERVE, C.FORMING, C.BOOTSTRAPPING, can_bootstrap, bootstrap),
    noop(OBSERVE, C.FORMING, "no member is up yet"),
    # --- bootstrapping: waiting for the chosen unit to serve -------------------------------
    go(OBSERVE, C.BOOTSTRAPPING, C.NOT_HA, elected_primary_serving, serve),
    go(OBSERVE, C.BOOTSTRAPPING, C.NOT_HA, sentinel_moved_primary, record_failover),
    go(OBSERVE, C.BOOTSTRAPPING, C.RECOVERING, elected_primary_gone, withdraw_primary),
    noop(OBSERVE, C.BOOTSTRAPPING, "waiting for the bootstrap primary to serve"),
    # --- recovering: a cold start elects the most advanced member --------------------------
    go(OBSERVE, C.RECOVERING, C.NOT_HA, sentinel_names_serving_primary, adopt_sentinel_primary),
    go(OBSERVE, C.RECOVERING, C.NOT_HA, elected_primary_serving, serve),
    go(OBSERVE, C.RECOVERING, C.NOT_HA, sentinel_moved_primary, record_failover),
    go(OBSERVE, C.RECOVERING, None, elected_primary_gone, withdraw_primary),
    go(OBSERVE, C.RECOVERING, None, election_due, elect_most_advanced),
    noop(OBSERVE, C.RECOVERING, "waiting for every member to report its offset"),
    # --- serving: Sentinel is the truth ----------------------------------------------------
    go(OBSERVE, SERVING, None, sentinel_moved_primary, record_failover),
    go(OBSERVE, SERVING, None, sentinels_split, reunite_sentinels),
    go(OBSERVE, SERVING, None, sentinel_epoch_advanced, record_sentinel_epoch),
    go(OBSERVE, SERVING, C.RECOVERING, everyone_waiting, withdraw_primary),
    go(OBSERVE, C.SWITCHING_OVER, C.NOT_HA, switchover_reached_target, close_switchover),
    go(OBSERVE, C.SWITCHING_OVER, C.NOT_HA, switchover_failed, abandon_switchover),
    noop(OBSERVE, C.SWITCHING_OVER, "waiting for Sentinel to name the target"),
    go(OBSERVE, C.RESETTING_SENTINELS, None, reset_turn_done, pop_reset_turn),
    go(OBSERVE, C.RESETTING_SENTINELS, C.NOT_HA, reset_complete, finish_reset_wave),
    noop(OBSERVE, C.RESETTING_SENTINELS, "waiting for the sentinel whose turn it is"),
    go(OBSERVE, SETTLED, C.RESETTING_SENTINELS, departures_pending, start_reset_wave),
    go(OBSERVE, (C.HA, C.NO_QUORUM), C.NOT_HA, fewer_than_three),
    go(OBSERVE, (C.NOT_HA, C.NO_QUORUM), C.HA, ha_possible),
    go(OBSERVE, (C.NOT_HA, C.HA), C.NO_QUORUM, sentinel_minority),
    noop(OBSERVE, SETTLED, "membership and sentinels unchanged"),
    # --- a member left ---------------------------------------------------------------------
    go(MEMBER_DEPARTED, SERVING, C.RESETTING_SENTINELS, departed_is_gone, start_reset_wave),
    noop(MEMBER_DEPARTED, SERVING, "not a member the sentinels know"),
    go(MEMBER_DEPARTED, (C.FORMING, C.BOOTSTRAPPING, C.RECOVERING), None, departed_is_gone, remember_departure),
    noop(MEMBER_DEPARTED, (C.FORMING, C.BOOTSTRAPPING, C.RECOVERING), "not a unit that left"),
    # --- the operator asks for a switchover ------------------------------------------------
    go(SWITCHOVER_REQUESTED, (C.HA, C.NOT_HA), C.SWITCHING_OVER, switchover_allowed, request_switchover),
    go(SWITCHOVER_REQUESTED, tuple(C), None, None, refuse_switchover),
)  # fmt: skip

CLUSTER_MACHINE: Engine[ClusterFacts, ClusterInput] = Engine(
    "cluster",
    ClusterState,
    (OBSERVE, MEMBER_DEPARTED, SWITCHOVER_REQUESTED),
    TABLE,
    record_members,
    then={MEMBER_DEPARTED: OBSERVE, SWITCHOVER_REQUESTED: OBSERVE},
)
