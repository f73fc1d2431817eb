"""HA fault scenarios on a real Juju controller on Kubernetes, with jubilant.

The same claims as ``test_ha_scenarios.py`` (which runs them on
``redis-k8s-local``), against a real deployment: a fault under a continuous
writer, then the same end state. Skipped unless the ``juju`` CLI has a current
controller (``juju_support.skip_without_controller``); the scenarios that delete
pods are also skipped without a usable ``kubectl`` (see below).

Deployment. Every scenario deploys the packed charm (``$REDIS_K8S_CHARM``, else
the newest ``*.charm`` in the repository root) into a fresh
``jubilant.temp_model()`` (``update-status-hook-interval=60m``, so what the
charm learns it learns from Pebble notices and checks, as on the local cluster),
3 units (4 where stated), ``sentinel-down-after-ms=2000``, and waits until every
unit is active and idle with no hook in error. A fresh model per scenario keeps
one fault from leaking into the next; it costs a deployment (pods scheduled,
image pulled once per node: a few minutes) and a model destruction per
scenario, so expect one to two hours for the module. ``KEEP_MODEL=1`` keeps the
models for a look at them.

Observing and writing from inside the pods. The units' host names
(``<app>-<n>.<app>-endpoints``) only resolve inside the cluster, so every
observation and every write runs in a unit's container through ``juju ssh
--container`` (``in_container``), bounded by ``timeout`` inside the container.
No password is ever an argument or printed; each reaches ``redis-cli`` only as
``REDISCLI_AUTH``. The sentinel container's ``sentinel.conf`` holds sentinel's
own password (``sentinel sentinel-pass``: the sentinels' ``default`` user has
the same one, as hashes in ``user`` lines) and the ACL user and password sentinel uses on
redis (``sentinel auth-user``/``auth-pass``, allowed ``INFO``): the scripts read
them there. Since the ACL users, the admin password is in no file (``users.acl``
holds hashes only): the test asks the ``credentials`` action once per model
(user ``charm-admin``) and hands the password to a script on its standard input
(``juju ssh`` forwards it); the writer keeps it, while it runs, in a 0600 file
in its 0700 directory on the unit's storage. One ``juju ssh`` into a sentinel
container observes the whole cluster (``observe``): ``INFO replication`` of
every unit's redis and ``SENTINEL MASTERS`` of every unit's sentinel, over the
stable host names.

The writer (``PodWriter``) is a shell loop started in the background in the
sentinel container of a unit the scenario does not fault: it asks the sentinels
(its own first) for the primary, ``SET key:<i> <i>``, and appends ``i`` and the
pod's clock to a file on the unit's storage for every ``OK``; after an error it
asks Sentinel again. At the end it is stopped, the file read, and the
acknowledged keys are read back (``MGET``) from the final primary: acknowledged,
present, lost, longest pause between acknowledgements. Fault times are taken
with the pod clocks too (the fault script prints its ``date`` just before the
signal), so the loss bounds compare clocks of the cluster's nodes, assumed
synchronised (NTP) to well under the 0.5 s window. A pod deletion's time is the
writer pod's clock just before the request, which loosens that bound by the
request's latency (about a second). The writer is a shell loop, one
``redis-cli`` per write: some tens of writes a second, not a load test. In the
sentinel-minority scenario every unit has something frozen; the writer runs in
the primary's sentinel container, whose sentinel stays up (only its redis is
frozen). When every pod is deleted the writer dies with its pod and is started
again in the new one, carrying on from its file.

``assert_converged`` checks what the local one checks: exactly one unit's redis
reports master; every replica's ``master_host`` is its host name, link up,
caught up; every sentinel monitors one master, that one, with quorum n//2+1,
n-1 other sentinels and n-1 replicas (no ghosts); and Juju's status agrees: the
application message starts with ``primary <unit>;``, the units say ``primary``
and ``replica of <unit>``, every agent idle. Every wait polls with a deadline.

Faults: freeze/thaw and kill signal the main ``redis-server`` (redis container)
or ``redis-sentinel`` (sentinel container) process, found by ``/proc/<pid>/comm``
(``pkill -x`` without needing procps in the image). Pod deletion uses
``kubectl delete pod --grace-period=1`` (``$KUBECTL``, default ``kubectl``,
e.g. ``KUBECTL='microk8s kubectl'``; its cluster must be the controller's and
the model's namespace visible): Kubernetes' immediate shutdown (SIGTERM, SIGKILL
a second later) that keeps the StatefulSet's one pod per identity; a forced
deletion could run two pods of one identity and hold the storage. Kubernetes
removes the highest-numbered units on scale-down (``juju remove-unit
--num-units``), so the scenarios that remove the primary's unit first move the
primary there with the switchover action (planned, nothing lost) and then
remove it.

Not covered here: the primary partitioned from the majority. Cutting a pod off
from the others but not from clients needs a NetworkPolicy and a CNI that
enforces it, and the writer runs inside the cluster, so the cut would have to
spare it; that cannot be done robustly on an arbitrary controller's cluster. It
stays covered on the local cluster (iptables), with its min-replicas-max-lag
loss bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.integration.juju_support import (
    APP,
    REDIS_IMAGE,
    charm_path,
    skip_without_controller,
)

pytestmark = pytest.mark.integration

skip_without_controller()

import jubilant  # noqa: E402  (only needed when a controller is reachable)

T = TypeVar("T")

DOWN_AFTER_MS = 2000
ASYNC_REPLICATION_WINDOW_S = 0.5
"""A write acknowledged this shortly before the primary froze may not have reached a replica."""
KILL_DOWN_AFTER_MS = 5000
"""For the SIGKILL scenario: Pebble restarts redis in about 1 s (backoff 1 s), far inside it."""
MODEL_CONFIG: dict[str, jubilant.ConfigValue] = {
    "update-status-hook-interval": "60m",
    "logging-config": "<root>=INFO",
}
DEPLOY_TIMEOUT_S = 20 * 60
SETTLE_TIMEOUT_S = 10 * 60
CONVERGE_TIMEOUT_S = 5 * 60
FAILOVER_TIMEOUT_S = 60
ACTION_WAIT_S = 300
SSH_TIMEOUT_S = 90
"""Bound of one script run in a container (``timeout`` inside the container)."""

SERVICES = {"redis": ("redis", "redis-server"), "sentinel": ("sentinel", "redis-sentinel")}
"""Service -> (its container, its process name as ``/proc/<pid>/comm`` shows it)."""
WRITER_DIR = "/var/lib/redis/ha-writer"
"""On the unit's storage (mounted in the sentinel container): it survives a pod deletion."""

SENTINEL_SECRETS_READ = r"""CONF=/var/lib/redis/sentinel/sentinel.conf
SP=$(sed -n 's/^sentinel sentinel-pass "\{0,1\}\([^" ]*\)"\{0,1\}$/\1/p' "$CONF" | head -n 1)
SU=$(sed -n 's/^sentinel auth-user [^ ]* "\{0,1\}\([^" ]*\)"\{0,1\}$/\1/p' "$CONF" | head -n 1)
SA=$(sed -n 's/^sentinel auth-pass [^ ]* "\{0,1\}\([^" ]*\)"\{0,1\}$/\1/p' "$CONF" | head -n 1)"""
"""Sets, from the sentinel container's file: SP, sentinel's own password; SU and SA, the
ACL user (none: ``default``) and password sentinel uses on redis, which may run ``INFO``."""

SENTINEL_SECRETS = (
    SENTINEL_SECRETS_READ
    + r"""
if [ -z "$SP" ] || [ -z "$SA" ]; then echo "no passwords in $CONF" >&2; exit 2; fi"""
)

ADMIN_FROM_STDIN = r"""IFS= read -r AP || true
if [ -z "$AP" ]; then echo "no admin password on stdin" >&2; exit 2; fi"""
"""Sets AP, the admin user's password, from the script's standard input (never argv)."""

REDIS_ADDRESS = r"""H=$(sed -n 's/^bind \([^ ]*\).*$/\1/p' /etc/redis-k8s/redis.conf | head -n 1)
case "$H" in ''|0.0.0.0|'*'|::) H=127.0.0.1 ;; esac"""
"""Sets H, the address redis listens on, in the redis container."""

SIGNAL_SCRIPT = r"""COMM=@COMM@
pids=""
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = "$COMM" ] && pids="$pids ${p#/proc/}"
done
main=""
for p in $pids; do
  state=$(sed -n 's/^State:[[:space:]]*\(.\).*$/\1/p' "/proc/$p/status" 2>/dev/null)
  parent=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)
  [ -n "$state" ] && [ "$state" != Z ] || continue
  case " $pids " in *" $parent "*) continue ;; esac
  main="$main $p"
done
if [ -z "$main" ]; then echo "no $COMM process running" >&2; exit 3; fi
date +%s.%N
kill -s @SIGNAL@ $main"""
"""Signal the service's main process (not a child it forked for a save); print the time first."""

WRITER_PID = r"""D=@DIR@
writer_pid() {
  for p in /proc/[0-9]*; do
    if [ "$(tr '\000' ' ' < "$p/cmdline" 2>/dev/null)" = "sh $D/loop.sh " ]; then
      echo "${p#/proc/}"
      return 0
    fi
  done
  return 1
}"""

WRITER_LOOP = r"""D=@DIR@
SENTINELS="@SENTINELS@"
read_secrets() {
@SECRETS@
  AP=$(cat "$D/admin" 2>/dev/null)
}
ask() {  # ask HOST WORDS...: what that sentinel answers, nothing if it does not
  _h=$1
  shift
  REDISCLI_AUTH="$SP" timeout 2 redis-cli -h "$_h" -p 26379 "$@" 2>/dev/null
}
i=1
if [ -s "$D/acked" ]; then
  last=$(cut -d ' ' -f 1 "$D/acked" | sort -n | tail -n 1)
  case "$last" in ''|*[!0-9]*) last=0 ;; esac
  i=$((last + 1))
fi
errors=0
if [ -s "$D/errors" ]; then errors=$(cat "$D/errors"); fi
case "$errors" in ''|*[!0-9]*) errors=0 ;; esac
host=""
port=""
while [ ! -e "$D/stop" ]; do
  if [ -z "$host" ]; then
    read_secrets
    for s in $SENTINELS; do
      name=$(ask "$s" SENTINEL MASTERS | sed -n 2p)
      [ -n "$name" ] || continue
      addr=$(ask "$s" SENTINEL GET-MASTER-ADDR-BY-NAME "$name")
      h=$(printf '%s\n' "$addr" | sed -n 1p)
      p=$(printf '%s\n' "$addr" | sed -n 2p)
      case "$p" in ''|*[!0-9]*) continue ;; esac
      host=$h
      port=$p
      break
    done
    if [ -z "$host" ]; then
      errors=$((errors + 1))
      echo "$errors" > "$D/errors"
      sleep 0.1
      continue
    fi
  fi
  reply=$(REDISCLI_AUTH="$AP" timeout 2 redis-cli --user @ADMIN_USER@ -h "$host" -p "$port" \
    SET "key:$i" "$i" 2>/dev/null)
  if [ "$reply" = OK ]; then
    echo "$i $(date +%s.%N)" >> "$D/acked"
    i=$((i + 1))
    sleep @INTERVAL@
  else
    errors=$((errors + 1))
    echo "$errors" > "$D/errors"
    host=""
    sleep 0.05
  fi
done
touch "$D/done"
"""
"""The writer's loop (run as ``sh $D/loop.sh``): one acknowledged write, one line."""

WRITER_START = r"""@PID@
@ADMIN@
umask 077
mkdir -p "$D"
printf '%s\n' "$AP" > "$D/admin"
if running=$(writer_pid); then echo "already running as $running"; exit 0; fi
rm -f "$D/stop" "$D/done"
cat > "$D/loop.sh" <<'LOOP'
@LOOP@
LOOP
if command -v setsid >/dev/null 2>&1; then
  setsid nohup sh "$D/loop.sh" </dev/null >>"$D/loop.log" 2>&1 &
else
  nohup sh "$D/loop.sh" </dev/null >>"$D/loop.log" 2>&1 &
fi
echo started"""


# ---------------------------------------------------------------- names and waiting


def unit_number(unit: str) -> int:
    return int(unit.rsplit("/", 1)[1])


def host(unit: str) -> str:
    """The unit's stable host name, as redis and sentinel announce it."""
    return f"{APP}-{unit_number(unit)}.{APP}-endpoints"


def pod(unit: str) -> str:
    """The unit's pod (the StatefulSet's pod of the same ordinal)."""
    return f"{APP}-{unit_number(unit)}"


def unit_names(juju: jubilant.Juju) -> list[str]:
    return sorted(juju.status().get_units(APP), key=unit_number)


def app_message(juju: jubilant.Juju) -> str:
    return juju.status().apps[APP].app_status.message


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll ``check`` until it returns something truthy, or fail saying what did not happen.

    A failed assertion, a failed ``juju ssh`` or an unparsable answer counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
        except (
            AssertionError,
            subprocess.SubprocessError,
            ValueError,
            KeyError,
            IndexError,
        ) as error:
            last, value = error, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last})")
        time.sleep(1)


def in_container(
    juju: jubilant.Juju,
    unit: str,
    container: str,
    script: str,
    timeout: float = SSH_TIMEOUT_S,
    *,
    stdin: str | None = None,
) -> str:
    """Run a shell script in a unit's container (``juju ssh --container``); its stdout.

    Juju joins the command's words and runs them with ``sh -c``; one ``sh -c
    <quoted script>`` keeps the script whole, and ``timeout`` bounds it in the
    container. ``stdin`` (a password) reaches the script on its standard input:
    ``Juju.ssh`` has no stdin, so then the same command goes through ``Juju.cli``.
    A non-zero exit raises ``jubilant.CLIError``.
    """
    command = f"timeout {int(timeout)} sh -c {shlex.quote(script)}"
    if stdin is None:
        return juju.ssh(unit, command, container=container)
    return juju.cli("ssh", "--container", container, unit, command, stdin=stdin)


@dataclasses.dataclass(frozen=True)
class Admin:
    """The admin user's credentials, from the ``credentials`` action (never printed)."""

    username: str
    password: str = dataclasses.field(repr=False)


_admins: dict[str, Admin] = {}


def admin(juju: jubilant.Juju) -> Admin:
    """The admin credentials of the model's application (asked once per model)."""
    key = str(juju.model)
    if key not in _admins:
        task = juju.run(f"{APP}/leader", "credentials", wait=ACTION_WAIT_S)
        _admins[key] = Admin(task.results["username"], task.results["password"])
    return _admins[key]


def redis_cli(juju: jubilant.Juju, unit: str, *args: str) -> str:
    """``redis-cli ARGS`` as the admin user against the unit's own redis (its redis container)."""
    user = admin(juju)
    words = " ".join(shlex.quote(a) for a in args)
    script = (
        f"{ADMIN_FROM_STDIN}\n{REDIS_ADDRESS}\n"
        f'REDISCLI_AUTH="$AP" timeout 10 redis-cli --user {shlex.quote(user.username)}'
        f' -h "$H" -p 6379 {words}'
    )
    return in_container(juju, unit, "redis", script, stdin=user.password + "\n").strip()


# ---------------------------------------------------------------- observing


@dataclasses.dataclass
class Observation:
    """What one sentinel container saw of the cluster's servers, over their host names."""

    replication: dict[str, dict[str, str]]
    """unit -> ``INFO replication`` fields, for the redis servers that answered."""
    replication_again: dict[str, dict[str, str]]
    """The same, read after everything else (replica offsets are compared to the first read)."""
    monitored: dict[str, list[dict[str, str]]]
    """unit -> ``SENTINEL MASTERS`` as dicts, for the sentinels that answered."""
    errors: dict[str, str]
    """"<unit> redis" / "<unit> sentinel" -> what came back instead of an answer."""


def observe(
    juju: jubilant.Juju,
    targets: list[str],
    *,
    via: list[str],
    redis: bool = True,
    sentinel: bool = True,
) -> Observation:
    """Observe the targets' redis and/or sentinel from the first of ``via`` that answers."""
    info = ("INFO replication", 6379, "$SA")
    passes = []
    if redis:
        passes.append(("redis", *info))
    if sentinel:
        passes.append(("sentinel", "SENTINEL MASTERS", 26379, "$SP"))
    if redis:
        passes.append(("redis-again", *info))
    lines = [SENTINEL_SECRETS]
    for kind, command, port, secret in passes:
        for unit in targets:
            lines.append(f'echo "@@{kind} {unit}"')
            user = '${SU:+--user "$SU"} ' if port == 6379 else ""
            lines.append(
                f'REDISCLI_AUTH="{secret}" timeout 3 redis-cli {user}-h {host(unit)} -p {port}'
                f" {command} 2>&1"
            )
    lines.append('echo "@@end"')
    script = "\n".join(lines)
    failures = []
    for observer in via:
        try:
            out = in_container(juju, observer, "sentinel", script)
        except subprocess.SubprocessError as error:  # the pod is gone or not up yet
            failures.append(f"{observer}: {error}")
            continue
        return parse_observation(out)
    raise AssertionError(f"no unit could observe the cluster: {failures}")


def parse_observation(out: str) -> Observation:
    seen = Observation({}, {}, {}, {})
    sections: list[tuple[str, str, list[str]]] = []
    ended = False
    for raw in out.splitlines():
        line = raw.rstrip("\r")
        if line == "@@end":
            ended = True
            break
        if line.startswith("@@"):
            kind, unit = line[2:].split(" ", 1)
            sections.append((kind, unit, []))
        elif sections:
            sections[-1][2].append(line)
    if not ended:
        raise ValueError(f"truncated observation: {out[-500:]!r}")
    for kind, unit, body in sections:
        while body and not body[-1].strip():
            body.pop()
        if kind in ("redis", "redis-again"):
            fields = dict(line.split(":", 1) for line in body if ":" in line)
            if "role" in fields:
                target = seen.replication if kind == "redis" else seen.replication_again
                target[unit] = fields
            else:
                seen.errors[f"{unit} redis"] = " ".join(body) or "no answer"
        elif not body:
            seen.monitored[unit] = []
        elif body[0] == "name" and len(body) % 2 == 0:
            entries: list[dict[str, str]] = []
            for key, value in zip(body[::2], body[1::2], strict=True):
                if key == "name":
                    entries.append({})
                entries[-1][key] = value
            seen.monitored[unit] = entries
        else:
            seen.errors[f"{unit} sentinel"] = " ".join(body)
    return seen


def observers(units: list[str], avoid: tuple[str, ...] = ()) -> list[str]:
    """The units to observe from, the ones a scenario faults last."""
    return [u for u in units if u not in avoid] + [u for u in units if u in avoid]


def named_by(juju: jubilant.Juju, unit: str) -> str:
    """The host of the primary the unit's own sentinel names (observed from its container)."""
    seen = observe(juju, [unit], via=[unit], redis=False)
    entries = seen.monitored.get(unit)
    assert entries, (unit, seen.errors)
    return entries[0]["ip"]


def sentinel_names_other_than(juju: jubilant.Juju, old: str) -> bool:
    """A sentinel of another unit names a primary other than ``old``."""
    others = [u for u in unit_names(juju) if u != old]
    seen = observe(juju, others, via=others, redis=False)
    return any(entries and entries[0]["ip"] != host(old) for entries in seen.monitored.values())


def assert_converged(
    juju: jubilant.Juju, expected_units: int, timeout: float = CONVERGE_TIMEOUT_S
) -> str:
    """One primary; replicas linked and caught up; sentinels agree, no ghosts; Juju agrees.

    Returns:
        The primary's unit name.
    """

    def converged() -> str:
        units = unit_names(juju)
        assert len(units) == expected_units, units
        seen = observe(juju, units, via=observers(units))
        roles = {
            u: seen.replication[u]["role"]
            if u in seen.replication
            else seen.errors.get(f"{u} redis")
            for u in units
        }
        masters = [u for u, role in roles.items() if role == "master"]
        assert len(masters) == 1, roles
        primary = masters[0]
        primary_offset = int(seen.replication[primary]["master_repl_offset"])
        for unit in units:
            if unit == primary:
                continue
            info = seen.replication_again.get(unit)
            assert info is not None, (unit, seen.errors.get(f"{unit} redis"))
            assert info.get("master_host") == host(primary), (unit, info.get("master_host"))
            assert info.get("master_link_status") == "up", (unit, "link down")
            offset = int(info["slave_repl_offset"])
            assert offset >= primary_offset, (unit, "behind", offset, primary_offset)
        for unit in units:
            entries = seen.monitored.get(unit)
            assert entries is not None, (unit, seen.errors.get(f"{unit} sentinel"))
            assert len(entries) == 1, (unit, entries)
            entry = entries[0]
            assert entry["ip"] == host(primary), (unit, entry["ip"])
            assert int(entry["quorum"]) == expected_units // 2 + 1, (unit, entry["quorum"])
            others = int(entry["num-other-sentinels"])
            assert others == expected_units - 1, (unit, "other sentinels", others)
            replicas = int(entry["num-slaves"])
            assert replicas == expected_units - 1, (unit, "replicas", replicas)
        status = juju.status()
        message = status.apps[APP].app_status.message
        assert message.startswith(f"primary {primary};"), message
        shown = {u: s.workload_status.message for u, s in status.get_units(APP).items()}
        wanted = {u: "primary" if u == primary else f"replica of {primary}" for u in units}
        assert shown == wanted, shown
        assert jubilant.all_agents_idle(status, APP), "hooks still running"
        return primary

    return wait_for(
        f"{expected_units} units converged on one primary, sentinels and Juju agreeing",
        converged,
        timeout,
    )


# ---------------------------------------------------------------- faults


def signal_service(juju: jubilant.Juju, unit: str, service: str, signal: str) -> float:
    """Send ``signal`` to the unit's redis-server or redis-sentinel; the pod's clock before."""
    container, comm = SERVICES[service]
    script = SIGNAL_SCRIPT.replace("@COMM@", comm).replace("@SIGNAL@", signal)
    out = in_container(juju, unit, container, script, timeout=30)
    return float(out.split()[0])


def freeze(juju: jubilant.Juju, unit: str, service: str = "redis") -> float:
    """SIGSTOP: the process stops answering, silently, until thawed."""
    return signal_service(juju, unit, service, "STOP")


def thaw(juju: jubilant.Juju, unit: str, service: str = "redis") -> float:
    return signal_service(juju, unit, service, "CONT")


def kill(juju: jubilant.Juju, unit: str, service: str = "redis") -> float:
    """SIGKILL: Pebble restarts it (unless persistence is off, for redis)."""
    return signal_service(juju, unit, service, "KILL")


@dataclasses.dataclass(frozen=True)
class Kubectl:
    """The ``kubectl`` of the controller's cluster."""

    command: tuple[str, ...]

    def run(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"kubectl {args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def require_model(self, juju: jubilant.Juju) -> str:
        """The model's namespace; skip the test if this kubectl does not see its pods."""
        namespace = juju.status().model.name
        result = subprocess.run(
            [*self.command, "get", "pods", "-n", namespace, "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or f"pod/{APP}-0" not in result.stdout:
            pytest.skip(
                f"kubectl does not see the model's pods in namespace {namespace}"
                f" (another cluster?): {result.stderr.strip()[:200]}"
            )
        return namespace

    def delete_pods(self, namespace: str, units: list[str]) -> None:
        """Delete the units' pods in one request each, at once; return when they are gone.

        ``--grace-period=1``: SIGTERM, SIGKILL a second later. The StatefulSet
        recreates each pod with its storage.
        """
        self.run(
            "delete",
            "pod",
            *(pod(u) for u in units),
            "-n",
            namespace,
            "--grace-period=1",
            "--wait=true",
            "--timeout=120s",
        )


# ---------------------------------------------------------------- the writer


@dataclasses.dataclass
class WriteReport:
    """What a `PodWriter` saw."""

    acknowledged: int
    present: int
    lost: list[int]
    longest_pause_s: float
    errors: int

    def __str__(self) -> str:
        return (
            f"{self.acknowledged} writes acknowledged, {self.present} present,"
            f" {len(self.lost)} lost, longest pause {self.longest_pause_s:.2f} s,"
            f" {self.errors} failed attempts"
        )


class PodWriter:
    """A client in a unit's sentinel container writing ``key:<i>`` to the primary Sentinel names.

    Restarted (``start`` again) it carries on from the last acknowledged ``i``:
    its file is on the unit's storage, so it survives the unit's pod.
    """

    def __init__(
        self, juju: jubilant.Juju, unit: str, units: list[str], interval_s: float = 0.02
    ) -> None:
        """Write from ``unit``'s sentinel container; ask its sentinel first, then the others'."""
        self.juju = juju
        self.unit = unit
        self.sentinels = [host(unit), *(host(u) for u in units if u != unit)]
        self.interval_s = interval_s
        self.admin = admin(juju)
        self.acknowledged: dict[int, float] = {}
        self._started_after: tuple[int, float] | None = None

    def __enter__(self) -> PodWriter:
        self.start()
        self.wait_for_a_write()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.stop()
        except (AssertionError, subprocess.SubprocessError):
            if exc_type is None:
                raise  # otherwise the scenario's own failure is the one to see

    def _run(
        self, script: str, timeout: float = SSH_TIMEOUT_S, *, with_admin: bool = False
    ) -> str:
        stdin = self.admin.password + "\n" if with_admin else None
        return in_container(self.juju, self.unit, "sentinel", script, timeout, stdin=stdin)

    def start(self) -> bool:
        """Start the loop in the background (if it does not run already); True when done."""
        loop = (
            WRITER_LOOP.replace("@SECRETS@", SENTINEL_SECRETS_READ)
            .replace("@SENTINELS@", " ".join(self.sentinels))
            .replace("@INTERVAL@", f"{self.interval_s:g}")
            .replace("@DIR@", WRITER_DIR)
            .replace("@ADMIN_USER@", shlex.quote(self.admin.username))
        )
        pid = WRITER_PID.replace("@DIR@", WRITER_DIR)
        self._started_after = self.latest()
        script = (
            WRITER_START.replace("@PID@", pid)
            .replace("@ADMIN@", ADMIN_FROM_STDIN)
            .replace("@LOOP@", loop)
        )
        self._run(script, with_admin=True)
        return True

    def wait_for_a_write(self, timeout: float = 60) -> None:
        """Return once the loop started last has had a write acknowledged."""

        def acknowledged_since_start() -> bool:
            latest = self.latest()
            return latest is not None and latest != self._started_after

        wait_for("a first acknowledged write", acknowledged_since_start, timeout)

    def latest(self) -> tuple[int, float] | None:
        """The last acknowledged write: (i, the pod's clock when acknowledged)."""
        out = self._run(f"tail -n 1 {WRITER_DIR}/acked 2>/dev/null || true").split()
        return (int(out[0]), float(out[1])) if len(out) == 2 else None

    def now(self) -> float:
        """The writer pod's clock."""
        return float(self._run("date +%s.%N"))

    def writes_continue(self, after: float) -> bool:
        """A write was acknowledged after ``after`` (the pods' clock)."""
        latest = self.latest()
        return latest is not None and latest[1] > after

    def running(self) -> bool:
        pid = WRITER_PID.replace("@DIR@", WRITER_DIR)
        out = self._run(f"{pid}\nif writer_pid >/dev/null; then echo yes; else echo no; fi")
        return out.strip() == "yes"

    def stop(self, timeout: float = 60) -> None:
        """Stop the loop (if its pod still runs it) and read what it acknowledged."""
        self._run(f"mkdir -p {WRITER_DIR} && touch {WRITER_DIR}/stop")
        wait_for("the writer to stop", lambda: not self.running(), timeout)
        self._run(f"rm -f {WRITER_DIR}/admin")
        self.acknowledged = {}
        for line in self._run(f"cat {WRITER_DIR}/acked 2>/dev/null || true").splitlines():
            words = line.split()
            if len(words) == 2:
                self.acknowledged[int(words[0])] = float(words[1])

    def errors(self) -> int:
        out = self._run(f"cat {WRITER_DIR}/errors 2>/dev/null || echo 0").strip()
        return int(out) if out.isdigit() else 0

    def report(self, primary: str) -> WriteReport:
        """Compare what was acknowledged with what the final primary holds (``MGET``)."""
        script = (
            f"{ADMIN_FROM_STDIN}\n"
            f"cut -d ' ' -f 1 {WRITER_DIR}/acked | sed 's/^/key:/'"
            f' | REDISCLI_AUTH="$AP" xargs -r -n 500 timeout 30'
            f" redis-cli --user {shlex.quote(self.admin.username)}"
            f" -h {host(primary)} -p 6379 MGET"
        )
        values = self._run(script, timeout=900, with_admin=True).split()
        present = {int(v) for v in values if v.isdigit()} & set(self.acknowledged)
        acknowledged = sorted(self.acknowledged)
        times = [self.acknowledged[i] for i in acknowledged]
        pauses = [b - a for a, b in zip(times, times[1:], strict=False)]
        return WriteReport(
            acknowledged=len(acknowledged),
            present=len(present),
            lost=[i for i in acknowledged if i not in present],
            longest_pause_s=max(pauses, default=0.0),
            errors=self.errors(),
        )


# ---------------------------------------------------------------- deployments


def _print_debug_log(juju: jubilant.Juju) -> None:
    with contextlib.suppress(subprocess.SubprocessError):
        log = juju.cli("debug-log", "--replay", "--no-tail")
        print("\n".join(log.splitlines()[-1000:]))


@contextlib.contextmanager
def deployed(
    request: pytest.FixtureRequest,
    *,
    units: int = 3,
    config: dict[str, jubilant.ConfigValue] | None = None,
) -> Iterator[jubilant.Juju]:
    """A fresh model with the packed charm, active and idle; its debug log if the test failed."""
    charm = charm_path()
    options: dict[str, jubilant.ConfigValue] = {"sentinel-down-after-ms": DOWN_AFTER_MS}
    options.update(config or {})
    with jubilant.temp_model(keep=bool(os.environ.get("KEEP_MODEL")), config=MODEL_CONFIG) as juju:
        juju.wait_timeout = SETTLE_TIMEOUT_S
        failed_before = request.session.testsfailed
        try:
            juju.deploy(
                charm,
                APP,
                num_units=units,
                resources={"redis-image": REDIS_IMAGE},
                config=options,
            )
            juju.wait(
                lambda status: (
                    len(status.get_units(APP)) == units
                    and jubilant.all_active(status, APP)
                    and jubilant.all_agents_idle(status, APP)
                ),
                error=jubilant.any_error,
                delay=2,
                timeout=DEPLOY_TIMEOUT_S,
            )
        except BaseException:
            _print_debug_log(juju)
            raise
        yield juju
        if request.session.testsfailed > failed_before:
            _print_debug_log(juju)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[jubilant.Juju]:
    with deployed(request) as juju:
        yield juju


@pytest.fixture
def four_units(request: pytest.FixtureRequest) -> Iterator[jubilant.Juju]:
    with deployed(request, units=4) as juju:
        yield juju


@pytest.fixture
def cluster_without_persistence(request: pytest.FixtureRequest) -> Iterator[jubilant.Juju]:
    with deployed(request, config={"persistence": "none"}) as juju:
        yield juju


@pytest.fixture
def cluster_with_kill_down_after(request: pytest.FixtureRequest) -> Iterator[jubilant.Juju]:
    """A down-after Pebble's restart of a killed redis beats even on a loaded cluster."""
    with deployed(request, config={"sentinel-down-after-ms": KILL_DOWN_AFTER_MS}) as juju:
        yield juju


@pytest.fixture
def kubectl() -> Kubectl:
    """The cluster's kubectl, checked before anything is deployed; else the test is skipped."""
    command = tuple(shlex.split(os.environ.get("KUBECTL", "kubectl")))
    if not command or shutil.which(command[0]) is None:
        pytest.skip(
            "deleting pods needs kubectl for the controller's cluster"
            " (on PATH, or KUBECTL='microk8s kubectl')"
        )
    try:
        probe = subprocess.run(
            [*command, "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.SubprocessError as error:
        pytest.skip(f"kubectl cannot reach a cluster: {error}")
    if probe.returncode != 0:
        pytest.skip(f"kubectl cannot reach a cluster: {probe.stderr.strip()[:200]}")
    return Kubectl(command)


def switch_over_to(juju: jubilant.Juju, target: str, expected_units: int) -> str:
    """The switchover action on the leader, to ``target``; returns the converged primary."""
    juju.run(f"{APP}/leader", "switchover", {"target": target}, wait=ACTION_WAIT_S)
    primary = assert_converged(juju, expected_units)
    assert primary == target, (primary, target)
    return primary


def wait_units(juju: jubilant.Juju, count: int, *, idle: bool = False) -> None:
    juju.wait(
        lambda status: (
            len(status.get_units(APP)) == count
            and (not idle or jubilant.all_agents_idle(status, APP))
        ),
        delay=2,
        timeout=SETTLE_TIMEOUT_S,
    )


def hook_ran(juju: jubilant.Juju, hook: str) -> bool:
    """The model's log (INFO: the unit agents' ``ran "<hook>" hook`` lines) shows ``hook``."""
    return f'ran "{hook}" hook' in juju.cli("debug-log", "--replay", "--no-tail")


# ---------------------------------------------------------------- scenarios


def test_primary_frozen_past_down_after_fails_over_and_rejoins_as_replica(cluster):
    juju = cluster
    old = assert_converged(juju, 3)
    units = unit_names(juju)
    writer_unit = next(u for u in units if u != old)
    with PodWriter(juju, writer_unit, units) as writer:
        frozen_at = freeze(juju, old)
        wait_for(
            "Sentinel to fail over",
            lambda: sentinel_names_other_than(juju, old),
            FAILOVER_TIMEOUT_S,
        )
        wait_for("writes to the new primary", lambda: writer.writes_continue(frozen_at), 60)
        thawed_at = thaw(juju, old)
        wait_for("writes after the thaw", lambda: writer.writes_continue(thawed_at), 60)
    new = assert_converged(juju, 3)
    assert new != old
    assert hook_ran(juju, "sentinel-pebble-custom-notice")
    report = writer.report(new)
    print(f"frozen primary: {report}")
    late = [
        i for i in report.lost if writer.acknowledged[i] < frozen_at - ASYNC_REPLICATION_WINDOW_S
    ]
    assert late == [], f"lost writes acknowledged well before the freeze: {late[:10]}"


def test_primary_pod_deleted_fails_over_and_comes_back_as_a_replica_with_its_data(
    kubectl, cluster
):
    juju = cluster
    namespace = kubectl.require_model(juju)
    old = assert_converged(juju, 3)
    units = unit_names(juju)
    writer_unit = next(u for u in units if u != old)
    with PodWriter(juju, writer_unit, units) as writer:
        deleted_at = writer.now()  # just before the request: the bound is looser by its latency
        kubectl.delete_pods(namespace, [old])
        wait_for(
            "Sentinel to fail over",
            lambda: sentinel_names_other_than(juju, old),
            FAILOVER_TIMEOUT_S,
        )
        wait_for("writes to the new primary", lambda: writer.writes_continue(deleted_at), 60)
    new = assert_converged(juju, 3, timeout=SETTLE_TIMEOUT_S)
    assert new != old
    report = writer.report(new)
    print(f"deleted primary pod: {report}")
    late = [
        i for i in report.lost if writer.acknowledged[i] < deleted_at - ASYNC_REPLICATION_WINDOW_S
    ]
    assert late == [], f"lost writes acknowledged well before the deletion: {late[:10]}"
    assert redis_cli(juju, old, "DBSIZE") == redis_cli(juju, new, "DBSIZE")  # back with the data


def test_redis_killed_on_the_primary_with_aof_restarts_in_place_losing_nothing(
    cluster_with_kill_down_after,
):
    juju = cluster_with_kill_down_after
    old = assert_converged(juju, 3)
    units = unit_names(juju)
    writer_unit = next(u for u in units if u != old)
    with PodWriter(juju, writer_unit, units) as writer:
        killed_at = kill(juju, old)
        wait_for("writes after the kill", lambda: writer.writes_continue(killed_at + 1), 60)
    new = assert_converged(juju, 3)
    assert new == old, "Pebble restarted it before Sentinel's down-after"
    report = writer.report(new)
    print(f"redis SIGKILL with AOF: {report}")
    assert report.lost == [], report


def test_planned_switchover_to_a_named_replica_loses_nothing(cluster):
    juju = cluster
    old = assert_converged(juju, 3)
    units = unit_names(juju)
    target = next(u for u in units if u != old)
    writer_unit = next(u for u in units if u not in (old, target))
    with PodWriter(juju, writer_unit, units) as writer:
        juju.run(f"{APP}/leader", "switchover", {"target": target}, wait=ACTION_WAIT_S)
        wait_for(
            "Sentinel to name the target",
            lambda: named_by(juju, target) == host(target),
            FAILOVER_TIMEOUT_S,
        )
        switched_at = writer.now()
        wait_for("writes to the new primary", lambda: writer.writes_continue(switched_at), 60)
    new = assert_converged(juju, 3)
    assert new == target
    report = writer.report(new)
    print(f"planned switchover: {report}")
    assert report.lost == [], report


def test_removing_the_primary_hands_over_first_and_loses_nothing(cluster):
    """Kubernetes removes the highest-numbered unit: the primary is moved there first."""
    juju = cluster
    primary = assert_converged(juju, 3)
    units = unit_names(juju)
    old = units[-1]
    if primary != old:
        switch_over_to(juju, old, 3)
    with PodWriter(juju, units[0], units) as writer:
        juju.remove_unit(APP, num_units=1)
        wait_units(juju, 2)
        gone_at = writer.now()
        wait_for("writes after the removal", lambda: writer.writes_continue(gone_at), 60)
    wait_units(juju, 2, idle=True)
    assert old not in unit_names(juju), "Kubernetes removed another unit than the last"
    new = assert_converged(juju, 2)
    assert new != old
    report = writer.report(new)
    print(f"primary removed: {report}")
    assert report.lost == [], report


def test_a_replica_pod_restart_resyncs_without_a_failover(kubectl, cluster):
    juju = cluster
    namespace = kubectl.require_model(juju)
    primary = assert_converged(juju, 3)
    units = unit_names(juju)
    replica, writer_unit = (u for u in units if u != primary)

    def replica_serves() -> bool:
        seen = observe(juju, [replica], via=[writer_unit], sentinel=False)
        return seen.replication_again[replica].get("master_link_status") == "up"

    with PodWriter(juju, writer_unit, units) as writer:
        kubectl.delete_pods(namespace, [replica])  # returns once the old pod is gone
        wait_for("the replica to serve again", replica_serves, SETTLE_TIMEOUT_S)
    final = assert_converged(juju, 3, timeout=SETTLE_TIMEOUT_S)
    assert final == primary, "a replica restart must not fail over"
    report = writer.report(final)
    print(f"replica pod restarted: {report}")
    assert report.lost == [], report


def test_scale_up_after_a_failover_gives_quorum_3_and_data_on_the_new_unit(cluster):
    juju = cluster
    old = assert_converged(juju, 3)
    freeze(juju, old)
    wait_for(
        "Sentinel to fail over", lambda: sentinel_names_other_than(juju, old), FAILOVER_TIMEOUT_S
    )
    thaw(juju, old)
    first = assert_converged(juju, 3)
    assert redis_cli(juju, first, "SET", "before-scale-up", "kept") == "OK"
    juju.add_unit(APP)
    wait_units(juju, 4, idle=True)
    final = assert_converged(juju, 4, timeout=SETTLE_TIMEOUT_S)  # quorum 3 checked there
    assert final == first
    new = unit_names(juju)[-1]
    assert redis_cli(juju, new, "GET", "before-scale-up") == "kept"


def test_a_killed_primary_with_persistence_off_never_empties_the_replicas(
    cluster_without_persistence,
):
    juju = cluster_without_persistence
    old = assert_converged(juju, 3)
    assert redis_cli(juju, old, "SET", "must-survive", "yes") == "OK"
    wait_for(
        "the key on every replica",
        lambda: all(redis_cli(juju, u, "GET", "must-survive") == "yes" for u in unit_names(juju)),
    )
    kill(juju, old)
    wait_for(
        "Sentinel to fail over", lambda: sentinel_names_other_than(juju, old), FAILOVER_TIMEOUT_S
    )
    final = assert_converged(juju, 3)
    assert final != old, "Pebble must not restart an empty primary in place"
    for unit in unit_names(juju):
        assert redis_cli(juju, unit, "GET", "must-survive") == "yes", unit


def test_all_pods_deleted_at_once_come_back_with_the_most_advanced_primary_and_all_data(
    kubectl, cluster
):
    """Every pod deleted in one request (a node loss, nearly); each comes back with its storage.

    The writer runs in one of the pods, so it dies with them; its file is on
    the unit's storage, and it is started again once its pod is back, carrying
    on from its last acknowledged write. Every acknowledged write must be there.
    """
    juju = cluster
    namespace = kubectl.require_model(juju)
    old = assert_converged(juju, 3)
    units = unit_names(juju)
    writer = PodWriter(juju, units[0], units)
    writer.start()
    try:
        writer.wait_for_a_write()
        wait_for("writes flowing", lambda: (writer.latest() or (0, 0.0))[0] > 50, 60)
        deleted_at = writer.now()
        kubectl.delete_pods(namespace, units)  # the writer dies with its pod
        wait_for("the writer started again in the new pod", writer.start, SETTLE_TIMEOUT_S)
        wait_for(
            "writes after every pod came back",
            lambda: writer.writes_continue(deleted_at + 5),
            SETTLE_TIMEOUT_S,
        )
    except BaseException:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            writer.stop()
        raise
    writer.stop()
    wait_units(juju, 3, idle=True)
    new = assert_converged(juju, 3, timeout=SETTLE_TIMEOUT_S)
    report = writer.report(new)
    print(f"all pods deleted (primary before: {old}, after: {new}): {report}")
    assert report.lost == [], report


def test_removing_two_units_at_once_the_primary_among_them_loses_nothing(four_units):
    """Kubernetes removes the two highest-numbered units: the primary is moved to one first."""
    juju = four_units
    primary = assert_converged(juju, 4)
    units = unit_names(juju)
    old = units[-1]
    if primary != old:
        switch_over_to(juju, old, 4)
    with PodWriter(juju, units[0], units) as writer:
        juju.remove_unit(APP, num_units=2)
        wait_units(juju, 2)
        gone_at = writer.now()
        wait_for("writes after the removal", lambda: writer.writes_continue(gone_at), 60)
    wait_units(juju, 2, idle=True)
    remaining = unit_names(juju)
    assert remaining == units[:2], f"Kubernetes removed other units than the last two: {remaining}"
    new = assert_converged(juju, 2)
    assert new in remaining
    report = writer.report(new)
    print(f"primary and a replica removed together: {report}")
    assert report.lost == [], report


def test_a_sentinel_minority_cannot_fail_over_and_says_so_until_the_others_return(cluster):
    """Two of three sentinels frozen: below quorum, nothing may fail over.

    The one sentinel left sees the frozen primary down but alone is not a
    quorum, so the primary stays; the application status says failover is
    impossible. When the sentinels return the cluster is HA again, same primary.
    The writer runs in the primary's sentinel container (its sentinel is the one
    left up; only its redis is frozen).
    """
    juju = cluster
    primary = assert_converged(juju, 3)
    units = unit_names(juju)
    replicas = [u for u in units if u != primary]
    with PodWriter(juju, primary, units) as writer:
        for unit in replicas:
            freeze(juju, unit, "sentinel")
        wait_for(
            "the application status to say failover is impossible",
            lambda: "failover impossible" in app_message(juju),
            timeout=120,
        )
        freeze(juju, primary)
        held_s = 3 * DOWN_AFTER_MS / 1000
        hold_until = time.monotonic() + held_s  # from after the freeze returned
        checks = 0
        while time.monotonic() < hold_until:  # long enough for a quorum to act
            try:
                named = named_by(juju, primary)
            except (AssertionError, subprocess.SubprocessError, ValueError):
                continue  # not observed this time (``checks`` counts the observations)
            assert named == host(primary), f"a minority failed over to {named}"
            checks += 1
        assert checks > 0, "the sentinel left up could not be observed while the primary froze"
        thawed_at = thaw(juju, primary)
        wait_for("writes after the thaw", lambda: writer.writes_continue(thawed_at), 60)
        for unit in replicas:
            thaw(juju, unit, "sentinel")
        wait_for(
            "the application status to say HA again",
            lambda: ", sentinel quorum 2/3" in app_message(juju),
            timeout=120,
        )
    final = assert_converged(juju, 3)
    assert final == primary
    assert named_by(juju, primary) == host(primary)
    report = writer.report(final)
    print(f"sentinel minority: {report}")
    assert report.lost == [], report
