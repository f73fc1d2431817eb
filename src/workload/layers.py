"""Pebble layers for the redis and sentinel containers, and Sentinel's switch script.

This module owns what Pebble runs and watches in the two workload containers and
the text of the ``client-reconfig-script`` that turns a Sentinel failover into a
Pebble custom notice. Pure functions, no I/O: the caller adds the layers and
pushes the script. Measured with Pebble v1.26.0 and Redis 7.0.15
(``tests/integration/test_pebble_layers.py`` checks every claim below):

- **Restarting redis in place can wipe the cluster** (design rule 8). Pebble
  restarts a SIGKILLed redis-server in about 0.5 s, long before Sentinel's
  down-after, so Sentinel never fails over; with persistence off the restarted
  primary comes back empty and its replicas resync to the empty dataset. So with
  persistence off Pebble must not restart redis at all, whatever the exit: the
  charm decides (``restart_on_failure=False``).
- **A TCP check cannot see a frozen redis.** The kernel completes the handshake
  for a SIGSTOPped process, so ``tcp:`` checks pass. The checks here send a real
  ``PING`` with ``redis-cli`` under ``timeout``: any answer proves the event loop
  runs. They need no password: redis and sentinel answer an unauthenticated
  ``PING`` with ``NOAUTH``, which counts as alive (redis-cli 7.0.15 prints
  ``NOAUTH Authentication required.`` and exits 0; a refused connection exits 1;
  a frozen server never answers and ``timeout`` exits 124). The reply is matched,
  not the exit status, so a redis-cli that exits 1 on an error reply still works.
  No secret is in the check command, the layer or any environment (rule 7).
- **A failing check must not restart anything behind the charm's back**: each
  service says ``on-check-failure: ignore`` for its check, and the checks have
  no ``level``, so Pebble's ``/v1/health?level=alive|ready`` (which Juju uses as
  the pod's Kubernetes liveness and readiness probes) ignores them too. The
  charm hears ``pebble-check-failed`` / ``pebble-check-recovered`` and decides.
- **Pebble kills a timed-out exec check, not its children**: it sends SIGKILL to
  the command it started only. The check is ``sh -c`` (to match the reply), so
  redis-cli runs under ``timeout``, one second shorter than the check's own
  timeout, and cannot be left behind hanging on a frozen server.
- **Redis and Sentinel rewrite their config files with mode 0644 & ~umask**, and
  the rewrite copies the secrets in (``workload.config``). Both services start
  under ``umask 077`` (a ``sh -c`` that execs the server, so Pebble signals the
  server itself) and their rewrites stay 0600.

The workload image must provide ``sh``, ``timeout`` (coreutils) and
``redis-cli`` besides the servers; Ubuntu and Debian images do.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping

from ops.pebble import CheckDict, LayerDict, ServiceDict

from workload.config import REPLICATION_USER

REDIS_SERVICE = "redis"
"""The Pebble service (and layer label) running redis-server in the redis container."""

SENTINEL_SERVICE = "sentinel"
"""The Pebble service (and layer label) running redis-sentinel in the sentinel container."""

REDIS_CHECK = "redis-ping"
"""The redis container's check: redis-server answers ``PING``."""

SENTINEL_CHECK = "sentinel-ping"
"""The sentinel container's check: redis-sentinel answers ``PING``."""

SYNC_DONE_CHECK = "redis-sync-done"
"""The redis container's check that *fails* once a syncing replica has caught up.

``startup: disabled``: the charm starts it when a hook ends with the unit still
syncing (a large dataset takes longer than the hook waits) and stops it once the
unit is a replica. Its failure is the point: Juju turns it into
``pebble-check-failed``, so the charm observes the finished sync and the status
says so at once, not at the next update-status. Measured with Pebble v1.26.0:
re-adding the same layer or a replan neither starts nor restarts such a check.
"""

PRIMARY_SWITCH_NOTICE = "redis-k8s.charm.juju.is/primary-switch"
"""The custom notice key raised on every Sentinel switch.

Pebble 1.26 only accepts keys of the form ``domain.tld/path`` (lower-case
letters, digits and inner dashes in each part, at most 256 bytes).
"""

DEFAULT_CHECK_PERIOD_S = 5
DEFAULT_CHECK_TIMEOUT_S = 3
DEFAULT_CHECK_THRESHOLD = 3

REDIS_KILL_DELAY = "20s"
"""How long Pebble waits after SIGTERM before SIGKILL when it stops redis.

redis-server saves an RDB on SIGTERM when snapshots are on, and a replica that
has just synced refuses to exit while it writes its first AOF ("Writing initial
AOF, can't exit"): Pebble's default of 5 s would cut such a save short.
"""

DEFAULT_NOTIFY_TIMEOUT_S = 10
"""The switch script gives up on Pebble after this long (Sentinel kills it at 60 s)."""


def redis_layer(
    *,
    config_path: str,
    restart_on_failure: bool,
    user: str | None = None,
    group: str | None = None,
    host: str = "127.0.0.1",
    port: int = 6379,
    check_period_s: int = DEFAULT_CHECK_PERIOD_S,
    check_timeout_s: int = DEFAULT_CHECK_TIMEOUT_S,
    check_threshold: int = DEFAULT_CHECK_THRESHOLD,
    probe_password_file: str | None = None,
) -> LayerDict:
    """The redis container's layer: the ``redis`` service and its ``PING`` check.

    Args:
        config_path: the redis.conf the service starts from.
        restart_on_failure: whether Pebble restarts redis when it exits. Pass
            False when persistence is off: a restarted empty primary would wipe
            its replicas (rule 8). Then Pebble leaves redis stopped after any
            exit, a crash or a clean one (``SHUTDOWN NOSAVE`` exits 0), and the
            charm decides how it comes back. True restarts it after 1 s, doubling
            up to 30 s while it keeps failing.
        user: the user redis runs as (the check runs in the same context).
        group: the group redis runs as.
        host: where the check finds redis; it must be an address redis binds.
        port: redis' port.
        check_period_s: how often the check pings.
        check_timeout_s: how long one ping may take, at least 2 s (redis-cli gets 1 s less).
        check_threshold: consecutive failures before the check is down.
        probe_password_file: the ``replication`` user's password, for the
            ``SYNC_DONE_CHECK`` (none without it).

    The default check (every 5 s, 3 s timeout, 3 failures) marks a frozen redis
    down 12 to 17 s after it froze (the next tick, two more periods, then the
    2 s ping; measured 17 s when frozen right after a success), a dead one 2 s
    sooner (its ping is refused at once). That is deliberately slower than Sentinel (down-after
    defaults to 3 s): Sentinel decides failovers, the check only tells the charm
    that its own process stopped answering. A 2 s ping with three strikes rides
    out the stalls a busy redis has (a fork for BGSAVE, an fsync).
    """
    layer = _layer(
        summary="redis-server, supervised for the redis-k8s charm",
        service=REDIS_SERVICE,
        program="redis-server",
        config_path=config_path,
        user=user,
        group=group,
        on_exit="restart" if restart_on_failure else "ignore",
        kill_delay=REDIS_KILL_DELAY,
        check=REDIS_CHECK,
        check_dict=_ping_check(
            REDIS_SERVICE, host, port, check_period_s, check_timeout_s, check_threshold
        ),
    )
    if probe_password_file is not None:
        layer["checks"][SYNC_DONE_CHECK] = _sync_done_check(host, port, probe_password_file)
    return layer


def _sync_done_check(host: str, port: int, password_file: str) -> CheckDict:
    """Fails (``exit 1``) once redis is a replica whose link is ``connected``, or a primary.

    ``ROLE`` as the ``replication`` user, whose password is read from
    ``password_file`` into ``REDISCLI_AUTH`` inside the shell: never in argv, the
    layer or Pebble's environment. Any other answer, or none, passes: the ``PING``
    check tells a dead redis, this one only that a sync is over.
    """
    role = shlex.join(
        ["redis-cli", "--no-auth-warning", "--user", REPLICATION_USER]
        + ["-h", host, "-p", str(port), "ROLE"]
    )
    script = (
        f"REDISCLI_AUTH=$(cat {shlex.quote(password_file)}) || exit 0; export REDISCLI_AUTH; "
        f"role=$(timeout 1 {role} 2>&1); "
        'case "$role" in master*|slave*connected*) echo "sync done: $role" | head -n 1; '
        "exit 1;; esac; exit 0"
    )
    return {
        "override": "replace",
        "startup": "disabled",
        "period": "1s",
        "timeout": "2s",
        "threshold": 1,
        "exec": {"command": shlex.join(["sh", "-c", script]), "service-context": REDIS_SERVICE},
    }


def sentinel_layer(
    *,
    config_path: str,
    user: str | None = None,
    group: str | None = None,
    host: str = "127.0.0.1",
    port: int = 26379,
    check_period_s: int = DEFAULT_CHECK_PERIOD_S,
    check_timeout_s: int = DEFAULT_CHECK_TIMEOUT_S,
    check_threshold: int = DEFAULT_CHECK_THRESHOLD,
) -> LayerDict:
    """The sentinel container's layer: the ``sentinel`` service and its ``PING`` check.

    Sentinel is always restarted when it exits: everything it knows (the primary,
    the epoch, the other sentinels and replicas) is in its own file, which it
    rewrites on every change, so a restarted sentinel carries on where it was.

    Args:
        config_path: the sentinel.conf the service starts from (sentinel owns it).
        user: the user sentinel runs as (the check runs in the same context).
            Sentinel also runs the switch script as this user, and Pebble keeps
            a notice private to the user who raised it: a non-root user's notice
            is only seen by Juju agents that ask Pebble for every user's notices.
        group: the group sentinel runs as.
        host: where the check finds sentinel; it must be an address sentinel binds.
        port: sentinel's port.
        check_period_s: how often the check pings.
        check_timeout_s: how long one ping may take, at least 2 s (redis-cli gets 1 s less).
        check_threshold: consecutive failures before the check is down.
    """
    return _layer(
        summary="redis-sentinel, supervised for the redis-k8s charm",
        service=SENTINEL_SERVICE,
        program="redis-sentinel",
        config_path=config_path,
        user=user,
        group=group,
        on_exit="restart",
        kill_delay=None,
        check=SENTINEL_CHECK,
        check_dict=_ping_check(
            SENTINEL_SERVICE, host, port, check_period_s, check_timeout_s, check_threshold
        ),
    )


def primary_switch_script(
    *,
    pebble_binary: str = "/charm/bin/pebble",
    pebble_dir: str = "/charm/container",
    pebble_socket: str | None = None,
    notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
) -> str:
    """The ``client-reconfig-script`` that raises ``PRIMARY_SWITCH_NOTICE`` in Pebble.

    Sentinel runs it on every switch of the primary, on every sentinel (the
    leader of the failover and the observers), as ``<master-name> <role>
    <state> <from-ip> <from-port> <to-ip> <to-port>``; ``role`` is ``leader`` or
    ``observer``, and with ``announce-hostnames`` the "ips" are host names. It
    runs ``pebble notify`` with those as data (read them back with
    ``PrimarySwitch.from_notice_data``); Juju turns the notice into a
    ``pebble-custom-notice`` event on the charm.

    Measured: the leader's call is ``<name> leader start <old> <port> <new> <port>``.
    Pebble keeps a notice private to the uid that raised it, and Sentinel runs
    the script as the sentinel service's user: a notice raised as a non-root user
    is invisible to a plain ``get_notices()`` (``users=all`` shows it). Juju must
    therefore ask for every user's notices to turn it into an event (reportedly
    fixed in Juju 3.6.25 and 4.0.13); with older agents run sentinel as root.

    The script always exits 0, within ``notify_timeout_s``: Sentinel retries a
    script that exits 1 and kills one that runs longer than 60 s, and a notice is
    only a hint (update-status is the backstop). Sentinel's arguments are only
    ever passed quoted.

    Args:
        pebble_binary: the pebble executable inside the sentinel container
            (Juju mounts its own at ``/charm/bin/pebble``).
        pebble_dir: Pebble's directory, set as ``PEBBLE``.
        pebble_socket: Pebble's socket, set as ``PEBBLE_SOCKET`` (which the pebble
            client prefers to ``$PEBBLE/.pebble.socket``). Juju serves the
            workload's Pebble at ``/charm/container/pebble.socket``; the default
            is ``pebble.socket`` in ``pebble_dir``.
        notify_timeout_s: how long ``pebble notify`` may take (where the image
            has ``timeout``).
    """
    socket = pebble_socket if pebble_socket is not None else f"{pebble_dir}/pebble.socket"
    q = shlex.quote
    return f"""#!/bin/sh
# Sentinel's client-reconfig-script (written by the redis-k8s charm): raise a
# Pebble custom notice on every primary switch; Juju turns it into a
# pebble-custom-notice event. Arguments, from Sentinel:
#   <master-name> <role> <state> <from-ip> <from-port> <to-ip> <to-port>
# Always exits 0, quickly: Sentinel retries a failed script and kills a slow one.
PEBBLE={q(pebble_dir)}
PEBBLE_SOCKET={q(socket)}
export PEBBLE PEBBLE_SOCKET
if command -v timeout >/dev/null 2>&1; then
    bounded="timeout {int(notify_timeout_s)}"
else
    bounded=""
fi
$bounded {q(pebble_binary)} notify {q(PRIMARY_SWITCH_NOTICE)} \\
    "master=$1" "role=$2" "state=$3" \\
    "from-host=$4" "from-port=$5" "to-host=$6" "to-port=$7" >/dev/null 2>&1
exit 0
"""


@dataclasses.dataclass(frozen=True)
class PrimarySwitch:
    """What a ``PRIMARY_SWITCH_NOTICE`` says: Sentinel moved ``master`` to another host."""

    master: str
    role: str
    state: str
    from_host: str
    from_port: int
    to_host: str
    to_port: int

    @classmethod
    def from_notice_data(cls, data: Mapping[str, str]) -> PrimarySwitch | None:
        """Read a notice's data; None when it is not what ``primary_switch_script`` sends."""
        try:
            return cls(
                master=data["master"],
                role=data["role"],
                state=data["state"],
                from_host=data["from-host"],
                from_port=int(data["from-port"]),
                to_host=data["to-host"],
                to_port=int(data["to-port"]),
            )
        except (KeyError, ValueError):
            return None


def _layer(
    *,
    summary: str,
    service: str,
    program: str,
    config_path: str,
    user: str | None,
    group: str | None,
    on_exit: str,
    kill_delay: str | None,
    check: str,
    check_dict: CheckDict,
) -> LayerDict:
    server = f"umask 077 && exec {program} {shlex.quote(config_path)}"
    service_dict: ServiceDict = {
        "override": "replace",
        "summary": f"{program} {config_path}",
        "command": shlex.join(["sh", "-c", server]),
        "startup": "enabled",
        "on-success": on_exit,
        "on-failure": on_exit,
        "on-check-failure": {check: "ignore"},
    }
    if on_exit == "restart":
        service_dict |= {"backoff-delay": "1s", "backoff-factor": 2, "backoff-limit": "30s"}
    if kill_delay is not None:
        service_dict["kill-delay"] = kill_delay
    if user is not None:
        service_dict["user"] = user
    if group is not None:
        service_dict["group"] = group
    return {
        "summary": summary,
        "services": {service: service_dict},
        "checks": {check: check_dict},
    }


def _ping_check(
    service: str, host: str, port: int, period_s: int, timeout_s: int, threshold: int
) -> CheckDict:
    """An exec check that PINGs without a password; any answer means alive (see above)."""
    if timeout_s < 2 or period_s < 1:
        raise ValueError(
            f"check timeout must be at least 2 s, period 1 s: {timeout_s}, {period_s}"
        )
    if threshold < 1:
        raise ValueError(f"check threshold must be at least 1: {threshold}")
    if not 1 <= port <= 65535:
        raise ValueError(f"not a TCP port: {port}")
    ping = shlex.join(["redis-cli", "-h", host, "-p", str(port), "PING"])
    script = (
        f"reply=$(timeout {timeout_s - 1} {ping} 2>&1); "
        'case "$reply" in PONG|NOAUTH*|LOADING*) exit 0;; esac; '
        'echo "no answer to PING: $reply"; exit 1'
    )
    return {
        "override": "replace",
        "period": f"{period_s}s",
        "timeout": f"{timeout_s}s",
        "threshold": threshold,
        "exec": {"command": shlex.join(["sh", "-c", script]), "service-context": service},
    }
