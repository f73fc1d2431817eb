"""Workload config: the charm's validated options, rendered as redis.conf and sentinel.conf.

This module owns the text of every file redis-server and redis-sentinel read, and
nothing else: pure functions from a validated ``CharmConfig`` (plus the unit's
identity and its place in the cluster) to strings. No I/O; the caller writes the
files and starts the services.

Secrets are kept out of the rendered main text, which may be logged or shown:

- ``render_redis_conf`` ends with ``include <secrets_path>``; the caller pushes
  ``render_redis_secrets`` there with mode 0600 (``masteruser``/``masterauth``).
- Users (internal and client) are in the ``aclfile`` (``render_acl_file``), as
  password hashes only (``#<sha256>``), reloaded at run time with ``ACL LOAD``.
  Measured on 7.0.15: ``CONFIG REWRITE`` writes the ``aclfile`` path, never the
  users, into redis.conf (it still copies ``masterauth`` in), and redis refuses
  ``user`` directives in its config beside an ``aclfile``.
- Sentinel cannot work that way. Measured on redis-sentinel 7.0.15: it accepts
  ``include``, but it rewrites its own config file on every start and on every
  change (``SENTINEL SET``, a failover, a new replica), and the rewrite copies the
  included directives into the main file (``requirepass``, ``sentinel
  auth-pass``, the ``user default`` hash) after the ``include`` line. On the next
  start those copies win, so a password rotated in the included file is silently
  ignored. So there is no include: the caller writes ``sentinel_file_text(conf,
  secrets)`` once, and afterwards the file belongs to sentinel (it must be
  writable: sentinel refuses to start otherwise). The rendered sentinel text
  never holds a password; the file on disk always does, and a rotation must go
  through sentinel at run time (``SENTINEL SET <master> auth-pass``, ``SENTINEL
  CONFIG SET sentinel-pass``, ``ACL SETUSER``, then ``SENTINEL FLUSHCONFIG``),
  or, while sentinel is stopped, through ``rewrite_sentinel_auth``.
- Sentinel's own users are ``user`` lines in its file (hashes only), never
  ``requirepass``. Measured on 7.0.15: sentinel writes its run-time users back
  as ``user`` lines on every rewrite (``SENTINEL FLUSHCONFIG`` forces one), and
  at start a ``user default`` line wins over a ``requirepass`` line; but it never
  updates or removes a ``requirepass`` line, which would keep a rotated-out
  password in the file (``rewrite_sentinel_auth`` drops it).
- Sentinel 7.0.15 writes ``sentinel auth-pass`` and ``sentinel sentinel-pass``
  back *unquoted* when it rewrites its file, so a password with a space, a quote
  or a backslash corrupts the file and sentinel cannot start again ("Unbalanced
  quotes"). ``render_sentinel_secrets`` refuses such passwords; the redis admin
  password is sentinel's ``auth-pass``, so it is held to the same rule.
- Both programs rewrite with mode ``0644 & ~umask`` whatever the file's mode was
  (redis-server rewrites redis.conf too: Sentinel sends ``CONFIG REWRITE`` on
  every failover, and the rewrite also copies the included secrets in). So these
  files must live in a directory of mode 0700 owned by the service's user, or the
  services must run with umask 077 (measured: the rewrite then keeps 0600).

A unit starts *fenced* (rule 8 of the design): redis-server runs as a replica of
``FENCE_PRIMARY``, an address on the pod's own loopback where nothing listens
(port 1 is privileged and unused), so the link fails at once instead of hanging.
A fenced redis answers reads, ``ROLE`` and ``INFO`` (its offset), refuses writes
with ``READONLY`` and serves no sync; it becomes a primary or a real replica only
when the machine says so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

FENCE_PRIMARY: tuple[str, int] = ("127.255.255.254", 1)
"""Where a fenced redis replicates from: nothing ever answers there."""

REPLICATION_USER = "replication"
"""The ACL user replicas authenticate as; it may only sync."""
ADMIN_USER = "charm-admin"
"""The ACL user the charm (and an operator: the ``credentials`` action) administers with."""
SENTINEL_USER = "sentinel"
"""The ACL user the sentinels use on redis (``sentinel auth-user``)."""
LEGACY_USER = "default"
"""The user of clients that send ``AUTH <password>`` only: the legacy ``redis`` relation."""

ADMIN_RULES = "~* &* +@all"
REPLICATION_RULES = "resetchannels -@all +psync +replconf +ping +role"
"""Syncing, and ``ROLE`` for the redis container's sync-done check (``workload.layers``)."""
SENTINEL_RULES = (
    "resetchannels &__sentinel__:hello -@all +client +subscribe +publish +ping +info"
    " +multi +exec +slaveof +replicaof +config +role +script|kill"
)
"""What Sentinel sends to redis (Redis' ACL docs for Sentinel, plus ROLE and REPLICAOF)."""
LEGACY_CLIENT_RULES = "~* &* +@all -@admin"
"""Legacy clients get the whole key space, never administration (CONFIG, ACL, REPLICAOF...)."""
SENTINEL_ADMIN_USER = "default"
"""Sentinel's user for the charm and the other sentinels (which send ``sentinel-pass``)."""
SENTINEL_ADMIN_RULES = "~* &* +@all"
SENTINEL_CLIENT_RULES = (
    "resetchannels &* -@all +ping +role +subscribe +psubscribe +unsubscribe +punsubscribe"
    " +sentinel|get-master-addr-by-name +sentinel|master +sentinel|masters"
    " +sentinel|replicas +sentinel|slaves +sentinel|sentinels"
)
"""A client relation's user on Sentinel: discovery and its event channels, nothing else
(no ``SENTINEL SET``, ``FAILOVER``, ``RESET``, ``CONFIG``, no ``ACL``)."""
_USER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

RDB_SAVE_SCHEDULE = "3600 1 300 100 60 10000"
"""Snapshot after 1 change in an hour, 100 in 5 minutes, 10000 in a minute."""

_MEMORY_SIZE = re.compile(r"^(0|[1-9][0-9]*([kmg]b?)?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2}
_MEMORY_UNITS |= {"g": 1000**3, "gb": 1024**3}
_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")
_SENTINEL_SAFE = re.compile(r"^[!#-&(-\[\]-~]+$")
"""Printable ASCII but space, quotes and backslash: what survives sentinel's rewrite."""

Persistence = Literal["aof", "rdb", "aof+rdb", "none"]
MaxmemoryPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


class CharmConfig(BaseModel):
    """The charm's Juju config options, validated.

    Field names are the Juju option names with underscores, which is what
    ``CharmBase.load_config`` passes (it turns ``sentinel-down-after-ms`` into
    ``sentinel_down_after_ms`` and drops options whose name is not a field, so
    dashed aliases would silently drop every option). Validation errors name the
    options as Juju users write them, with dashes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sentinel_down_after_ms: int = Field(default=3000, ge=500, le=600_000)
    sentinel_failover_timeout_ms: int = Field(default=30_000, ge=1000)
    min_replicas_to_write: int = Field(default=1, ge=0, le=6)
    min_replicas_max_lag_s: int = Field(default=10, ge=1, le=3600)
    persistence: Persistence = "aof"
    maxmemory: str = "0"
    maxmemory_policy: MaxmemoryPolicy = "noeviction"

    @field_validator("maxmemory")
    @classmethod
    def _is_memory_size(cls, value: str) -> str:
        if not _MEMORY_SIZE.match(value):
            raise ValueError("must be a memory size such as 0, 512mb or 2gb")
        return value.lower()

    @model_validator(mode="wrap")
    @classmethod
    def _name_options_as_juju_does(cls, data: Any, handler: Any) -> CharmConfig:
        try:
            return handler(data)
        except ValidationError as error:
            details = [_with_dashed_names(detail) for detail in error.errors()]
            raise ValidationError.from_exception_data(error.title, details) from None

    @property
    def maxmemory_bytes(self) -> int:
        """``maxmemory`` in bytes, as redis reads it (``1k`` is 1000, ``1kb`` 1024)."""
        digits = self.maxmemory.rstrip("kmgb")
        return int(digits) * _MEMORY_UNITS[self.maxmemory[len(digits) :]]


def _with_dashed_names(detail: Any) -> InitErrorDetails:
    renamed: InitErrorDetails = {
        "type": detail["type"],
        "loc": tuple(str(part).replace("_", "-") for part in detail["loc"]),
        "input": detail["input"],
    }
    if "ctx" in detail:
        renamed["ctx"] = detail["ctx"]
    return renamed


def render_redis_conf(
    config: CharmConfig,
    *,
    hostname: str,
    data_dir: str,
    secrets_path: str,
    bind: str = "0.0.0.0",
    port: int = 6379,
    aclfile: str,
    replica_of: tuple[str, int] | None = None,
    fenced: bool = False,
) -> str:
    """Render redis.conf; it holds no password, only ``include <secrets_path>``.

    Args:
        config: the validated charm config.
        hostname: the unit's stable name, announced to the primary and Sentinel.
        data_dir: where redis keeps its AOF and RDB files.
        secrets_path: where the caller puts ``render_redis_secrets`` (mode 0600).
        aclfile: where the caller puts ``render_acl_file`` (mode 0600): every user.
        bind: the address redis listens on.
        port: the port redis listens on.
        replica_of: the primary's (host, port) when this unit is a replica.
        fenced: start as a replica of nothing (see the module docstring).

    Raises:
        ValueError: a replica cannot also be fenced, or a name is not a host name.
    """
    if fenced and replica_of is not None:
        raise ValueError("a fenced redis replicates from nobody: drop replica_of")
    primary = FENCE_PRIMARY if fenced else replica_of
    lines = [
        f"bind {_checked_name(bind)}",
        *_source_address(bind),
        f"port {_checked_port(port)}",
        "protected-mode no",
        "daemonize no",
        'logfile ""',
        f"dir {_quoted(data_dir)}",
        f"replica-announce-ip {_checked_name(hostname)}",
        f"replica-announce-port {port}",
        "replica-read-only yes",
        # A full sync starts at once (default: 5 s later, to batch replicas that
        # ask together); Sentinel resyncs replicas one at a time anyway.
        "repl-diskless-sync-delay 0",
        *_persistence_lines(config.persistence),
        f"min-replicas-to-write {config.min_replicas_to_write}",
        f"min-replicas-max-lag {config.min_replicas_max_lag_s}",
        f"maxmemory {config.maxmemory_bytes}",
        f"maxmemory-policy {config.maxmemory_policy}",
        f"aclfile {_quoted(aclfile)}",
    ]
    if primary is not None:
        lines.append(f"replicaof {_checked_name(primary[0])} {_checked_port(primary[1])}")
    lines.append(f"include {_quoted(secrets_path)}")
    return _text(lines)


def render_redis_secrets(replication_password: str) -> str:
    """Render the file redis.conf includes: how a replica authenticates (mode 0600).

    Users are not here: redis refuses ``user`` directives beside an ``aclfile``
    (``render_acl_file``), and the ACL file can be reloaded at run time.
    """
    return _text(
        [
            f"masteruser {REPLICATION_USER}",
            f"masterauth {_quoted(replication_password)}",
        ]
    )


def password_hash(password: str) -> str:
    """The SHA-256 hex digest redis' ACL rules take as ``#<hash>``."""
    return hashlib.sha256(password.encode()).hexdigest()


def acl_rule(passwords: Sequence[str], rules: str) -> str:
    """One user's rule text: ``on``, a ``#hash`` per accepted password, then ``rules``.

    Several passwords are all accepted: that is how a rotation keeps the old one
    working until every client has the new one.

    Raises:
        ValueError: no password (a user without one would be open, or locked out).
    """
    if not passwords:
        raise ValueError("an ACL user needs at least one password")
    hashes = " ".join(f"#{password_hash(p)}" for p in dict.fromkeys(passwords))
    return f"on {hashes} {rules}"


def render_acl_file(users: Mapping[str, str]) -> str:
    """Render the ACL file: ``user <name> <rule>`` per user, ``default`` always defined.

    Rules hold password hashes only (``acl_rule``), never a password. A missing
    ``default`` user is rendered *off*: redis would otherwise create it open.

    Raises:
        ValueError: a user name redis or this charm would not take.
    """
    lines = _user_lines(users)
    if LEGACY_USER not in users:
        lines.insert(0, f"user {LEGACY_USER} off resetpass -@all")
    return _text(lines)


def render_sentinel_conf(
    config: CharmConfig,
    *,
    hostname: str,
    data_dir: str,
    primary_host: str,
    primary_port: int,
    quorum: int,
    bind: str = "0.0.0.0",
    port: int = 26379,
    master_name: str = "primary",
    client_reconfig_script: str | None = None,
) -> str:
    """Render sentinel.conf without secrets; write it with ``sentinel_file_text``.

    Args:
        config: the validated charm config.
        hostname: the unit's stable name, announced to the other sentinels.
        data_dir: sentinel's working directory.
        primary_host: the primary to monitor, by host name.
        primary_port: the primary's redis port.
        quorum: how many sentinels must agree that the primary is down.
        bind: the address sentinel listens on.
        port: the port sentinel listens on.
        master_name: the name clients ask Sentinel about.
        client_reconfig_script: run by sentinel on every failover, when given.

    Raises:
        ValueError: the quorum is below 1, or a name is not a host name.
    """
    if quorum < 1:
        raise ValueError(f"quorum must be at least 1, not {quorum}")
    name = _checked_name(master_name)
    lines = [
        f"bind {_checked_name(bind)}",
        *_source_address(bind),
        f"port {_checked_port(port)}",
        "protected-mode no",
        "daemonize no",
        'logfile ""',
        f"dir {_quoted(data_dir)}",
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        f"sentinel announce-ip {_checked_name(hostname)}",
        f"sentinel monitor {name} {_checked_name(primary_host)}"
        f" {_checked_port(primary_port)} {quorum}",
        f"sentinel down-after-milliseconds {name} {config.sentinel_down_after_ms}",
        f"sentinel failover-timeout {name} {config.sentinel_failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
    ]
    if client_reconfig_script is not None:
        lines.append(f"sentinel client-reconfig-script {name} {_quoted(client_reconfig_script)}")
    return _text(lines)


def render_sentinel_secrets(
    *,
    redis_password: str,
    sentinel_password: str,
    master_name: str = "primary",
    redis_user: str | None = None,
    users: Mapping[str, str] | None = None,
) -> str:
    """Render sentinel's secrets: its users, and the passwords it uses on redis and its peers.

    Args:
        redis_password: what sentinel authenticates to redis with (``auth-pass``).
        sentinel_password: what it authenticates to the other sentinels with
            (``sentinel-pass``), the password of their ``default`` user.
        master_name: the monitored primary's name.
        redis_user: the ACL user sentinel authenticates to redis as (``auth-user``);
            None for the ``default`` user.
        users: sentinel's own users, name -> ``acl_rule`` text (hashes only); it
            must hold ``default``. None: ``default`` with ``sentinel_password``.

    Raises:
        ValueError: a password sentinel would corrupt when it rewrites its file,
            or users without ``default`` (sentinel would leave it open).
    """
    name = _checked_name(master_name)
    _sentinel_safe(sentinel_password)
    if users is None:
        users = {SENTINEL_ADMIN_USER: acl_rule([sentinel_password], SENTINEL_ADMIN_RULES)}
    lines = _sentinel_user_lines(users)
    lines.append(f"sentinel sentinel-pass {_quoted(sentinel_password)}")
    if redis_user is not None:
        lines.append(f"sentinel auth-user {name} {_checked_name(redis_user)}")
    lines.append(f"sentinel auth-pass {name} {_quoted(_sentinel_safe(redis_password))}")
    return _text(lines)


def sentinel_client_rule(redis_rule: str) -> str:
    """A client user's rule on Sentinel: the password hashes of its redis ``acl_rule``."""
    return _rule_of_hashes(rule_hashes(redis_rule), SENTINEL_CLIENT_RULES)


def rule_hashes(rule: str) -> frozenset[str]:
    """The password hashes an ACL rule (``acl_rule``, or a ``user`` line) accepts."""
    return frozenset(word[1:] for word in rule.split() if word.startswith("#"))


@dataclass(frozen=True)
class SentinelAuth:
    """What a sentinel.conf says about authentication (``read_sentinel_auth``).

    Attributes:
        users: each user's accepted password hashes.
        sentinel_pass: the password it sends to the other sentinels.
        auth_pass: the password it sends to each monitored primary, by name.
        requirepass: whether a ``requirepass`` line is left (the pre-ACL layout).
        rules: each user's rule as the file has it (after ``user <name>``).
    """

    users: Mapping[str, frozenset[str]]
    sentinel_pass: str | None
    auth_pass: Mapping[str, str]
    requirepass: bool
    rules: Mapping[str, str]

    def __repr__(self) -> str:
        """Never show a password."""
        return f"SentinelAuth(users={sorted(self.users)}, requirepass={self.requirepass})"


def read_sentinel_auth(text: str) -> SentinelAuth:
    """Parse the authentication lines of a sentinel.conf, as rendered or as rewritten."""
    rules: dict[str, str] = {}
    sentinel_pass = None
    auth_pass: dict[str, str] = {}
    requirepass = False
    for line in text.splitlines():
        words = line.split()
        match words:
            case ["user", name, *rule]:
                rules[name] = " ".join(rule)
            case ["requirepass", *_]:
                requirepass = True
            case ["sentinel", "sentinel-pass", password]:
                sentinel_pass = _unquoted(password)
            case ["sentinel", "auth-pass", name, password]:
                auth_pass[name] = _unquoted(password)
    users = {name: rule_hashes(rule) for name, rule in rules.items()}
    return SentinelAuth(users, sentinel_pass, auth_pass, requirepass, rules)


def sentinel_user_changes(
    current: SentinelAuth, wanted: Mapping[str, str], *, only: Sequence[str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The users to set (name -> rule) and to delete to make ``current`` hold ``wanted``.

    Users are compared by their password hashes. ``only``: consider only these
    names (the others are left as they are, e.g. client users that cannot be
    read this hook); ``default`` is never deleted.
    """
    considered = set(wanted) | set(current.users) if only is None else set(only)
    to_set = {
        name: rule
        for name, rule in sorted(wanted.items())
        if name in considered and current.users.get(name) != rule_hashes(rule)
    }
    to_delete = sorted(
        name
        for name in current.users
        if name in considered and name not in wanted and name != SENTINEL_ADMIN_USER
    )
    return to_set, to_delete


def rewrite_sentinel_auth(
    text: str,
    *,
    users: Mapping[str, str],
    sentinel_password: str,
    auth_passwords: Mapping[str, str],
) -> str:
    """Sentinel's file with these users and passwords: only while sentinel is stopped.

    Every ``user``, ``requirepass`` and ``sentinel sentinel-pass`` line is
    replaced; ``sentinel auth-pass`` lines are replaced for the names of
    ``auth_passwords``; every other line is kept as sentinel wrote it.

    Raises:
        ValueError: as ``render_sentinel_secrets``.
    """
    kept = []
    for line in text.splitlines():
        words = line.split()
        match words:
            case ["user", *_] | ["requirepass", *_] | ["sentinel", "sentinel-pass", *_]:
                continue
            case ["sentinel", "auth-pass", name, _] if name in auth_passwords:
                password = _sentinel_safe(auth_passwords[name])
                kept.append(f"sentinel auth-pass {_checked_name(name)} {password}")
            case _:
                kept.append(line)
    kept.extend(_sentinel_user_lines(users))
    kept.append(f"sentinel sentinel-pass {_sentinel_safe(sentinel_password)}")
    return _text(kept)


def _sentinel_user_lines(users: Mapping[str, str]) -> list[str]:
    if SENTINEL_ADMIN_USER not in users:
        raise ValueError("sentinel's users must define default (it would be left open)")
    return _user_lines(users)


def _user_lines(users: Mapping[str, str]) -> list[str]:
    """``user <name> <rule>`` lines, sorted; ``default`` is always a valid name."""
    lines = []
    for name in sorted(users):
        if name != "default" and not _USER_NAME.match(name):
            raise ValueError(f"not an ACL user name: {name!r}")
        if "\n" in users[name]:
            raise ValueError(f"ACL rules of {name} span lines")
        lines.append(f"user {name} {users[name]}")
    return lines


def _rule_of_hashes(hashes: frozenset[str], rules: str) -> str:
    if not hashes:
        raise ValueError("an ACL user needs at least one password")
    return f"on {' '.join(f'#{h}' for h in sorted(hashes))} {rules}"


def _unquoted(word: str) -> str:
    return word[1:-1] if len(word) >= 2 and word[0] == word[-1] == '"' else word


def sentinel_file_text(conf: str, secrets: str) -> str:
    """Return the first sentinel.conf to write (mode 0600); sentinel owns it from then on."""
    return conf + secrets


def _source_address(bind: str) -> list[str]:
    """Connect out from the address listened on (to the primary, to other sentinels).

    Without it the kernel picks the source address, which on one machine with a
    loopback address per unit is 127.0.0.1 for every unit, and a partition of
    one unit's address would not cut its own connections.
    """
    return [] if bind in ("0.0.0.0", "*", "::") else [f"bind-source-addr {bind}"]


def _persistence_lines(persistence: Persistence) -> list[str]:
    aof = persistence in ("aof", "aof+rdb")
    rdb = persistence in ("rdb", "aof+rdb")
    lines = [f"appendonly {'yes' if aof else 'no'}", "appendfsync everysec"]
    lines.append(f'save "{RDB_SAVE_SCHEDULE if rdb else ""}"')
    return lines


def _quoted(value: str) -> str:
    """Quote a value the way redis' config parser (``sdssplitargs``) unquotes it."""
    escaped = []
    for byte in value.encode():
        char = chr(byte)
        if char in '\\"':
            escaped.append("\\" + char)
        elif 32 <= byte < 127:
            escaped.append(char)
        else:
            escaped.append(f"\\x{byte:02x}")
    return '"' + "".join(escaped) + '"'


def sentinel_safe(password: str) -> bool:
    """Whether redis-sentinel can write ``password`` back into its file (unquoted) intact."""
    return bool(_SENTINEL_SAFE.match(password))


def _sentinel_safe(password: str) -> str:
    if not _SENTINEL_SAFE.match(password):
        raise ValueError(
            "redis-sentinel rewrites this password unquoted: use printable ASCII"
            " without spaces, quotes or backslashes"
        )
    return password


def _checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a host name, address or master name: {name!r}")
    return name


def _checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"not a TCP port: {port}")
    return port


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
