"""Workload admin: every command the charm sends to redis-server and redis-sentinel.

This module owns the charm's redis-py connections: what it asks Redis and Sentinel,
how their replies become typed observations (``Replication``, ``MonitoredPrimary``),
and the planned switchover (``planned_switchover``). It decides nothing about the
cluster; the machine does, and the charm calls these methods to observe and to
execute effects.

Three rules hold for every call, because each runs inside a Juju hook:

- **Bounded.** Connect and socket timeouts are short (2 s by default) and redis-py
  never retries, so an unreachable or frozen (SIGSTOP) peer costs one timeout, not a
  hung hook. Clients given the same ``unresponsive`` set (the charm gives one per
  hook) share what timed out: a server that did not answer once is not waited for
  again in that hook, so a frozen redis costs a hook one timeout, not one per
  command. Nothing here waits longer than the bounds its caller passes.
- **One failure type.** Refused connections, timeouts, failed authentication,
  unexpected replies and error replies all raise ``WorkloadUnreachable`` (error
  replies as its subclass ``WorkloadRefused``), so a hook catches one type and
  records what it could not do. Only programming errors raise anything else.
- **Secrets stay secret.** Passwords reach Redis only as the AUTH of the
  connection (and as ``CONFIG SET`` / ``SENTINEL SET`` values when the caller
  rotates one). They are never logged, never in a ``repr`` and never in an
  exception message: redis' own error text is scrubbed of every password the call
  carried, and exceptions are raised ``from None`` so a traceback does not show the
  redis-py error underneath.

``import redis`` is deferred to the first connection: redis-py 5 imports
``redis.asyncio`` eagerly (0.13 s on top of ops here, about 0.6x a bare ``import
ops``), which every hook would pay even when it never talks to Redis: each hook is a
fresh process. Importing this module costs next to nothing beyond
``machine.types`` and ``workload.config``, which the charm imports anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

from machine.types import HANDOVER_COMPLETED
from workload.config import _sentinel_safe

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
"""Connect and socket timeout of every call: a frozen peer costs at most this."""

DEFAULT_REPLICA_PRIORITY = "100"
"""Redis' default ``replica-priority``, restored when a remembered value is unknown."""

REASON_MAX_CHARS = 120
"""A switchover reason is persisted in peer data (``handover``), which bounds its length."""

SECRET_OPTIONS = frozenset({"requirepass", "masterauth", "auth-pass", "auth-user"})
"""``CONFIG SET`` / ``SENTINEL SET`` options whose values never appear in a message."""

_LINK_DOWN_FLAGS = frozenset({"s_down", "o_down", "disconnected"})
_COMMANDS_WITH_SUBCOMMAND = frozenset({"ACL", "CLIENT", "CONFIG", "INFO", "SENTINEL"})

Role = Literal["master", "slave"]


class WorkloadUnreachable(Exception):  # noqa: N818 - the charm's name for "cannot drive it now"
    """Redis or Sentinel could not do what was asked: the one type every call raises.

    Covers a refused connection, a timeout (a frozen or partitioned peer), failed
    authentication and an unexpected reply. The message names the server and the
    command, never a password.
    """


class WorkloadRefused(WorkloadUnreachable):
    """The server answered with an error reply: it cannot do that now (reply in the message)."""


# ------------------------------------------------------------------ observations


@dataclass(frozen=True)
class ReplicaLink:
    """One replica as its primary sees it (a ``slaveN`` line of ``INFO replication``).

    ``host`` is the address the replica announces (``replica-announce-ip``): the same
    name Sentinel uses for it.
    """

    host: str
    port: int
    offset: int
    state: str
    """``online`` once synced; ``wait_bgsave`` / ``send_bulk`` while syncing."""
    lag: int = 0
    """Seconds since the replica's last acknowledgement."""

    @property
    def online(self) -> bool:
        """The replica is synced and streaming."""
        return self.state == "online"


@dataclass(frozen=True)
class Replication:
    """A redis' ``INFO replication``, with Redis' own names.

    ``master_repl_offset`` is this redis' replication offset: on a primary, the bytes
    of writes it has produced; on a replica, the bytes it has processed from its
    primary. Equal offsets mean the replica holds every write the primary acknowledged.
    """

    role: Role
    master_repl_offset: int
    master_host: str | None = None
    master_port: int | None = None
    master_link_up: bool = False
    sync_in_progress: bool = False
    replicas: tuple[ReplicaLink, ...] = ()

    def online_replica(self, host: str) -> ReplicaLink | None:
        """The synced replica that announces ``host``, if this primary has one."""
        return next((r for r in self.replicas if r.host == host and r.online), None)


@dataclass(frozen=True)
class MonitoredPrimary:
    """One primary a Sentinel monitors (an entry of ``SENTINEL MASTERS``).

    ``host`` is the name Sentinel announces (a host name with ``announce-hostnames``);
    ``config_epoch`` grows by one with every failover Sentinel performs.
    """

    name: str
    host: str
    port: int
    config_epoch: int
    quorum: int
    other_sentinels: int
    replicas: int
    flags: frozenset[str]
    down_after_ms: int
    failover_timeout_ms: int

    @property
    def link_ok(self) -> bool:
        """This Sentinel reaches the primary: not subjectively or objectively down."""
        return not self.flags & _LINK_DOWN_FLAGS

    @property
    def failover_in_progress(self) -> bool:
        """This Sentinel is running a failover of the primary right now."""
        return "failover_in_progress" in self.flags


@dataclass(frozen=True)
class SentinelReplica:
    """A replica as a Sentinel sees it (an entry of ``SENTINEL REPLICAS``).

    Sentinel refreshes this from the replica's ``INFO`` every 10 s (every second
    during a failover): ``priority`` and ``offset`` may be that old.
    """

    host: str
    port: int
    flags: frozenset[str]
    master_link_ok: bool
    offset: int
    priority: int
    role_reported: str = "slave"
    """The role the replica reported in the ``INFO`` Sentinel last read from it."""
    role_reported_ms_ago: int = 0
    """How long ago Sentinel first saw it report that role."""

    @property
    def link_ok(self) -> bool:
        """Sentinel reaches this replica."""
        return not self.flags & _LINK_DOWN_FLAGS

    @property
    def eligible(self) -> bool:
        """Sentinel could promote it now: reachable, linked to its primary, priority not 0."""
        return self.link_ok and self.master_link_ok and self.priority != 0


@dataclass(frozen=True)
class SentinelPeer:
    """Another Sentinel, as this one knows it (an entry of ``SENTINEL SENTINELS``)."""

    host: str
    port: int
    run_id: str
    flags: frozenset[str]

    @property
    def link_ok(self) -> bool:
        """This Sentinel hears from the peer."""
        return not self.flags & _LINK_DOWN_FLAGS


# ------------------------------------------------------------------ connections


class _AdminClient:
    """One lazily opened, never retrying redis-py connection to a redis or a sentinel."""

    _server_kind = "redis"

    def __init__(
        self,
        host: str,
        port: int,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        username: str | None = None,
        unresponsive: set[tuple[str, int]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.username = username
        self._password = password
        self._connection: redis.Redis | None = None
        self._unresponsive = unresponsive
        """Servers that timed out, shared with the other clients of the same hook (if any)."""

    def __repr__(self) -> str:
        """Name the server, never the password."""
        return (
            f"{type(self).__name__}(host={self.host!r}, port={self.port}, timeout={self.timeout})"
        )

    def __enter__(self) -> Self:
        """Use as ``with RedisAdmin(...) as admin:``; the connection closes on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection."""
        self.close()

    def close(self) -> None:
        """Close the connection, if one was opened; the object may be used again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def ping(self) -> bool:
        """Whether the server answers, authenticated, within the timeout (never raises)."""
        try:
            return self._call("PING") is True
        except WorkloadUnreachable:
            return False

    def _redis(self) -> redis.Redis:
        if self._connection is None:
            import redis  # deferred: see the module docstring
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._connection = redis.Redis(
                self.host,
                self.port,
                username=self.username,
                password=self._password,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                decode_responses=True,
                # CLIENT SETINFO is Redis 7.2+: on 7.0 it is two wasted round trips.
                lib_name=None,
                lib_version=None,
            )
            # Parse INFO here, exactly: redis-py's parser turns "1.5"-like values into floats.
            self._connection.set_response_callback("INFO", lambda reply, **_: reply)
        return self._connection

    def _call(self, *args: str | int, secrets: Sequence[str] = ()) -> Any:
        """Run one command and return its raw reply; any failure is a ``WorkloadUnreachable``.

        Only the command's first words appear in a message (``CONFIG SET``), never its
        arguments; ``secrets`` are further values scrubbed from the server's error text.
        """
        import redis.exceptions as errors  # already imported by _redis(), if reached

        command = _command_name(args)
        if self._unresponsive is not None and (self.host, self.port) in self._unresponsive:
            raise WorkloadUnreachable(self._failure_prefix(command) + "timed out earlier")
        try:
            return self._redis().execute_command(*args)
        except errors.DataError:
            raise  # a wrong argument type: a programming error, not the workload's
        except errors.AuthenticationError as error:
            failure: type[WorkloadUnreachable] = WorkloadUnreachable
            text = f"authentication failed ({self._scrubbed(str(error), secrets)})"
        except errors.ResponseError as error:
            # An error reply leaves the connection usable: keep it.
            text = f"refused: {self._scrubbed(str(error), secrets)}"
            raise WorkloadRefused(self._failure_prefix(command) + text) from None
        except (errors.RedisError, OSError) as error:
            failure = WorkloadUnreachable
            text = f"{type(error).__name__}: {self._scrubbed(str(error), secrets)}"
            if self._unresponsive is not None and isinstance(
                error, errors.TimeoutError | TimeoutError
            ):
                self._unresponsive.add((self.host, self.port))
        self.close()  # the next call starts from a fresh connection
        raise failure(self._failure_prefix(command) + text) from None

    def _failure_prefix(self, command: str) -> str:
        return f"{self._server_kind} {self.host}:{self.port}: {command}: "

    def _call_ok(self, *args: str | int, secrets: Sequence[str] = ()) -> None:
        """Run a command that answers ``OK`` (maybe with a remark, as REPLICAOF does)."""
        reply = self._call(*args, secrets=secrets)
        if not (isinstance(reply, str) and reply.startswith("OK")):
            raise self._unexpected(args, reply)

    def _parsed(self, args: tuple[str, ...], reply: Any, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(reply)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError):
            raise self._unexpected(args, reply) from None

    def _unexpected(self, args: Sequence[str | int], reply: Any) -> WorkloadUnreachable:
        kind = type(reply).__name__
        return WorkloadUnreachable(
            self._failure_prefix(_command_name(args)) + f"unexpected reply ({kind})"
        )

    def _scrubbed(self, text: str, secrets: Sequence[str]) -> str:
        for secret in (self._password, *secrets):
            if secret:
                text = text.replace(secret, "***")
        return text[:200]


class RedisAdmin(_AdminClient):
    """The charm's admin connection to one redis-server (as ``username``; ``default`` if None).

    Every method is one command with the timeout of the constructor; see the module
    docstring for what they raise.
    """

    _server_kind = "redis"

    def __init__(
        self,
        host: str,
        port: int = 6379,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        username: str | None = None,
        unresponsive: set[tuple[str, int]] | None = None,
    ) -> None:
        """Prepare a connection to redis at ``host:port``; nothing connects until a call."""
        super().__init__(
            host, port, password, timeout=timeout, username=username, unresponsive=unresponsive
        )

    def replication(self) -> Replication:
        """Role, offset and links, from ``INFO replication``."""
        args = ("INFO", "replication")
        return self._parsed(args, self._call(*args), _replication_from_info)

    def keys(self) -> int:
        """The number of keys in all databases (``INFO keyspace``)."""
        args = ("INFO", "keyspace")
        return self._parsed(args, self._call(*args), _keys_from_info)

    def replicate_from(self, host: str, port: int) -> None:
        """Follow ``host:port`` (``REPLICAOF``); already following it is fine."""
        self._call_ok("REPLICAOF", host, port)

    def become_primary(self) -> None:
        """Stop following and accept writes (``REPLICAOF NO ONE``); a primary stays one."""
        self._call_ok("REPLICAOF", "NO", "ONE")

    def config_get(self, names: str | Iterable[str]) -> dict[str, str]:
        """``CONFIG GET`` of one name, glob pattern or several names, as a dict."""
        args = ("CONFIG", "GET", *([names] if isinstance(names, str) else names))
        return self._parsed(args, self._call(*args), _pairs)

    def config_set(self, options: Mapping[str, str]) -> None:
        """Set several options at once (``CONFIG SET`` is atomic over them since Redis 7).

        Values of ``SECRET_OPTIONS`` (``requirepass``, ``masterauth``) never appear
        in a message.
        """
        if not options:
            return
        words = [word for option in options.items() for word in option]
        self._call_ok("CONFIG", "SET", *words, secrets=_secret_values(options))

    def acl_load(self) -> None:
        """Replace every user by those of the ACL file (``ACL LOAD``), all or nothing.

        Clients of a user that is gone, or whose password changed, are disconnected
        by redis; a file with an error changes nothing and is refused.
        """
        self._call_ok("ACL", "LOAD")

    def acl_users(self) -> list[str]:
        """The names of the users redis has now (``ACL USERS``)."""
        args = ("ACL", "USERS")
        return self._parsed(args, self._call(*args), lambda reply: [str(u) for u in reply])

    def info_server(self) -> dict[str, str]:
        """``INFO server`` as fields (``redis_version``...)."""
        args = ("INFO", "server")
        return self._parsed(args, self._call(*args), _info_fields)

    def config_rewrite(self) -> None:
        """Persist the running config into redis.conf (``CONFIG REWRITE``)."""
        self._call_ok("CONFIG", "REWRITE")

    def pause_writes(self, timeout_ms: int) -> None:
        """Hold every write for at most ``timeout_ms`` (``CLIENT PAUSE ms WRITE``).

        Reads, ``INFO`` and admin commands (``REPLICAOF``) still run; a held write
        runs when the pause ends, and is refused with ``READONLY`` if this redis has
        become a replica meanwhile. The pause ends by itself after ``timeout_ms``, so
        a hook that dies never leaves writes held.
        """
        self._call_ok("CLIENT", "PAUSE", int(timeout_ms), "WRITE")

    def unpause(self) -> None:
        """Release held writes now (``CLIENT UNPAUSE``)."""
        self._call_ok("CLIENT", "UNPAUSE")


class SentinelAdmin(_AdminClient):
    """The charm's admin connection to one redis-sentinel.

    Every method is one command with the timeout of the constructor; see the module
    docstring for what they raise.
    """

    _server_kind = "sentinel"

    def __init__(
        self,
        host: str,
        port: int = 26379,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        unresponsive: set[tuple[str, int]] | None = None,
    ) -> None:
        """Prepare a connection to sentinel at ``host:port``; nothing connects until a call."""
        super().__init__(host, port, password, timeout=timeout, unresponsive=unresponsive)

    def monitored(self) -> dict[str, MonitoredPrimary]:
        """Every primary this Sentinel monitors, by name (``SENTINEL MASTERS``)."""
        args = ("SENTINEL", "MASTERS")
        entries = self._parsed(args, self._call(*args), _entries)
        primaries = (self._parsed(args, entry, _monitored_primary) for entry in entries)
        return {primary.name: primary for primary in primaries}

    def primary_address(self, name: str) -> tuple[str, int] | None:
        """Where Sentinel says the primary ``name`` is, or None if it monitors no such name.

        This is what clients ask (``SENTINEL GET-MASTER-ADDR-BY-NAME``). On the
        sentinel running a failover it changes once the promotion is confirmed
        (before ``+switch-master``, which waits for the replicas to be re-pointed);
        on the others, with their ``+switch-master``.
        """
        args = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
        reply = self._call(*args)
        if reply is None:
            return None
        return self._parsed(args, reply, lambda r: (str(r[0]), int(r[1])))

    def monitor(self, name: str, host: str, port: int, quorum: int) -> None:
        """Start monitoring ``host:port`` as ``name`` (refused if the name is taken)."""
        self._call_ok("SENTINEL", "MONITOR", name, host, port, quorum)

    def remove(self, name: str) -> bool:
        """Stop monitoring ``name``; False if it was not monitored (so this is idempotent)."""
        try:
            self._call_ok("SENTINEL", "REMOVE", name)
        except WorkloadRefused as refusal:
            if "No such master" in str(refusal):
                return False
            raise
        return True

    def set(self, name: str, options: Mapping[str, str]) -> None:
        """Set options of a monitored primary in one call (``SENTINEL SET name opt val ...``).

        Raises:
            ValueError: an ``auth-pass`` or ``auth-user`` that sentinel 7.0 would write
                back unquoted into its file, breaking its next start (see
                ``workload.config``); the message does not hold the value.
            WorkloadUnreachable: as every call.
        """
        for option in ("auth-pass", "auth-user"):
            if option in options:
                _sentinel_safe(options[option])
        if not options:
            return
        words = [word for option in options.items() for word in option]
        self._call_ok("SENTINEL", "SET", name, *words, secrets=_secret_values(options))

    def set_sentinel_pass(self, password: str) -> None:
        """The password this sentinel sends to the other sentinels (persisted at once).

        Raises:
            ValueError: a password sentinel 7.0 would write back unquoted (see
                ``workload.config``); the message does not hold the value.
        """
        _sentinel_safe(password)
        self._call_ok("SENTINEL", "CONFIG", "SET", "sentinel-pass", password, secrets=[password])

    def set_user(self, name: str, rule: str) -> None:
        """Create or replace sentinel's user ``name`` (``ACL SETUSER name resetpass <rule>``).

        ``rule`` is an ``acl_rule`` (hashes only), which sets the user's whole
        permissions; its passwords replace the old ones in one command, so clients
        already authenticated stay connected. Persisted by ``flush_config``.
        """
        self._call_ok("ACL", "SETUSER", name, "resetpass", *rule.split())

    def delete_user(self, name: str) -> None:
        """Remove sentinel's user ``name``; its connections are closed (``ACL DELUSER``)."""
        self._call("ACL", "DELUSER", name)

    def flush_config(self) -> None:
        """Make sentinel rewrite its file with what it runs now (``SENTINEL FLUSHCONFIG``)."""
        self._call_ok("SENTINEL", "FLUSHCONFIG")

    def reset(self, pattern: str) -> int:
        """Forget the replicas and sentinels of the matching primaries; how many matched.

        Sentinel rediscovers the live ones within seconds (from the primary's INFO and
        the hello channel); departed ones are gone for good.
        """
        args = ("SENTINEL", "RESET", pattern)
        return self._parsed(args, self._call(*args), int)

    def failover(self, name: str) -> None:
        """Fail ``name`` over now, without asking the other sentinels (``SENTINEL FAILOVER``).

        Sentinel promotes the eligible replica with the lowest ``replica-priority``
        (then the highest offset) *as it last saw them*. Raises ``WorkloadRefused``
        with ``NOGOODSLAVE`` or ``INPROG`` when it cannot.
        """
        self._call_ok("SENTINEL", "FAILOVER", name)

    def ckquorum(self, name: str) -> tuple[bool, str]:
        """Whether enough sentinels are reachable to fail ``name`` over, and Sentinel's words.

        A missing quorum is an answer here (``(False, "NOQUORUM ...")``), not an error.
        """
        try:
            reply = self._call("SENTINEL", "CKQUORUM", name)
        except WorkloadRefused as refusal:
            _, _, text = str(refusal).partition("refused: ")
            if text.startswith("NOQUORUM"):
                return False, text
            raise
        return str(reply).startswith("OK"), str(reply)

    def replicas(self, name: str) -> list[SentinelReplica]:
        """The replicas of ``name`` this Sentinel knows (``SENTINEL REPLICAS``)."""
        args = ("SENTINEL", "REPLICAS", name)
        entries = self._parsed(args, self._call(*args), _entries)
        return [self._parsed(args, entry, _sentinel_replica) for entry in entries]

    def sentinels(self, name: str) -> list[SentinelPeer]:
        """The other sentinels monitoring ``name`` that this one knows (``SENTINEL SENTINELS``)."""
        args = ("SENTINEL", "SENTINELS", name)
        entries = self._parsed(args, self._call(*args), _entries)
        return [self._parsed(args, entry, _sentinel_peer) for entry in entries]

    def debug_timers(self) -> dict[str, int]:
        """Sentinel's internal periods in ms, such as ``INFO-PERIOD`` (``SENTINEL DEBUG``)."""
        args = ("SENTINEL", "DEBUG")
        return self._parsed(
            args, self._call(*args), lambda r: {k: int(v) for k, v in _pairs(r).items()}
        )

    def set_debug_timer(self, timer: str, milliseconds: int) -> None:
        """Change one of Sentinel's periods until it restarts (``SENTINEL DEBUG timer ms``)."""
        self._call_ok("SENTINEL", "DEBUG", timer, int(milliseconds))


# ------------------------------------------------------------------ planned switchover

_POLL_S = 0.025
"""How often the switchover polls offsets and Sentinel while writes are held."""

_PAUSE_MARGIN_S = 0.3
"""Time kept before the pause would expire, to demote the old primary and release writes."""

_FAST_INFO_PERIOD_MS = 100
"""Sentinel's INFO period while it must see the new priorities (its default is 10 000)."""

_QUIET_PING_PERIOD_S = "3600"
"""The old primary's ``repl-ping-replica-period`` while writes are held (default 10 s)."""


def planned_switchover(
    primary: RedisAdmin,
    sentinel: SentinelAdmin,
    master_name: str,
    replicas: Mapping[str, RedisAdmin],
    target: str | None = None,
    *,
    pause_ms: int = 5000,
    catch_up_s: float = 2.0,
    switch_s: float = 8.0,
    priority_s: float = 3.0,
    announce_s: float = 3.0,
    max_candidates: int = 2,
    avoid: Collection[str] = (),
    peer_sentinels: Sequence[SentinelAdmin] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Move the primary to a caught-up replica without losing an acknowledged write.

    Redis 7.0 has no ``SENTINEL FAILOVER COORDINATED``, so this builds one (design
    rule 3, "planned moves lose nothing"). ``replicas`` maps each replica's announced
    host, as ``INFO replication`` and Sentinel name it, to a client for it.

    1. Choose the target: ``target`` if it is a synced replica of ``primary``, else
       the synced replica with the highest offset.
    2. Before holding any write, leave Sentinel only the target to promote:
       ``replica-priority`` 1 on the target and 0 ("never") on the other replicas,
       then wait (at most ``priority_s``) until this Sentinel reports exactly that,
       and until every one of ``peer_sentinels`` has seen the target report itself a
       replica (one still seeing the master it once was would demote it again once
       promoted). Sentinel picks from its cached ``INFO`` of each replica, refreshed
       every 10 s, so without the wait it promotes by a stale priority and offset;
       every sentinel's INFO period is lowered to 100 ms meanwhile. A merely higher
       priority on the others would not do: Sentinel falls back to them whenever the
       target looks ineligible for a moment, and they may lag behind.
    3. Stop the primary's replication PINGs (``repl-ping-replica-period``) and hold
       its writes (``CLIENT PAUSE WRITE`` for ``pause_ms``). The PING is the one thing
       a write-paused primary still adds to its stream, every 10 s: one that lands
       after the target was promoted leaves the old primary and the other replicas
       14 bytes ahead of the new primary, and they then need a full resync.
    4. Wait (at most ``catch_up_s``) until the target's offset reaches the primary's.
    5. ``SENTINEL FAILOVER``, and wait (at most ``switch_s``) until the Sentinel names
       the target (``GET-MASTER-ADDR-BY-NAME`` does so once the target is promoted,
       before ``+switch-master``; what clients ask is what counts).
    6. Make the old primary follow the target, then release its held writes: they
       fail with ``READONLY`` instead of being acknowledged by a redis that Sentinel
       would demote (and lose them with) seconds later. This is done even when the
       wait of step 5 ran out: a failover Sentinel accepted cannot be called back.
    7. In every outcome: release the writes, restore the PING period, the
       priorities and the sentinels' INFO periods.
    8. Once completed, wait (at most ``announce_s``) until every one of
       ``peer_sentinels`` names the target. This Sentinel tells them with its next
       hello, after the promotion is confirmed; a leaving unit that stops it
       before would leave them to fail the old primary over again seconds later
       (the unit's removal, measured: writes refused for 3 to 5 s instead of 1).

    Every wait from step 3 on ends before the pause would expire by itself, so an
    attempt takes at most ``priority_s + pause_ms / 1000`` (and ``announce_s`` once
    completed), plus a few command timeouts if a server stops answering mid-way.

    With no ``target``, a failed attempt that did not reach ``SENTINEL FAILOVER``
    is tried again with the next best replica, up to ``max_candidates`` replicas
    in all: the best one may be going away itself (two units removed at once).
    ``avoid`` are replicas (hosts) not to choose without a ``target`` unless no
    other can take over: those of units Juju is removing too. Chosen anyway, one
    could stop between ``SENTINEL FAILOVER`` and its promotion, and leave no
    primary at all.

    Returns:
        ``HANDOVER_COMPLETED`` when the Sentinel names the target and the old primary
        follows it; otherwise a short reason (at most ``REASON_MAX_CHARS``) why the
        primary did not move. Expected failures (no replica, a lagging replica, a
        refusing or slow Sentinel, an unreachable server) never raise.
    """
    tried: set[str] = set()
    avoided = set(avoid)
    while True:
        switchover = _Switchover(
            primary, sentinel, master_name, replicas, peer_sentinels, clock, sleep
        )
        started = clock()
        try:
            outcome = switchover.run(
                target, pause_ms, catch_up_s, switch_s, priority_s, tried | avoided
            )
        except WorkloadUnreachable as error:
            outcome = f"switchover stopped: {error}"
        logger.info(
            "switchover of %s: %s in %.2f s, writes held %.2f s",
            master_name,
            outcome,
            clock() - started,
            switchover.held_s,
        )
        chosen = switchover.chosen
        if outcome == HANDOVER_COMPLETED and chosen is not None:
            switchover.await_peers(chosen, announce_s)
        if chosen is None and avoided and target is None:
            avoided = set()  # every other replica is leaving too: the best of those
            continue
        if (
            outcome == HANDOVER_COMPLETED
            or target is not None
            or chosen is None
            or switchover.failover_requested
            or len(tried) + 1 >= max_candidates
        ):
            return outcome[:REASON_MAX_CHARS]
        tried.add(chosen.host)  # gone meanwhile (leaving too?): the next best one


class _Switchover:
    """The steps of ``planned_switchover``, and what to undo after them."""

    def __init__(
        self,
        primary: RedisAdmin,
        sentinel: SentinelAdmin,
        master_name: str,
        replicas: Mapping[str, RedisAdmin],
        peer_sentinels: Sequence[SentinelAdmin],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.primary = primary
        self.sentinel = sentinel
        self.master_name = master_name
        self.replicas = replicas
        self.peer_sentinels = peer_sentinels
        self.clock = clock
        self.sleep = sleep
        self.saved_priorities: dict[str, str] = {}
        self.saved_info_periods_ms: list[tuple[SentinelAdmin, int]] = []
        self.saved_ping_period: str | None = None
        self.paused_at: float | None = None
        self.chosen: ReplicaLink | None = None
        self.failover_requested = False
        self.held_s = 0.0
        """How long writes were held on the old primary (pause to unpause)."""

    def run(
        self,
        target: str | None,
        pause_ms: int,
        catch_up_s: float,
        switch_s: float,
        priority_s: float,
        exclude: Collection[str] = (),
    ) -> str:
        chosen = self.choose_target(target, exclude)
        if isinstance(chosen, str):
            return chosen
        self.chosen = chosen
        try:
            if reason := self.prefer_only(chosen, priority_s):
                return reason
            self.hold_writes(pause_ms)
            release_by = self.clock() + pause_ms / 1000 - _PAUSE_MARGIN_S
            if reason := self.catch_up(chosen, min(catch_up_s, release_by - self.clock())):
                return reason
            try:
                self.failover_requested = True
                self.sentinel.failover(self.master_name)
            except WorkloadRefused as refusal:
                return f"sentinel refused the failover: {_after_refused(refusal)}"
            if reason := self.switch(chosen, min(switch_s, release_by - self.clock())):
                return reason
            self.primary.replicate_from(chosen.host, chosen.port)
            return HANDOVER_COMPLETED
        finally:
            self.undo()

    def choose_target(self, target: str | None, exclude: Collection[str]) -> ReplicaLink | str:
        """The replica to hand over to (never one of ``exclude``), or why there is none."""
        synced = [r for r in self.primary.replication().replicas if r.online]
        if target is not None:
            link = next((r for r in synced if r.host == target), None)
            if link is None:
                return f"{target} is not a synced replica of the primary"
        elif candidates := [r for r in synced if r.host in self.replicas.keys() - exclude]:
            link = max(candidates, key=lambda r: r.offset)
        elif exclude:
            return (
                f"no other connected replica to hand over to (tried {', '.join(sorted(exclude))})"
            )
        else:
            return "no connected replica to hand over to"
        if link.host not in self.replicas:
            return f"no admin connection to {link.host}"
        return link

    def prefer_only(self, chosen: ReplicaLink, within_s: float) -> str | None:
        """Leave Sentinel only ``chosen`` to promote, and wait until every sentinel sees that.

        This unit's sentinel (the one asked to fail over) must see ``chosen`` as the
        only eligible replica. Every other sentinel must have seen it report itself
        a replica since it last saw it report ``master``: a sentinel that sees a
        replica report ``master`` for over 8 s without a new configuration turns it
        back into a replica (``+convert-to-slave``), and it would do so to the target
        the moment it is promoted. That view can be stale for up to 10 s (Sentinel's
        INFO period) after the target was a master, as the old primary thawed after
        a failover is. Every sentinel's INFO period is lowered meanwhile; a peer
        sentinel that does not answer is not waited for.
        """
        self.set_priority(chosen.host, "1")
        for host in self.replicas.keys() - {chosen.host}:
            # One we cannot reach must look ineligible to Sentinel by itself: checked below.
            with contextlib.suppress(WorkloadUnreachable):
                self.set_priority(host, "0")
        self.hurry_info_refresh(self.sentinel)
        for peer in self.peer_sentinels:
            with contextlib.suppress(WorkloadUnreachable):
                self.hurry_info_refresh(peer)
        lagging: list[str] = []

        def sentinels_see_only_chosen() -> bool:
            seen = self.sentinel.replicas(self.master_name)
            eligible = {(r.host, r.port): r.priority for r in seen if r.eligible}
            if eligible != {(chosen.host, chosen.port): 1}:
                lagging[:] = ["this unit's"]
                return False
            lagging[:] = [p.host for p in self.peer_sentinels if self.sees_a_master(p, chosen)]
            return not lagging

        if not self.wait_for(sentinels_see_only_chosen, within_s):
            return (
                f"sentinel did not see {chosen.host} as the only candidate within {within_s} s"
                f" ({', '.join(lagging)} sentinel)"
            )
        return None

    def await_peers(self, chosen: ReplicaLink, within_s: float) -> None:
        """Wait until every other sentinel names ``chosen`` (one that does not answer: not)."""
        expected = (chosen.host, chosen.port)
        uninformed: list[str] = []

        def informed() -> bool:
            uninformed[:] = []
            for peer in self.peer_sentinels:
                try:
                    if peer.primary_address(self.master_name) != expected:
                        uninformed.append(peer.host)
                except (WorkloadUnreachable, WorkloadRefused):
                    pass
            return not uninformed

        if not self.wait_for(informed, within_s):
            logger.warning(
                "sentinels %s did not name %s within %s s", uninformed, chosen.host, within_s
            )

    def hurry_info_refresh(self, sentinel: SentinelAdmin) -> None:
        """Lower a sentinel's INFO period until ``undo`` (one without SENTINEL DEBUG: as is)."""
        try:
            saved = sentinel.debug_timers()["INFO-PERIOD"]
            sentinel.set_debug_timer("INFO-PERIOD", _FAST_INFO_PERIOD_MS)
        except (WorkloadRefused, KeyError):
            return
        self.saved_info_periods_ms.append((sentinel, saved))

    def sees_a_master(self, peer: SentinelAdmin, chosen: ReplicaLink) -> bool:
        """``peer`` last saw ``chosen`` report ``master`` (an unreachable peer: not waited for)."""
        try:
            seen = peer.replicas(self.master_name)
        except (WorkloadUnreachable, WorkloadRefused):
            return False
        return any(
            (r.host, r.port) == (chosen.host, chosen.port) and r.role_reported != "slave"
            for r in seen
        )

    def set_priority(self, host: str, priority: str) -> None:
        """Set a replica's ``replica-priority``, remembering the value to restore."""
        admin = self.replicas[host]
        current = admin.config_get("replica-priority").get("replica-priority")
        if current != priority:
            self.saved_priorities.setdefault(host, current or DEFAULT_REPLICA_PRIORITY)
            admin.config_set({"replica-priority": priority})

    def hold_writes(self, pause_ms: int) -> None:
        """Silence the primary's replication PINGs, then hold its writes."""
        period = self.primary.config_get("repl-ping-replica-period")["repl-ping-replica-period"]
        self.saved_ping_period = period
        self.primary.config_set({"repl-ping-replica-period": _QUIET_PING_PERIOD_S})
        self.paused_at = self.clock()  # before the call: a pause that timed out may still hold
        self.primary.pause_writes(pause_ms)

    def catch_up(self, chosen: ReplicaLink, within_s: float) -> str | None:
        """Wait until the target holds every write the paused primary acknowledged."""
        target = self.replicas[chosen.host]
        offsets: list[int] = [0, 0]

        def caught_up() -> bool:
            # The primary first: its offset only grows, so a target at or past it has it all.
            offsets[:] = [
                self.primary.replication().master_repl_offset,
                target.replication().master_repl_offset,
            ]
            return offsets[1] >= offsets[0]

        if not self.wait_for(caught_up, within_s):
            return (
                f"replica {chosen.host} did not catch up within {max(within_s, 0):.1f} s"
                f" (offset {offsets[1]} of {offsets[0]})"
            )
        return None

    def switch(self, chosen: ReplicaLink, within_s: float) -> str | None:
        """Wait until Sentinel names the target; if it does not, still keep one primary.

        Once Sentinel has accepted the failover it cannot be called back, and the
        target is the only replica it may promote, caught up: the old primary must
        follow the target before its writes are released, whether or not the
        promotion is visible yet. Should Sentinel give up instead, the old primary
        reports itself a replica and Sentinel fails it over again after down-after:
        unavailable for a while, but nothing acknowledged is lost.
        """
        expected = (chosen.host, chosen.port)
        if self.wait_for(
            lambda: self.sentinel.primary_address(self.master_name) == expected, within_s
        ):
            return None
        self.primary.replicate_from(chosen.host, chosen.port)
        return (
            f"sentinel did not name {chosen.host} within {max(within_s, 0):.1f} s;"
            " the old primary follows it"
        )

    def undo(self) -> None:
        """Release the writes first; then restore what the switchover changed."""
        if self.saved_ping_period is not None:
            period = self.saved_ping_period
            _quietly(lambda: self.primary.config_set({"repl-ping-replica-period": period}))
        if self.paused_at is not None:
            _quietly(self.primary.unpause)
            self.held_s = self.clock() - self.paused_at
        for host, priority in self.saved_priorities.items():
            admin = self.replicas[host]
            _quietly(lambda a=admin, p=priority: a.config_set({"replica-priority": p}))
        for sentinel, info_period in self.saved_info_periods_ms:
            _quietly(lambda s=sentinel, p=info_period: s.set_debug_timer("INFO-PERIOD", p))

    def wait_for(self, condition: Callable[[], bool], within_s: float) -> bool:
        """Poll ``condition`` until true or ``within_s`` has passed (it is tried at least once)."""
        deadline = self.clock() + within_s
        while True:
            if condition():
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(_POLL_S)


def _command_name(args: Sequence[str | int]) -> str:
    """``CONFIG SET`` for ``CONFIG SET name value``: a message names no argument."""
    first = str(args[0])
    if first in _COMMANDS_WITH_SUBCOMMAND and len(args) > 1:
        return f"{first} {args[1]}"
    return first


def _quietly(action: Callable[[], object]) -> None:
    """Run a clean-up step whose failure must not hide the outcome (the pause expires anyway)."""
    with contextlib.suppress(WorkloadUnreachable):
        action()


def _after_refused(refusal: WorkloadRefused) -> str:
    return str(refusal).partition("refused: ")[2] or str(refusal)


# ------------------------------------------------------------------ reply parsing


def _info_fields(text: str) -> dict[str, str]:
    """``INFO`` text as name -> value (section headers and blank lines dropped)."""
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(":")
            fields[name] = value
    return fields


def _subfields(value: str) -> dict[str, str]:
    """``ip=h,port=1,state=online`` as a dict."""
    return dict(part.split("=", 1) for part in value.split(","))


def _replication_from_info(text: str) -> Replication:
    fields = _info_fields(text)
    role = fields["role"]
    if role not in ("master", "slave"):
        raise ValueError(role)
    replicas = []
    for index in range(int(fields.get("connected_slaves", "0"))):
        line = fields.get(f"slave{index}")
        if line is None:
            continue  # a replica disconnected between the count and its line
        link = _subfields(line)
        replicas.append(
            ReplicaLink(
                host=link["ip"],
                port=int(link["port"]),
                offset=int(link["offset"]),
                state=link["state"],
                lag=int(link.get("lag", "0")),
            )
        )
    following = role == "slave"
    return Replication(
        role=role,
        master_repl_offset=int(fields["master_repl_offset"]),
        master_host=fields["master_host"] if following else None,
        master_port=int(fields["master_port"]) if following else None,
        master_link_up=following and fields["master_link_status"] == "up",
        sync_in_progress=following and fields["master_sync_in_progress"] == "1",
        replicas=tuple(replicas),
    )


def _keys_from_info(text: str) -> int:
    return sum(
        int(_subfields(value)["keys"])
        for name, value in _info_fields(text).items()
        if name.startswith("db")
    )


def _pairs(reply: list[str]) -> dict[str, str]:
    """A flat ``[name, value, name, value, ...]`` reply as a dict."""
    if len(reply) % 2:
        raise ValueError("odd number of items")
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _entries(reply: list[list[str]]) -> list[dict[str, str]]:
    return [_pairs(entry) for entry in reply]


def _flags(entry: dict[str, str]) -> frozenset[str]:
    return frozenset(entry["flags"].split(","))


def _monitored_primary(entry: dict[str, str]) -> MonitoredPrimary:
    return MonitoredPrimary(
        name=entry["name"],
        host=entry["ip"],
        port=int(entry["port"]),
        config_epoch=int(entry["config-epoch"]),
        quorum=int(entry["quorum"]),
        other_sentinels=int(entry["num-other-sentinels"]),
        replicas=int(entry["num-slaves"]),
        flags=_flags(entry),
        down_after_ms=int(entry["down-after-milliseconds"]),
        failover_timeout_ms=int(entry["failover-timeout"]),
    )


def _sentinel_replica(entry: dict[str, str]) -> SentinelReplica:
    return SentinelReplica(
        host=entry["ip"],
        port=int(entry["port"]),
        flags=_flags(entry),
        master_link_ok=entry.get("master-link-status") == "ok",
        offset=int(entry.get("slave-repl-offset", "0")),
        priority=int(entry["slave-priority"]),
        role_reported=entry.get("role-reported", "slave"),
        role_reported_ms_ago=int(entry.get("role-reported-time", "0")),
    )


def _sentinel_peer(entry: dict[str, str]) -> SentinelPeer:
    return SentinelPeer(
        host=entry["ip"], port=int(entry["port"]), run_id=entry["runid"], flags=_flags(entry)
    )


def _secret_values(options: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(value for name, value in options.items() if name.lower() in SECRET_OPTIONS)
