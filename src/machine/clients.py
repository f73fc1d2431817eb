"""What client relations are told and which client users exist: pure projections.

Clients learn the cluster from the facts the leader records (``ClusterFacts``):
the primary Sentinel named, the members, the generation (Sentinel's master
name). Publishing is a function of those facts, recomputed at the end of every
hook, so that a failover or a switchover recorded in any hook reaches every
client relation in the same hook. Nothing here talks to Juju or redis.

Client users: each request of a ``valkey_client`` / ``redis_client`` relation
gets one ACL user, ``relation-<id>`` (``relation-<id>-<request>`` for further
requests of one relation), with the least privilege its request asks for:
the keys and channels under the requested prefix, data commands only. Every
unit holds every user (redis does not replicate ACLs), so the users live in the
application's ``client-users`` secret as ACL rule text (password *hashes*
only); the password itself reaches the requirer only, in the secret the
relation library shares with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping

from .types import SERVING_CLUSTER_STATES, ClusterFacts

USER_PREFIX = "relation-"
"""Client users are named after their relation; no internal user starts so."""

CLIENT_DATA_COMMANDS = "+@all -@admin -@dangerous +info +role"
"""Data commands: no administration (CONFIG, ACL, REPLICAOF, SHUTDOWN...), nothing
dangerous (KEYS, FLUSHALL, DEBUG...), but INFO and ROLE, which clients use to check
that they talk to the primary."""
READ_ONLY_COMMANDS = "+@read +@connection -@dangerous +info +role"

_PREFIX = re.compile(r"^[A-Za-z0-9_.:{}-]{1,64}$")
_ROLES = {"": CLIENT_DATA_COMMANDS, "default": CLIENT_DATA_COMMANDS}
_ROLES |= {"read-only": READ_ONLY_COMMANDS, "readonly": READ_ONLY_COMMANDS}


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Where clients find the cluster, as stable host names."""

    primary_host: str | None
    """The primary's host (None while no primary is established)."""
    port: int
    replicas: tuple[str, ...]
    """``host:port`` of every other member (read-only)."""
    sentinels: tuple[str, ...]
    """``host:port`` of every member's sentinel."""
    master_name: str | None
    """The name the sentinels monitor the primary under (changes with the generation)."""

    @property
    def primary(self) -> str | None:
        """``host:port`` of the primary."""
        return None if self.primary_host is None else f"{self.primary_host}:{self.port}"


def endpoints(
    cluster: ClusterFacts,
    host_of: Callable[[str], str],
    master_name: Callable[[int], str],
    *,
    port: int,
    sentinel_port: int,
) -> Endpoints:
    """The endpoints the cluster facts give: the recorded primary, the others, the sentinels."""
    serving = cluster.state in SERVING_CLUSTER_STATES and cluster.primary is not None
    primary = cluster.primary if serving else None
    members = sorted(set(cluster.members) | ({primary} if primary else set()), key=_number)
    return Endpoints(
        primary_host=None if primary is None else host_of(primary),
        port=port,
        replicas=tuple(f"{host_of(m)}:{port}" for m in members if m != primary),
        sentinels=tuple(f"{host_of(m)}:{sentinel_port}" for m in members),
        master_name=master_name(cluster.generation) if cluster.generation else None,
    )


def legacy_app_data(where: Endpoints) -> dict[str, str]:
    """The application data of the legacy ``redis`` interface: ``leader-host`` is the primary.

    Empty while no primary is established: a requirer keeps what it had rather than
    being pointed at a unit that may not accept writes.
    """
    if where.primary_host is None:
        return {}
    return {"leader-host": where.primary_host, "port": str(where.port)}


def legacy_unit_data(own_host: str, port: int) -> dict[str, str]:
    """The unit data of the legacy ``redis`` interface: this unit's stable host and port."""
    return {"hostname": own_host, "port": str(port)}


def user_name(relation_id: int, index: int) -> str:
    """The ACL user of request ``index`` of a client relation."""
    suffix = "" if index == 0 else f"-{index}"
    return f"{USER_PREFIX}{relation_id}{suffix}"


def relation_of(user: str) -> int | None:
    """The relation id a client user belongs to (None for other users)."""
    if not user.startswith(USER_PREFIX):
        return None
    number = user[len(USER_PREFIX) :].split("-", 1)[0]
    return int(number) if number.isdigit() else None


def client_rules(resource: str | None, roles: str | None) -> tuple[str | None, str | None]:
    """The ACL rules (without password) for what a requirer asked, or why it is refused.

    ``resource`` is a key prefix: ``myapp:`` gives ``~myapp:*`` and channels
    ``&myapp:*``; empty or ``*`` gives every key. ``roles`` (``extra-user-roles``)
    may be empty, ``default`` or ``read-only``; an admin role is never granted.

    Returns:
        (rules, None), or (None, the reason to tell the operator).
    """
    prefix = (resource or "").strip()
    if prefix in ("", "*"):
        keys = "~* &*"
    elif _PREFIX.match(prefix):
        keys = f"~{prefix}* &{prefix}*"
    else:
        return None, (
            "resource must be a key prefix of at most 64 letters, digits or _.:{}-"
            " (or * for every key)"
        )
    wanted = (roles or "").strip().lower()
    if wanted not in _ROLES:
        return None, f"extra-user-roles {wanted[:40]!r} is not one of default, read-only"
    return f"resetchannels {keys} {_ROLES[wanted]}", None


@dataclasses.dataclass(frozen=True)
class UserPlan:
    """What to do to the client users so that they match the requests."""

    create: tuple[str, ...]
    remove: tuple[str, ...]
    keep: tuple[str, ...]


def plan_users(wanted: Iterable[str], existing: Iterable[str]) -> UserPlan:
    """Create the wanted users that do not exist, remove the existing ones nobody wants.

    A user is never re-created while it exists (its password stays), and only
    client users (``relation-*``) are ever removed.
    """
    wanted_set, existing_set = set(wanted), {u for u in existing if relation_of(u) is not None}
    return UserPlan(
        create=tuple(sorted(wanted_set - existing_set)),
        remove=tuple(sorted(existing_set - wanted_set)),
        keep=tuple(sorted(wanted_set & existing_set)),
    )


def users_digest(users: Mapping[str, Mapping[str, str]]) -> str:
    """The digest of a set of client users: the same on every unit that holds the same users."""
    return fingerprint(sorted((name, dict(user)) for name, user in users.items()))


def credentials_ready(
    digest: str | None,
    applied: Mapping[str, str | None],
    serving: Iterable[str],
    primary: str | None,
) -> bool:
    """Whether client credentials may be handed out: every serving member holds the users.

    A requirer that gets a password connects at once, to the primary: the user must
    exist there and on every replica that serves (redis does not replicate ACLs).
    A member that is down loads the ACL file when it starts, so it does not hold
    the others back; the primary always counts.
    """
    if digest is None:
        return False
    needed = set(serving) | ({primary} if primary else set())
    return bool(needed) and all(applied.get(member) == digest for member in needed)


def fingerprint(*parts: object) -> str:
    """A short digest of what a publication depends on: unchanged means nothing to do."""
    text = json.dumps(parts, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def _number(unit: str) -> int:
    return int(unit.rsplit("/", 1)[1])
