"""Password rotation without downtime: the phases, and which password each unit uses.

A rotation replaces the passwords of some internal users (``ROTATABLE``) while
every unit keeps working. The new passwords are written beside the current ones
in the application's secret (``<field>-next``); then, phase by phase, every
member confirms (its ``UnitRotation`` in its unit databag) before the leader
moves on:

1. ``adding``: every unit's redis accepts both passwords (two hashes in the ACL
   file, ``ACL LOAD``); units still *use* the current ones.
2. ``switching``: every unit uses the new ones (the charm's admin connection, the
   replicas' ``masterauth``, the legacy relation's published password); both
   are still accepted.
3. ``removing``: the leader has made the new passwords the current ones in the
   secret; every unit accepts only them. Once all confirm, the rotation is
   ``idle`` again and the old passwords are rejected everywhere.

A unit that has not confirmed blocks the next phase, never the cluster: at every
moment each password in use is accepted by every redis. Pure: the charm reads
the record and the reports from peer data and writes what this returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .records import RotationPhase, RotationRecord, UnitRotation

ROTATABLE = ("admin", "replication", "sentinel", "client")
"""Users whose password rotates: secret fields ``<user>-password``. ``sentinel`` is
both the ``sentinel`` user's on redis and Sentinel's own (its ``default`` user, and
the ``sentinel-pass`` the sentinels send each other)."""

_NEXT: dict[RotationPhase, RotationPhase] = {
    "adding": "switching",
    "switching": "removing",
    "removing": "idle",
}


def begin(record: RotationRecord) -> tuple[RotationRecord, str | None]:
    """Start a rotation, or say why not (one at a time)."""
    if record.phase != "idle":
        return record, f"a rotation is already in progress (phase {record.phase})"
    return RotationRecord(phase="adding", revision=record.revision + 1), None


def advance(
    record: RotationRecord, members: Iterable[str], reports: Mapping[str, UnitRotation]
) -> tuple[RotationRecord, bool]:
    """The record once the members' reports are counted; True when the leader must promote.

    Promote: make the new passwords the current ones in the secret (at the start of
    ``removing``, when every unit uses them).
    """
    if record.phase == "idle":
        return record, False
    members = tuple(sorted(set(members)))
    wanted = UnitRotation(phase=record.phase, revision=record.revision)
    confirmed = tuple(m for m in members if reports.get(m) == wanted)
    if members and confirmed == members:
        after = RotationRecord(phase=_NEXT[record.phase], revision=record.revision)
        return after, record.phase == "switching"
    return record.model_copy(update={"confirmed": confirmed}), False


def in_use(record: RotationRecord) -> tuple[bool, bool]:
    """(use the new password, also accept the other one) in the record's phase."""
    match record.phase:
        case "adding":
            return False, True
        case "switching":
            return True, True
    return False, False
