"""Persistence of the leader's small records beside the journals: client users and rotation.

Sibling of ``journal``: every peer-data value the charm writes besides the two
journals is one of these models, serialised here and validated when loaded
(corrupt data gives a fresh record and says why, never an exception). They
hold no secret: secret ids, digests, notes and per-unit progress only, and stay
far below the 4 KiB a databag value should keep under.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .types import UnitName


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClientsRecord(_Record):
    """What the leader last did for the client relations (peer application data)."""

    users_secret: str | None = Field(default=None, max_length=200)
    """The id of the application secret holding every client user's ACL rules."""
    users_digest: str | None = Field(default=None, max_length=64)
    """A digest of those rules: a change wakes every unit (peer-relation-changed)."""
    published: str | None = Field(default=None, max_length=64)
    """The fingerprint of the last publication; unchanged inputs publish nothing."""
    note: str | None = Field(default=None, max_length=300)
    """Why a client relation's request was refused, for the status."""


RotationPhase = Literal["idle", "adding", "switching", "removing"]


class RotationRecord(_Record):
    """Progress of an internal password rotation (peer application data).

    ``revision`` is the revision of the passwords secret being rolled out;
    ``confirmed`` lists the units that reported the phase done.
    """

    phase: RotationPhase = "idle"
    revision: int = Field(default=0, ge=0)
    """The secret revision holding the passwords in use (and, while rotating, the new ones)."""
    confirmed: tuple[UnitName, ...] = ()


class UnitRotation(_Record):
    """What one unit reports of a rotation (its unit databag)."""

    phase: RotationPhase = "idle"
    revision: int = Field(default=0, ge=0)


R = TypeVar("R", ClientsRecord, RotationRecord, UnitRotation)


def load(kind: type[R], text: str | None) -> tuple[R, str | None]:
    """Load a record from its databag value; on bad data a fresh record and why."""
    if not text:
        return kind(), None
    try:
        return kind.model_validate_json(text), None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        return kind(), f"unreadable {kind.__name__} ({where}: {first['msg']})"


def dump(record: _Record) -> str:
    """Serialise for a databag (compact JSON, defaults left out)."""
    return record.model_dump_json(exclude_defaults=True)
