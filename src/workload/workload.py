"""One unit's workload: observe redis and sentinel, execute the machine's effects.

``Workload`` is the only place where the charm touches Pebble, redis-server and
redis-sentinel. The charm builds one per hook, asks it for an observation,
hands it the effects the machines return, and asks it to reconcile the
configuration. Every call to redis or sentinel has a short timeout
(``workload.admin``) and an unreachable workload is *observed* as down, never
raised into the hook: the machine decides what that means.

Files (``/etc/redis-k8s`` and the sentinel directory are 0700, files 0600,
owned by the ``redis`` user):

- redis container: ``redis.conf`` (no password, ``include``s ``secrets.conf``),
  ``users.acl`` (every user, password hashes only, ``ACL LOAD``ed when it
  changes), the data directory on the ``data`` storage;
- sentinel container: ``sentinel.conf`` on the ``data`` storage (sentinel rewrites
  it and keeps what it learnt there, so it survives a pod restart), and the
  ``client-reconfig-script`` that raises a Pebble notice on every switch.

Redis runs in the role the machine gave it, written in ``redis.conf`` and set at
run time with ``REPLICAOF``: a crash restart by Pebble (persistence on) comes
back in its role with its data. With persistence off Pebble does not restart it
(``workload.layers``): an empty restart would wipe the replicas (rule 8).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping

import ops

from machine.types import (
    HANDOVER_COMPLETED,
    ConfigureRedis,
    ConfigureSentinel,
    Effect,
    Fence,
    HandOver,
    ResetSentinel,
    Role,
    StopWorkload,
    UnitObservation,
)
from workload import admin, layers
from workload.addressing import Addressing
from workload.config import (
    ADMIN_RULES,
    ADMIN_USER,
    FENCE_PRIMARY,
    LEGACY_CLIENT_RULES,
    LEGACY_USER,
    RDB_SAVE_SCHEDULE,
    REPLICATION_RULES,
    REPLICATION_USER,
    SENTINEL_ADMIN_RULES,
    SENTINEL_ADMIN_USER,
    SENTINEL_RULES,
    CharmConfig,
    SentinelAuth,
    acl_rule,
    read_sentinel_auth,
    render_acl_file,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    rewrite_sentinel_auth,
    sentinel_client_rule,
    sentinel_file_text,
    sentinel_user_changes,
)
from workload.config import (
    SENTINEL_USER as SENTINEL_ACL_USER,
)

logger = logging.getLogger(__name__)

REDIS_CONTAINER = "redis"
SENTINEL_CONTAINER = "sentinel"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SERVICE_USER = "redis"
"""redis-server runs as this user; its files belong to it."""
SENTINEL_USER: str | None = None
"""redis-sentinel runs as root: the failover notice its script raises must be public.

A custom notice recorded by a non-root user belongs to that user, and Juju turns
only public (root's) notices into ``pebble-custom-notice`` events
(canonical/operator#2639, open); as the ``redis`` user the failover would reach
the charm only at the next update-status.
"""
CONFIG_DIR = "/etc/redis-k8s"
REDIS_CONF = f"{CONFIG_DIR}/redis.conf"
REDIS_SECRETS = f"{CONFIG_DIR}/secrets.conf"
REPLICATION_PASSWORD_FILE = f"{CONFIG_DIR}/replication-password"
"""The ``replication`` user's password, read by the sync-done check (``layers``)."""
ACL_FILE = f"{CONFIG_DIR}/users.acl"
"""Every redis user, internal and client, as password hashes; reloaded with ``ACL LOAD``."""
DATA_DIR = "/var/lib/redis/data"
SENTINEL_DIR = "/var/lib/redis/sentinel"
SENTINEL_CONF = f"{SENTINEL_DIR}/sentinel.conf"
SWITCH_SCRIPT = f"{CONFIG_DIR}/notify-primary-switch"
OWN_SERVER_TIMEOUT_S = 1.0
"""Timeout of calls to this pod's own redis and sentinel (peers get ``admin``'s 2 s).

Over the pod's loopback a healthy redis answers in well under a millisecond; a
frozen one (the primary Sentinel is failing over, often on the leader's own
pod) must not hold the hook that records the failover for long.
"""
NAMED_PRIMARY_TIMEOUT_S = 0.5
"""Timeout of asking the primary this unit's sentinel names whether it is a master."""
FAILED_OVER_TIMEOUT_S = 0.1
"""Timeout of calls to this pod's redis in the hook of Sentinel's switch away from it.

Sentinel has just failed it over: it found it unresponsive for down-after (or it
was handed over from, and answers at once). A redis this slow on the pod's
loopback is observed as down for one hook, which changes nothing by itself: no
restart, and the next event observes it again.
"""
SYNC_WAIT_S = 3.0
"""How long a hook waits for a replica it just configured to finish its sync."""
RESET_WAIT_S = 5.0
"""How long a hook waits for a reset sentinel to hear the others (about 2 s measured)."""
_GENERATION_NAME = re.compile(r"^(?P<app>[a-z][a-z0-9-]*)-g(?P<generation>[0-9]+)$")


def master_name(app: str, generation: int) -> str:
    """The name Sentinel monitors the primary under in ``generation``."""
    return f"{app}-g{generation}"


def generation_of(app: str, name: str) -> int | None:
    """The generation of a monitored master name, or None if it is not one of ours."""
    match = _GENERATION_NAME.match(name)
    if match is None or match.group("app") != app:
        return None
    return int(match.group("generation"))


@dataclasses.dataclass(frozen=True)
class Passwords:
    """The internal passwords, from the application's Juju secret.

    Each is the password this unit *uses*; ``also_accepted`` are further passwords
    redis accepts for a user while a rotation rolls across the units (``user`` ->
    passwords), so that a unit still using the other one is never locked out.
    """

    admin: str
    replication: str
    sentinel: str
    client: str
    """The ``default`` user's: the password of the legacy ``redis`` relation."""
    also_accepted: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        """Never show a password (in a log line or a traceback)."""
        return "Passwords(<redacted>)"

    def accepted(self, user: str, using: str) -> tuple[str, ...]:
        """Every password redis accepts for ``user``: the one in use first."""
        return (using, *(p for u, p in self.also_accepted if u == user and p != using))

    def acl_users(self) -> dict[str, str]:
        """The internal users' ACL rules (hashes only)."""
        return {
            ADMIN_USER: acl_rule(self.accepted(ADMIN_USER, self.admin), ADMIN_RULES),
            REPLICATION_USER: acl_rule(
                self.accepted(REPLICATION_USER, self.replication), REPLICATION_RULES
            ),
            SENTINEL_ACL_USER: acl_rule(
                self.accepted(SENTINEL_ACL_USER, self.sentinel), SENTINEL_RULES
            ),
            LEGACY_USER: acl_rule(self.accepted(LEGACY_USER, self.client), LEGACY_CLIENT_RULES),
        }


class Workload:
    """The redis and sentinel containers of this unit."""

    def __init__(
        self,
        unit: ops.Unit,
        addressing: Addressing,
        config: CharmConfig | None,
        passwords: Passwords | None,
        *,
        redis_admin: Callable[..., admin.RedisAdmin] | None = None,
        sentinel_admin: Callable[..., admin.SentinelAdmin] | None = None,
        client_users: Mapping[str, str] | None = None,
        leaving: Callable[[], Collection[str]] = tuple,
        failed_over_from_here: bool = False,
    ) -> None:
        """``config`` is None when the operator's config is invalid: nothing is re-rendered.

        ``client_users`` are the client relations' users (name -> ACL rule text, with
        password hashes only), which every unit holds: redis does not replicate ACLs.
        None means they could not be read in this hook: the ACL file is kept.
        ``leaving`` tells the units Juju is removing (``goal-state``); it is asked
        only when this unit hands over. ``failed_over_from_here``: the hook is
        Sentinel's notice that it moved the primary away from this unit's redis,
        which it has just found unresponsive for down-after (or handed over from):
        calls to it get ``FAILED_OVER_TIMEOUT_S``, so that a frozen one does not
        delay the record of the switch.
        """
        self.unit = unit
        self.client_users = None if client_users is None else dict(client_users)
        """None: the client users are unknown in this hook; the ACL file is kept as it is."""
        self.me = unit.name
        self.addressing = addressing
        self.config = config
        self.passwords = passwords
        self.redis = unit.get_container(REDIS_CONTAINER)
        self.sentinel = unit.get_container(SENTINEL_CONTAINER)
        self._redis_admin = redis_admin or admin.RedisAdmin
        self._sentinel_admin = sentinel_admin or admin.SentinelAdmin
        self.handover: str | None = None
        self.unresponsive: set[tuple[str, int]] = set()
        """Servers that timed out in this hook: not waited for again (``workload.admin``)."""
        self.acl_changed = False
        """The ACL file was rewritten in this hook: a running redis must ``ACL LOAD`` it."""
        self.problems: list[str] = []
        """What could not be done in this hook, for the status and the log."""
        self._logged: set[str] = set()
        self.leaving = leaving
        self.own_redis_timeout_s = (
            FAILED_OVER_TIMEOUT_S if failed_over_from_here else OWN_SERVER_TIMEOUT_S
        )

    # ------------------------------------------------------------ clients

    def redis_client(
        self, host: str | None = None, timeout: float = admin.DEFAULT_TIMEOUT_S
    ) -> admin.RedisAdmin:
        """An admin client of this unit's redis (or of the redis at ``host``, with ``timeout``)."""
        password = self.passwords.admin if self.passwords else None
        if host is None or host == self.addressing.own_host:
            return self._redis_admin(
                self.addressing.own_host,
                REDIS_PORT,
                password,
                username=ADMIN_USER,
                timeout=self.own_redis_timeout_s,
                unresponsive=self.unresponsive,
            )
        return self._redis_admin(
            host,
            REDIS_PORT,
            password,
            username=ADMIN_USER,
            timeout=timeout,
            unresponsive=self.unresponsive,
        )

    def sentinel_client(self, host: str | None = None) -> admin.SentinelAdmin:
        """An admin client of this unit's sentinel (or of the sentinel at ``host``)."""
        password = self.passwords.sentinel if self.passwords else None
        if host is None or host == self.addressing.own_host:
            return self._sentinel_admin(
                self.addressing.own_host,
                SENTINEL_PORT,
                password,
                timeout=OWN_SERVER_TIMEOUT_S,
                unresponsive=self.unresponsive,
            )
        return self._sentinel_admin(host, SENTINEL_PORT, password, unresponsive=self.unresponsive)

    # ------------------------------------------------------------ observe

    def observe(self) -> UnitObservation:
        """What redis and sentinel say now. Anything unreachable is observed as down."""
        ready = self.redis.can_connect() and self.sentinel.can_connect()
        if not ready:
            return UnitObservation(handover=self._take_handover())
        defined = layers.REDIS_SERVICE in self.redis.get_plan().services
        fields: dict[str, object] = {"containers_ready": True, "redis_service_defined": defined}
        if defined and self.passwords is not None:
            fields |= self._observe_redis()
        if self.passwords is not None and self.sentinel.exists(SENTINEL_CONF):
            fields |= self._observe_sentinel()
        named = fields.get("sentinel_primary")
        if isinstance(named, str):
            fields["sentinel_primary_is_master"] = (
                fields.get("role") is Role.MASTER if named == self.me else self._is_master(named)
            )
        own_failing_over = bool(fields.pop("own_sentinel_failing_over", False))
        if fields.get("role") is Role.MASTER and named != self.me:
            fields["failover_in_progress"] = own_failing_over or (
                isinstance(named, str) and self._failing_over(named)
            )
        fields["handover"] = self._take_handover()
        return UnitObservation.model_validate(fields)

    def _failing_over(self, unit: str) -> bool:
        """Whether the sentinel on ``unit`` (the primary this one names) runs a failover of it.

        A leaving primary hands over with ``SENTINEL FAILOVER`` on its own sentinel;
        until that one confirms the promotion, the others, this unit's included,
        still name the old primary while the target already answers as a master.
        """
        app = self.addressing.app
        try:
            with self.sentinel_client(self.addressing.host_of(unit)) as client:
                monitored = client.monitored()
        except admin.WorkloadUnreachable:
            return False
        return any(
            m.failover_in_progress for name, m in monitored.items() if generation_of(app, name)
        )

    def _is_master(self, unit: str) -> bool:
        """Whether ``unit``'s redis answers as a master now (asked directly, briefly)."""
        host = self.addressing.host_of(unit)
        try:
            with self.redis_client(host, timeout=NAMED_PRIMARY_TIMEOUT_S) as client:
                return client.replication().role == "master"
        except admin.WorkloadUnreachable as error:
            self._log_once("named primary", logging.INFO, "%s does not answer: %s", unit, error)
            return False

    def _take_handover(self) -> str | None:
        outcome, self.handover = self.handover, None
        return outcome

    def _observe_redis(self) -> dict[str, object]:
        try:
            with self.redis_client() as client:
                replication = client.replication()
                if replication.sync_in_progress:
                    self._await_link(client)  # report the sync's end, not its middle
                    replication = client.replication()
                keys = client.keys()
        except admin.WorkloadUnreachable as error:
            self._log_once("observe redis", logging.INFO, "redis does not answer: %s", error)
            return {"redis_up": False}
        role = Role(replication.role) if replication.role in ("master", "slave") else Role.UNKNOWN
        return {
            "redis_up": True,
            "role": role,
            "master_repl_offset": max(replication.master_repl_offset, 0),
            "keys": keys,
            "master_host": self.addressing.unit_of(replication.master_host),
            "master_link_up": replication.master_link_up,
            "sync_in_progress": replication.sync_in_progress,
        }

    def _observe_sentinel(self) -> dict[str, object]:
        app = self.addressing.app
        try:
            with self.sentinel_client() as client:
                monitored = client.monitored()
                ours = {generation_of(app, name): m for name, m in monitored.items()}
                ours.pop(None, None)
                if not ours:
                    return {"sentinel_up": True}
                generation = max(g for g in ours if g is not None)
                newest = ours[generation]
                named = self._named_by(client, newest)
        except admin.WorkloadUnreachable as error:
            self._log_once("observe sentinel", logging.INFO, "sentinel does not answer: %s", error)
            return {"sentinel_up": False}
        return {
            "sentinel_up": True,
            "sentinel_primary": self.addressing.unit_of(named),
            "own_sentinel_failing_over": newest.failover_in_progress,
            "sentinel_epoch": newest.config_epoch,
            "sentinel_generation": generation,
            "sentinels_seen": newest.other_sentinels,
        }

    @staticmethod
    def _named_by(client: admin.SentinelAdmin, newest: admin.MonitoredPrimary) -> str | None:
        """The host this sentinel names as primary; None while that is about to change.

        While it sees the primary down, it names nobody rather than a primary to go
        back to. While it runs a failover, ``SENTINEL MASTERS`` shows the new epoch
        with the old address until the failover ends (seconds: the replicas are
        re-pointed first); once the promotion is confirmed, Sentinel already tells
        clients the promoted replica (``GET-MASTER-ADDR-BY-NAME``), and so does this.
        This sentinel's unit gets the switch notice at that promotion.
        """
        if newest.failover_in_progress:
            address = client.primary_address(newest.name)
            return address[0] if address is not None and address[0] != newest.host else None
        return newest.host if newest.link_ok else None

    # ------------------------------------------------------------ execute

    def execute(self, effect: Effect) -> bool:
        """Carry out one effect of the unit machine; whether it was (failures are recorded)."""
        problems_before = len(self.problems)
        try:
            match effect:
                case ConfigureRedis(replica_of=primary):
                    self._run_redis(primary=primary, fenced=False)
                case Fence():
                    self._run_redis(primary=None, fenced=True)
                case ConfigureSentinel():
                    self._run_sentinel(effect)
                case HandOver(target=target):
                    self.handover = self._hand_over(target)
                case ResetSentinel(sentinels=sentinels):
                    self._reset_sentinel(sentinels)
                case StopWorkload():
                    self._stop()
                case _:
                    pass  # cluster effects are the charm's (relation data, action results)
        except (admin.WorkloadUnreachable, ops.pebble.ConnectionError) as error:
            name = type(effect).__name__
            self.problems.append(f"{name}: {error}")
            self._log_once(name, logging.WARNING, "could not %s: %s", name, error)
        except ops.pebble.ChangeError as error:  # a service that would not start
            name = type(effect).__name__
            self.problems.append(f"{name}: {error.err}")
            message = "%s: a service did not start: %s"
            self._log_once(name, logging.WARNING, message, name, error.err)
        return len(self.problems) == problems_before

    def _log_once(self, about: str, level: int, message: str, *args: object) -> None:
        """Log only the first failure about one thing in a hook (a line is a juju-log call)."""
        if about not in self._logged:
            self._logged.add(about)
            logger.log(level, message, *args)

    def _run_redis(self, *, primary: str | None, fenced: bool) -> None:
        """Run redis in the given role: files, layer, then ``REPLICAOF`` if it already runs."""
        replica_of = None if primary is None else (self.addressing.host_of(primary), REDIS_PORT)
        if primary == self.me:
            replica_of = None
        if not self._write_redis_files(replica_of=replica_of, fenced=fenced):
            return
        self.redis.add_layer(REDIS_CONTAINER, self._redis_layer(), combine=True)
        running = self.redis.get_services(layers.REDIS_SERVICE)
        if not running or not running[layers.REDIS_SERVICE].is_running():
            self.redis.replan()
            return
        self.load_acl_if_changed()
        target = FENCE_PRIMARY if fenced else replica_of
        with self.redis_client() as client:
            if target is None:
                client.become_primary()
            else:
                client.replicate_from(*target)
                if not fenced:
                    self._await_link(client)

    def _await_link(self, client: admin.RedisAdmin) -> None:
        """Give a new replica a moment to sync, so this hook can already report it synced.

        A small data set syncs in well under ``SYNC_WAIT_S``; a longer sync is
        reported when ``layers.SYNC_DONE_CHECK`` fails (``watch_sync``).
        """
        deadline = time.monotonic() + SYNC_WAIT_S
        while time.monotonic() < deadline:
            replication = client.replication()
            if replication.master_link_up and not replication.sync_in_progress:
                return
            time.sleep(0.1)

    def _redis_layer(self) -> ops.pebble.LayerDict:
        persistence = self.config.persistence if self.config else "aof"
        return layers.redis_layer(
            config_path=REDIS_CONF,
            host=self.addressing.own_host,
            restart_on_failure=persistence != "none",
            user=SERVICE_USER,
            group=SERVICE_USER,
            probe_password_file=REPLICATION_PASSWORD_FILE,
        )

    def watch_sync(self, syncing: bool) -> None:
        """Run ``layers.SYNC_DONE_CHECK`` while this unit syncs, and only then.

        The check fails when the sync is over, which Juju turns into a hook: the
        status then says so without waiting for update-status.
        """
        if not self.redis.can_connect():
            return
        checks = self.redis.get_checks(layers.SYNC_DONE_CHECK)
        if layers.SYNC_DONE_CHECK not in checks:
            return  # not in the plan yet
        running = checks[layers.SYNC_DONE_CHECK].status != ops.pebble.CheckStatus.INACTIVE
        if syncing and not running:
            self.redis.start_checks(layers.SYNC_DONE_CHECK)
        elif running and not syncing:
            self.redis.stop_checks(layers.SYNC_DONE_CHECK)

    def _write_redis_files(self, *, replica_of: tuple[str, int] | None, fenced: bool) -> bool:
        """Write redis.conf and its secrets; False when they cannot be rendered now."""
        if self.passwords is None:
            self.problems.append("waiting for the internal passwords (the leader's secret)")
            return False
        if self.config is None:
            # Invalid config: keep the files as they are (role changes at run time).
            return self.redis.exists(REDIS_CONF)
        conf = render_redis_conf(
            self.config,
            bind=self.addressing.own_host,
            hostname=self.addressing.host_of(self.me),
            data_dir=DATA_DIR,
            secrets_path=REDIS_SECRETS,
            aclfile=ACL_FILE,
            port=REDIS_PORT,
            replica_of=replica_of,
            fenced=fenced,
        )
        secrets = render_redis_secrets(self.passwords.replication)
        for directory in (CONFIG_DIR, DATA_DIR):
            self._private_dir(self.redis, directory)
        if self.client_users is not None or not self.redis.exists(ACL_FILE):
            self.acl_changed |= self._push_if_changed(self.redis, ACL_FILE, self.acl_text())
        self._push_if_changed(self.redis, REDIS_SECRETS, secrets)
        self._push_if_changed(self.redis, REPLICATION_PASSWORD_FILE, self.passwords.replication)
        self._push_if_changed(self.redis, REDIS_CONF, conf)
        return True

    def acl_text(self) -> str:
        """The ACL file: the internal users and every client relation's user."""
        assert self.passwords is not None
        users = (self.client_users or {}) | self.passwords.acl_users()  # internal names win
        return render_acl_file(users)

    def sentinel_users(self) -> dict[str, str]:
        """Sentinel's own users: ``default``, and one per client relation.

        ``default`` is the charm's and the other sentinels'; a client relation's user
        may only discover (the password of its redis user). Without readable client
        users (``client_users`` None): only ``default``.
        """
        assert self.passwords is not None
        accepted = self.passwords.accepted(SENTINEL_ACL_USER, self.passwords.sentinel)
        users = {SENTINEL_ADMIN_USER: acl_rule(accepted, SENTINEL_ADMIN_RULES)}
        for name, rule in (self.client_users or {}).items():
            if name != SENTINEL_ADMIN_USER:
                users[name] = sentinel_client_rule(rule)
        return users

    def _sentinel_auth_passwords(self, current: SentinelAuth) -> dict[str, str]:
        """``auth-pass`` per monitored name of this application in a sentinel file."""
        assert self.passwords is not None
        app = self.addressing.app
        names = current.auth_pass
        return {n: self.passwords.sentinel for n in names if generation_of(app, n) is not None}

    def _sentinel_file_with_auth(self, text: str, current: SentinelAuth) -> str:
        """A stopped sentinel's file (``text``, read as ``current``) with today's passwords."""
        assert self.passwords is not None
        users = self.sentinel_users()
        if self.client_users is None:  # unknown this hook: kept as the file has them
            users = dict(current.rules) | users
        return rewrite_sentinel_auth(
            text,
            users=users,
            sentinel_password=self.passwords.sentinel,
            auth_passwords=self._sentinel_auth_passwords(current),
        )

    def _reconcile_sentinel_auth(self, running: bool) -> None:
        """Make sentinel accept and use the passwords of this hook (a rotation's phase).

        Its file is the truth to compare with: sentinel rewrites it on every change,
        and it is what a restarted sentinel comes back with. A running sentinel is
        changed at run time, then made to rewrite its file; a stopped one's file is
        rewritten by the charm (it would overwrite a running sentinel's edit).
        """
        if self.passwords is None or not self.sentinel.exists(SENTINEL_CONF):
            return
        text = self.sentinel.pull(SENTINEL_CONF).read()
        current = read_sentinel_auth(text)
        only = None if self.client_users is not None else [SENTINEL_ADMIN_USER]
        to_set, to_delete = sentinel_user_changes(current, self.sentinel_users(), only=only)
        auth_pass = {
            name: password
            for name, password in self._sentinel_auth_passwords(current).items()
            if current.auth_pass.get(name) != password
        }
        sentinel_pass = self.passwords.sentinel
        new_sentinel_pass = current.sentinel_pass != sentinel_pass
        if not (to_set or to_delete or auth_pass or new_sentinel_pass):
            return
        if not running:
            self.sentinel.push(
                SENTINEL_CONF,
                self._sentinel_file_with_auth(text, current),
                permissions=0o600,
                user=SENTINEL_USER,
                group=SENTINEL_USER,
            )
            logger.info("rewrote the stopped sentinel's users and passwords")
            return
        with self.sentinel_client() as client:
            for name, rule in to_set.items():
                client.set_user(name, rule)
            for name in to_delete:
                client.delete_user(name)
            if new_sentinel_pass:
                client.set_sentinel_pass(sentinel_pass)
            for name, password in auth_pass.items():
                client.set(name, {"auth-pass": password})
            client.flush_config()
        logger.info(
            "sentinel users set %s, removed %s; passwords changed: %s",
            sorted(to_set),
            to_delete,
            sorted({*(["sentinel-pass"] if new_sentinel_pass else []), *auth_pass}),
        )

    def _run_sentinel(self, effect: ConfigureSentinel) -> None:
        """Monitor ``effect.primary`` under the generation's name.

        A new generation (or no sentinel file yet) writes a fresh sentinel.conf and
        (re)starts sentinel: it forgets what older generations knew. In the same
        generation sentinel keeps what it knows (it is the truth): only the
        quorum is set, at run time.
        """
        name = master_name(self.addressing.app, effect.generation)
        running = self.sentinel.get_services(layers.SENTINEL_SERVICE)
        is_running = bool(running) and running[layers.SENTINEL_SERVICE].is_running()
        if is_running:
            with self.sentinel_client() as client:
                monitored = client.monitored()
                if name in monitored:
                    if monitored[name].quorum != effect.quorum:
                        client.set(name, {"quorum": str(effect.quorum)})
                    return
        layer = layers.sentinel_layer(
            config_path=SENTINEL_CONF,
            host=self.addressing.own_host,
            user=SENTINEL_USER,
            group=SENTINEL_USER,
        )
        if not is_running and self._sentinel_file_monitors(name):
            # A restarted pod: sentinel's own file (on the storage) still knows this
            # generation. Only its address may have changed (a new pod IP), and the
            # container's filesystem, with the switch script, is new.
            self._install_switch_script()
            self._rebind_sentinel_file()
            self.sentinel.add_layer(SENTINEL_CONTAINER, layer, combine=True)
            self.sentinel.replan()
            return
        if self.passwords is None or self.config is None:
            self.problems.append("sentinel cannot be configured without a valid config")
            return
        if is_running:
            # Stopped first: a running sentinel may rewrite the file over the new one.
            self.sentinel.stop(layers.SENTINEL_SERVICE)
        self._private_dir(self.sentinel, SENTINEL_DIR, SENTINEL_USER)
        self._install_switch_script()
        conf = render_sentinel_conf(
            self.config,
            bind=self.addressing.own_host,
            hostname=self.addressing.host_of(self.me),
            data_dir=SENTINEL_DIR,
            primary_host=self.addressing.host_of(effect.primary),
            primary_port=REDIS_PORT,
            quorum=effect.quorum,
            port=SENTINEL_PORT,
            master_name=name,
            client_reconfig_script=SWITCH_SCRIPT,
        )
        secrets = render_sentinel_secrets(
            redis_password=self.passwords.sentinel,
            sentinel_password=self.passwords.sentinel,
            master_name=name,
            redis_user=SENTINEL_ACL_USER,
            users=self.sentinel_users(),
        )
        self.sentinel.push(
            SENTINEL_CONF,
            sentinel_file_text(conf, secrets),
            permissions=0o600,
            user=SENTINEL_USER,
            group=SENTINEL_USER,
        )
        self.sentinel.add_layer(SENTINEL_CONTAINER, layer, combine=True)
        self.sentinel.replan()  # starts it (stopped above, or never started)

    def _install_switch_script(self) -> None:
        """The script sentinel runs on every switch (it refuses to start without it)."""
        self._private_dir(self.sentinel, CONFIG_DIR, SENTINEL_USER)
        self.sentinel.push(
            SWITCH_SCRIPT,
            layers.primary_switch_script(),
            permissions=0o755,
            user=SENTINEL_USER,
            group=SENTINEL_USER,
        )

    def _sentinel_file_monitors(self, name: str) -> bool:
        if not self.sentinel.exists(SENTINEL_CONF):
            return False
        text = self.sentinel.pull(SENTINEL_CONF).read()
        return any(line.startswith(f"sentinel monitor {name} ") for line in text.splitlines())

    def _rebind_sentinel_file(self) -> None:
        """Make sentinel's own file bind this pod's current address, with today's passwords.

        The users and passwords in use are written too (a rotation may have moved on
        while this pod was away); nothing else changes.
        """
        text = self.sentinel.pull(SENTINEL_CONF).read()
        lines = text.splitlines(keepends=True)
        wanted = f"bind {self.addressing.own_host}\n"
        rebound = [wanted if line.startswith("bind ") else line for line in lines]
        if self.passwords is not None:
            text = "".join(rebound)
            rebound = self._sentinel_file_with_auth(text, read_sentinel_auth(text)).splitlines(
                keepends=True
            )
        if rebound != lines:
            self.sentinel.push(
                SENTINEL_CONF,
                "".join(rebound),
                permissions=0o600,
                user=SENTINEL_USER,
                group=SENTINEL_USER,
            )

    def _hand_over(self, target: str | None) -> str:
        """Planned switchover from this primary (``workload.admin.planned_switchover``)."""
        app = self.addressing.app
        with self.redis_client() as primary, self.sentinel_client() as sentinel:
            names = [n for n in sentinel.monitored() if generation_of(app, n) is not None]
            if not names:
                return "this unit's sentinel monitors no primary"
            name = max(names, key=lambda n: generation_of(app, n) or 0)
            replicas = {
                link.host: self.redis_client(link.host) for link in primary.replication().replicas
            }
            peer_sentinels = [self.sentinel_client(peer.host) for peer in sentinel.sentinels(name)]
            try:
                outcome = admin.planned_switchover(
                    primary,
                    sentinel,
                    name,
                    replicas,
                    None if target is None else self.addressing.host_of(target),
                    avoid={self.addressing.host_of(u) for u in self.leaving() if u != self.me},
                    peer_sentinels=peer_sentinels,
                )
            finally:
                for client in [*replicas.values(), *peer_sentinels]:
                    client.close()
        logger.info("switchover from %s: %s", self.me, outcome)
        return outcome if outcome == HANDOVER_COMPLETED else outcome[:120]

    def _reset_sentinel(self, sentinels: int) -> None:
        """``SENTINEL RESET``, then a few seconds for it to hear the other sentinels again."""
        app = self.addressing.app
        with self.sentinel_client() as client:
            names = [n for n in client.monitored() if generation_of(app, n)]
            for name in names:
                client.reset(name)
            deadline = time.monotonic() + RESET_WAIT_S
            while names and time.monotonic() < deadline:
                monitored = client.monitored()
                if all(
                    n in monitored and monitored[n].other_sentinels >= sentinels for n in names
                ):
                    return
                time.sleep(0.2)

    def _stop(self) -> None:
        for container, service in (
            (self.sentinel, layers.SENTINEL_SERVICE),
            (self.redis, layers.REDIS_SERVICE),
        ):
            if container.can_connect() and container.get_services(service):
                container.stop(service)

    # ----------------------------------------------------------- reconcile

    def reconcile_config(self) -> None:
        """Apply a changed config with the least disruption: ``CONFIG SET`` / ``SENTINEL SET``.

        redis.conf is re-rendered in the role redis has now, so that a restart
        keeps it; nothing is restarted.
        """
        if self.config is None or self.passwords is None:
            return
        try:
            self._reconcile_redis(self.config)
            self._reconcile_sentinel(self.config)
        except (admin.WorkloadUnreachable, ops.pebble.ConnectionError) as error:
            self.problems.append(f"config not applied yet: {error}")

    def _reconcile_redis(self, config: CharmConfig) -> None:
        if not (self.redis.can_connect() and self.redis.exists(REDIS_CONF)):
            return
        live = {
            "min-replicas-to-write": str(config.min_replicas_to_write),
            "min-replicas-max-lag": str(config.min_replicas_max_lag_s),
            "maxmemory": str(config.maxmemory_bytes),
            "maxmemory-policy": config.maxmemory_policy,
            "appendonly": "yes" if config.persistence in ("aof", "aof+rdb") else "no",
            "save": RDB_SAVE_SCHEDULE if config.persistence in ("rdb", "aof+rdb") else "",
        }
        if self.passwords is not None:  # a rotation switches replicas to the new password
            live["masterauth"] = self.passwords.replication
        with self.redis_client() as client:
            replication = client.replication()
            current = client.config_get(list(live))
            changed = {k: v for k, v in live.items() if current.get(k) != v}
            if changed:
                client.config_set(changed)
                logger.info("applied %s at run time", ", ".join(sorted(changed)))
        fenced = replication.role == "slave" and replication.master_host == FENCE_PRIMARY[0]
        replica_of = None
        if replication.role == "slave" and not fenced and replication.master_host:
            replica_of = (replication.master_host, replication.master_port or REDIS_PORT)
        self._write_redis_files(replica_of=replica_of, fenced=fenced)
        self.load_acl_if_changed()
        # A new restart policy applies at the next start; replan would restart redis now.
        self.redis.add_layer(REDIS_CONTAINER, self._redis_layer(), combine=True)

    def _reconcile_sentinel(self, config: CharmConfig) -> None:
        if not self.sentinel.can_connect():
            return
        services = self.sentinel.get_services(layers.SENTINEL_SERVICE)
        if not services:
            return
        self._reconcile_sentinel_auth(services[layers.SENTINEL_SERVICE].is_running())
        with self.sentinel_client() as client:
            for name, primary in client.monitored().items():
                if generation_of(self.addressing.app, name) is None:
                    continue
                wanted = {
                    "down-after-milliseconds": (
                        primary.down_after_ms,
                        config.sentinel_down_after_ms,
                    ),
                    "failover-timeout": (
                        primary.failover_timeout_ms,
                        config.sentinel_failover_timeout_ms,
                    ),
                }
                changed = {k: str(new) for k, (old, new) in wanted.items() if old != new}
                if changed:
                    client.set(name, changed)

    def load_acl_if_changed(self) -> None:
        """``ACL LOAD`` the file written in this hook, if it changed and redis runs."""
        if not self.acl_changed:
            return
        running = self.redis.get_services(layers.REDIS_SERVICE)
        if not running or not running[layers.REDIS_SERVICE].is_running():
            return  # redis reads the file when it starts
        with self.redis_client() as client:
            client.acl_load()
        self.acl_changed = False
        logger.info("reloaded the ACL file")

    # ------------------------------------------------------------- helpers

    @staticmethod
    def _private_dir(container: ops.Container, path: str, user: str | None = SERVICE_USER):
        if not container.exists(path):
            container.make_dir(path, make_parents=True, permissions=0o700, user=user, group=user)

    @staticmethod
    def _push_if_changed(container: ops.Container, path: str, text: str) -> bool:
        if container.exists(path) and container.pull(path).read() == text:
            return False
        container.push(path, text, permissions=0o600, user=SERVICE_USER, group=SERVICE_USER)
        return True
