"""Pods on this machine: one unit's redis and sentinel containers, each a real Pebble.

A Kubernetes pod of the charm has two workload containers (``redis`` and
``sentinel``), each running Pebble as PID 1, a shared ``data`` volume, its own
IP and a stable DNS name. Here a pod is:

- an address of its own on the loopback (``127.0.1.<n+1>`` for unit ``n``: all of
  127/8 is local), and the host name ``<app>-<n>.<app>-endpoints`` (and the pod
  name ``<app>-<n>``) in ``/etc/hosts``, on lines tagged ``# redis-k8s-local:<id>``;
- a directory ``<state>/pods/<app>-<n>`` (``PodSpec.root``)::

      data/                    the storage: /var/lib/redis in both containers, kept
      containers/<container>/  /charm/container (Juju's per-container emptyDir):
                               pebble.socket, pebble/ (PEBBLE, layers, state)
      fs/<container>/etc-redis-k8s/   /etc/redis-k8s (the container's own filesystem)
      logs/<container>.log     Pebble's output, appended over the pod's lives
      run/<container>.json     the host pids of the container's processes

- per container, one ``pebble run --create-dirs --hold --verbose`` (Juju's
  arguments) as PID 1 of its own PID, mount and UTS namespaces::

      unshare --pid --fork --kill-child --mount-proc --mount --uts
              --propagation private sh -c CONTAINER_SCRIPT <pod>-<container>
              <tag> <root>/containers/<container> <pebble binary>
              <root>/fs/<container>/etc-redis-k8s <root>/data <app>-<n>

  where the script mounts a small tmpfs on ``/charm`` (so the host's ``/charm``
  stays empty), binds the container's directory on ``/charm/container`` and the
  Pebble binary on ``/charm/bin/pebble``, binds ``/etc/redis-k8s`` and
  ``/var/lib/redis``, sets the host name to the pod name and execs Pebble with
  ``PEBBLE=/charm/container/pebble`` and
  ``PEBBLE_SOCKET=/charm/container/pebble.socket``, as Juju's Kubernetes provider
  does. Every service and exec Pebble starts inherits these namespaces: the
  charm's redis-server sees its pod's files, and the sentinel's switch script
  reaches its own Pebble with ``/charm/bin/pebble notify``.

The mounts are private to each namespace (``--propagation private``): nothing
shows on the host. From the host, a container's Pebble is
``<root>/containers/<container>/pebble.socket``; the charm's ``dispatch`` runs in
a mount namespace of its own where ``<root>/containers`` is ``/charm/containers``
(``Pods.dispatch_argv``), which is where ops looks for the sockets.

A pod deleted (``Pods.delete``) dies at once: its Pebbles get SIGKILL, and the
kernel kills every process of their PID namespaces with them. Its storage is
kept; what Kubernetes does not keep (the containers' filesystems and their
``/charm/container``, hence Pebble's plan, state and notices) is wiped, and a
pod started again starts from nothing but its data, like a new pod.

Faults (``kill``, ``freeze``, ``thaw``, ``partition``, ``heal``) act on the real
processes and on ``iptables``' INPUT chain (rules tagged with the same comment).
Only root can do any of this.

Everything of ours carries the state directory's tag (``Pods.tag``):
``cleanup`` removes it all, whichever process started it, and ``leftovers``
lists what remains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ops import pebble

MARKER = "redis-k8s-local"
"""Tags our /etc/hosts lines, iptables rules, tmpfs mounts and processes' environment."""
CONTAINERS = ("redis", "sentinel")
DEFAULT_NETWORK = "127.0.1"
"""Unit ``n`` of an application gets ``<network>.<n+1>``."""
HOSTS_FILE = Path("/etc/hosts")
MOUNT_POINTS = ("/charm", "/etc/redis-k8s", "/var/lib/redis")
"""Where the containers' and dispatch's namespaces mount things: they must exist on the host."""
SERVICES = {
    "redis": ("redis", "redis-server"),
    "sentinel": ("sentinel", "redis-sentinel"),
}
"""Service name -> (its container, the process name, as ``/proc/<pid>/comm`` shows it)."""
PEBBLE_DIR = "/charm/container/pebble"
PEBBLE_SOCKET = "/charm/container/pebble.socket"
ENV_MARKER = "REDIS_K8S_LOCAL_POD"
"""Set in every container's Pebble (so in its services): ``<tag>/<pod>/<container>``.

And in what ``dispatch_argv`` runs, as ``<tag>/<pod>/dispatch``.
"""
DISPATCH = "dispatch"
MAX_SOCKET_PATH = 107
"""A unix socket's path fits in ``sun_path`` (108 bytes with its NUL): keep the state dir short."""
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_APP = re.compile(r"^[a-z][a-z0-9-]*$")
_NETWORK = re.compile(r"^127\.([0-9]{1,3})\.([0-9]{1,3})$")

# $1 tag (the tmpfs' source), $2 /charm/container, $3 the pebble binary,
# $4 /etc/redis-k8s, $5 /var/lib/redis, $6 the host name. unshare has already
# made every mount private and mounted this PID namespace's /proc.
CONTAINER_SCRIPT = """set -e
mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev "$1" /charm
mkdir /charm/container /charm/bin
mount --bind "$2" /charm/container
: > /charm/bin/pebble
mount --bind "$3" /charm/bin/pebble
mount --bind "$4" /etc/redis-k8s
mount --bind "$5" /var/lib/redis
printf '%s' "$6" > /proc/sys/kernel/hostname
exec /charm/bin/pebble run --create-dirs --hold --verbose
"""

# $1 tag, $2 <root>/containers, $3 the host name, $4 the marker, then the command.
DISPATCH_SCRIPT = f"""set -e
mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev "$1" /charm
mkdir /charm/containers
mount --bind "$2" /charm/containers
printf '%s' "$3" > /proc/sys/kernel/hostname
{ENV_MARKER}=$4
export {ENV_MARKER}
shift 4
exec "$@"
"""


class PodError(Exception):
    """A pod could not be started, or a process of it was not found."""


@dataclasses.dataclass(frozen=True)
class PodSpec:
    """One unit's pod: who it is and where it lives."""

    app: str
    unit: str
    """The unit's name, ``<app>/<n>``."""
    number: int
    address: str
    """The pod's own loopback address; redis and sentinel listen there."""
    hostname: str
    """``<app>-<n>.<app>-endpoints``, resolvable by every process (``/etc/hosts``)."""
    root: Path
    """``<state>/pods/<app>-<n>``: the pod's storage, containers, logs."""

    @property
    def name(self) -> str:
        """The pod's name, ``<app>-<n>`` (also its containers' host name)."""
        return f"{self.app}-{self.number}"


def pod_spec(state_dir: Path, app: str, number: int, *, network: str = DEFAULT_NETWORK) -> PodSpec:
    """The pod of unit ``<app>/<number>``: address ``<network>.<number+1>``.

    Args:
        state_dir: the cluster's state directory.
        app: the application's name (Juju's rules: lower case, digits, dashes).
        number: the unit's number, 0 to 253.
        network: the first three octets of the application's addresses, in 127/8.
    """
    if not _APP.match(app):
        raise ValueError(f"not an application name: {app!r}")
    if not 0 <= number <= 253:
        raise ValueError(f"unit number out of range 0-253: {number}")
    match = _NETWORK.match(network)
    if match is None or any(int(octet) > 255 for octet in match.groups()):
        raise ValueError(f"not a 127/8 network of three octets: {network!r}")
    return PodSpec(
        app=app,
        unit=f"{app}/{number}",
        number=number,
        address=f"{network}.{number + 1}",
        hostname=f"{app}-{number}.{app}-endpoints",
        root=Path(state_dir).resolve() / "pods" / f"{app}-{number}",
    )


@dataclasses.dataclass(frozen=True)
class _Proc:
    """What /proc says of one process."""

    pid: int
    ppid: int
    state: str
    start: int
    """Start time in clock ticks since boot: with the pid, identifies the process."""
    comm: str


@dataclasses.dataclass(frozen=True)
class _Ours:
    """A live process of ours."""

    pid: int
    marker: str | None
    """``<tag>/<pod>/<container>`` from its environment, if there."""
    command: str


class Pods:
    """The pods of one state directory."""

    def __init__(self, state_dir: Path, pebble_binary: Path) -> None:
        """Pods kept under ``<state_dir>/pods``, running ``pebble_binary`` in each container."""
        self.state_dir = Path(state_dir).resolve()
        self.pebble_binary = Path(pebble_binary).resolve()
        self.pods_dir = self.state_dir / "pods"
        self.created_record = self.state_dir / "created-mount-points.json"
        """The mount points we created on the host (cleanup removes only these)."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        self.tag = f"{MARKER}:{digest}"
        """Marks everything of this state directory: hosts lines, rules, mounts, processes."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()

    # ------------------------------------------------------------------ pods

    def start(self, spec: PodSpec, timeout: float = 10) -> None:
        """Start the pod (no-op if it runs): both Pebbles up and answering on their sockets.

        A pod that is partly up (one container died) is deleted first. The pod's
        line in /etc/hosts is added if missing.

        Raises:
            PodError: a Pebble did not answer within ``timeout`` seconds (the pod
                is deleted again; the error carries the end of its log), or the
                host-side socket path would be too long to connect to.
        """
        for container in CONTAINERS:
            path = self.socket(spec, container)
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                raise PodError(
                    f"{path} is longer than a unix socket path may be ({MAX_SOCKET_PATH}"
                    " bytes): use a shorter state directory"
                )
        if not os.access(self.pebble_binary, os.X_OK):
            raise PodError(f"no Pebble binary at {self.pebble_binary}")
        if shutil.which("unshare") is None:
            raise PodError("unshare is not installed (apt-get install util-linux)")
        if self.running(spec):
            self.add_hosts([spec])
            return
        self.delete(spec)
        self._ensure_mount_points()
        for sub in ("data", "containers", "fs", "logs", "run"):
            (spec.root / sub).mkdir(parents=True, exist_ok=True, mode=0o755)
        deadline = time.monotonic() + timeout
        started = {c: self._start_container(spec, c) for c in CONTAINERS}
        try:
            for container, process in started.items():
                self._wait_answering(spec, container, process, deadline)
        except BaseException:
            self.delete(spec)
            raise
        self.add_hosts([spec])

    def running(self, spec: PodSpec) -> bool:
        """Whether both containers' Pebbles are alive (not whether they answer)."""
        return all(self._init_pid(spec.root, c) is not None for c in CONTAINERS)

    def socket(self, spec: PodSpec, container: str) -> Path:
        """The host-side path of a container's Pebble socket."""
        _check_container(container)
        return spec.root / "containers" / container / "pebble.socket"

    def client(self, spec: PodSpec, container: str, timeout: float = 5.0) -> pebble.Client:
        """An ``ops.pebble.Client`` of a container's Pebble, from the host."""
        return pebble.Client(socket_path=str(self.socket(spec, container)), timeout=timeout)

    def init_pid(self, spec: PodSpec, container: str) -> int | None:
        """The host pid of a container's Pebble (PID 1 inside), or None if it is not running."""
        _check_container(container)
        return self._init_pid(spec.root, container)

    def dispatch_argv(self, spec: PodSpec, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run where ops finds this pod's sockets.

        A new mount namespace (private: nothing leaks to the host) with a tmpfs
        on ``/charm`` and ``<root>/containers`` bound on ``/charm/containers``,
        and a UTS namespace with the pod's name as host name (the charm
        container's). The wrapper execs ``argv``: its pid, exit status and
        resource usage are the command's. ``REDIS_K8S_LOCAL_POD`` is set in its
        environment: ``destroy`` and ``cleanup`` kill it (``delete`` does not).
        The mount point ``/charm`` is created on the host if missing.
        """
        self._ensure_mount_points()
        return [
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            DISPATCH_SCRIPT,
            "dispatch",
            self.tag,
            str(spec.root / "containers"),
            spec.name,
            f"{self.tag}/{spec.name}/{DISPATCH}",
            *argv,
        ]

    def enter_argv(self, spec: PodSpec, container: str, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside a running container (``nsenter`` its namespaces).

        Raises:
            PodError: the container is not running.
        """
        pid = self.init_pid(spec, container)
        if pid is None:
            raise PodError(f"{spec.name}: container {container} is not running")
        return ["nsenter", "-t", str(pid), "-m", "-p", "-u", "--", *argv]

    def delete(self, spec: PodSpec) -> None:
        """The pod dies at once: SIGKILL to both Pebbles, so to every process of the pod.

        The storage (``data``) and logs are kept; the containers' filesystems and
        Pebble directories (plan, state, notices, sockets) are wiped, as
        Kubernetes loses them with the pod. Safe on a pod that is not running.
        A ``dispatch_argv`` command running for the pod is left to finish (the
        agent's business).
        """
        self._kill_pod(spec.root, dispatch=False)

    def destroy(self, spec: PodSpec) -> None:
        """The unit is removed: kill its pod and dispatch, remove its line, rules, directory."""
        self._kill_pod(spec.root, dispatch=True)
        self.remove_hosts([spec])
        self.heal(spec)
        shutil.rmtree(spec.root, ignore_errors=True)

    # ------------------------------------------------------------------ faults

    def service_pids(self, spec: PodSpec, service: str) -> list[int]:
        """The host pids of a service's server process (``redis`` or ``sentinel``) in the pod.

        Only the main process: a child it forked (a BGSAVE) is left out.
        """
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}: one of {sorted(SERVICES)}")
        container, comm = SERVICES[service]
        init = self._init_pid(spec.root, container)
        if init is None:
            return []
        namespace = _pid_namespace(init)
        if namespace is None:
            return []
        matching = [
            p
            for p in _processes()
            if p.comm == comm and p.state != "Z" and _pid_namespace(p.pid) == namespace
        ]
        pids = {p.pid for p in matching}
        return sorted(p.pid for p in matching if p.ppid not in pids)

    def kill(self, spec: PodSpec, service: str) -> list[int]:
        """SIGKILL the pod's redis-server (``redis``) or redis-sentinel (``sentinel``).

        Returns:
            The pids killed.

        Raises:
            PodError: the service's process is not running.
        """
        return self._signal(spec, service, signal.SIGKILL)

    def freeze(self, spec: PodSpec, service: str = "redis") -> list[int]:
        """SIGSTOP the pod's redis-server (or redis-sentinel): it stops answering, silently."""
        return self._signal(spec, service, signal.SIGSTOP)

    def thaw(self, spec: PodSpec, service: str = "redis") -> list[int]:
        """SIGCONT what ``freeze`` stopped."""
        return self._signal(spec, service, signal.SIGCONT)

    def partition(self, spec: PodSpec, others: Iterable[PodSpec]) -> None:
        """Drop every packet between the pod's address and each of ``others``', both ways.

        Rules on INPUT of ``lo`` (``-s A -d B`` and ``-s B -d A``), tagged with
        our comment; adding one twice adds it once. Only traffic from the pod's
        own address is cut: redis and sentinel bind it, so their links are; a
        client on 127.0.0.1 still reaches every pod.
        """
        for other in others:
            if other.address == spec.address:
                continue
            for source, destination in (
                (spec.address, other.address),
                (other.address, spec.address),
            ):
                rule = self._rule(source, destination)
                if _iptables("-C", *rule, check=False).returncode != 0:
                    _iptables("-I", *rule)

    def heal(self, spec: PodSpec | None = None) -> None:
        """Remove our partition rules: all of them, or those involving ``spec``'s address."""
        if shutil.which("iptables") is None:
            return
        for rule in self._our_rules():
            if spec is not None and f"{spec.address}/32" not in rule:
                continue
            _iptables("-D", *rule[1:], check=False)

    # ------------------------------------------------------------------ /etc/hosts

    def add_hosts(self, specs: Iterable[PodSpec]) -> None:
        """Make each pod's host name (and pod name) resolve to its address, in /etc/hosts."""
        specs = list(specs)
        names = {s.hostname for s in specs}
        wanted = [f"{s.address}\t{s.hostname} {s.name}\t# {self.tag}" for s in specs]

        def edit(lines: list[str]) -> list[str]:
            kept = [
                line
                for line in lines
                if not (self._ours(line) and len(line.split()) > 1 and line.split()[1] in names)
            ]
            return kept + wanted

        _edit_hosts(edit)

    def remove_hosts(self, specs: Iterable[PodSpec] | None = None) -> None:
        """Remove our lines from /etc/hosts: all of them, or those of ``specs``."""
        names = None if specs is None else {s.hostname for s in specs}

        def edit(lines: list[str]) -> list[str]:
            return [
                line
                for line in lines
                if not (self._ours(line) and (names is None or line.split()[1] in names))
            ]

        _edit_hosts(edit)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> None:
        """Remove everything of ours: processes, rules, hosts lines, mount points, pods.

        Works from any process (pids are read from the pods' run files and from
        the processes' environment) and is safe to run twice. The state
        directory itself and what else is in it (not ``pods``) stay.
        """
        if self.pods_dir.is_dir():
            for root in sorted(self.pods_dir.iterdir()):
                if root.is_dir():
                    self._kill_pod(root, dispatch=True)
        _kill_and_wait(p.pid for p in self._our_processes())
        with self._children_lock:
            children = list(self._children)
        for pid in children:  # whoever killed them, reap ours
            self._reap(pid)
        self.heal()
        self.remove_hosts()
        self._remove_mount_points()
        shutil.rmtree(self.pods_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of ours is still there, one line each; ``[]`` after ``cleanup``."""
        found = [
            f"process {p.pid}: {p.command}" + (f" [{ENV_MARKER}={p.marker}]" if p.marker else "")
            for p in self._our_processes()
        ]
        found += [f"iptables rule: {shlex.join(rule)}" for rule in self._our_rules()]
        if HOSTS_FILE.exists():
            found += [
                f"{HOSTS_FILE} line: {line}"
                for line in HOSTS_FILE.read_text().splitlines()
                if self._ours(line)
            ]
        found += [f"mount on the host: {line}" for line in self._our_host_mounts()]
        found += [f"mount point we created: {path}" for path in self._created_mount_points()]
        if self.pods_dir.exists():
            found.append(f"pods directory: {self.pods_dir}")
        return found

    # ------------------------------------------------------------------ internals

    def _start_container(self, spec: PodSpec, container: str) -> subprocess.Popen[bytes]:
        """Lay out a fresh container and start its Pebble (returns the ``unshare``)."""
        pebble_home = spec.root / "containers" / container
        etc = spec.root / "fs" / container / "etc-redis-k8s"
        for fresh in (pebble_home, etc.parent):
            shutil.rmtree(fresh, ignore_errors=True)
        pebble_home.mkdir(mode=0o755)
        etc.mkdir(mode=0o755, parents=True)
        env = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "PEBBLE": PEBBLE_DIR,
            "PEBBLE_SOCKET": PEBBLE_SOCKET,
            "JUJU_CONTAINER_NAME": container,
            ENV_MARKER: f"{self.tag}/{spec.name}/{container}",
        }
        argv = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            CONTAINER_SCRIPT,
            f"{spec.name}-{container}",
            self.tag,
            str(pebble_home),
            str(self.pebble_binary),
            str(etc),
            str(spec.root / "data"),
            spec.name,
        ]
        log = spec.root / "logs" / f"{container}.log"
        with log.open("ab") as output:
            output.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} pod started\n".encode())
            output.flush()
            process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        with self._children_lock:
            self._children[process.pid] = process
        return process

    def _wait_answering(
        self,
        spec: PodSpec,
        container: str,
        process: subprocess.Popen[bytes],
        deadline: float,
    ) -> None:
        """Record the container's pids once Pebble runs, and wait until it answers."""
        init: _Proc | None = None
        client = pebble.Client(socket_path=str(self.socket(spec, container)), timeout=1.0)
        while True:
            if process.poll() is not None:
                raise PodError(
                    f"{spec.name}: container {container} exited ({process.returncode}):\n"
                    + _tail(spec.root / "logs" / f"{container}.log")
                )
            if init is None:
                init = _child_in_new_pid_namespace(process.pid)
                if init is not None:
                    record = {"unshare": process.pid, "init": init.pid, "start": init.start}
                    path = spec.root / "run" / f"{container}.json"
                    path.write_text(json.dumps(record))
            else:
                with contextlib.suppress(pebble.Error, OSError):
                    client.get_system_info()
                    return
            if time.monotonic() > deadline:
                raise PodError(
                    f"{spec.name}: Pebble of {container} did not answer in time:\n"
                    + _tail(spec.root / "logs" / f"{container}.log")
                )
            time.sleep(0.02)

    def _init_pid(self, root: Path, container: str) -> int | None:
        """The live Pebble of a container, from its run file (None if dead or reused)."""
        record = _run_record(root, container)
        if record is None:
            return None
        proc = _proc(record["init"])
        if proc is None or proc.start != record["start"] or proc.state == "Z":
            return None
        return proc.pid

    def _kill_pod(self, root: Path, *, dispatch: bool) -> None:
        """SIGKILL every container's Pebble (the kernel kills its namespace), reap, wipe.

        Only the Pebbles are killed: each ``unshare`` then reaps its child and
        exits (a killed ``unshare`` would leave its Pebble a zombie that nothing
        reaps where PID 1 does not). Whatever else of the pod is left (an
        ``unshare`` whose child was not recorded yet) is killed after, and so
        are the pod's ``dispatch_argv`` commands if ``dispatch``.
        """
        inits = [self._init_pid(root, c) for c in CONTAINERS]
        _kill_and_wait(pid for pid in inits if pid is not None)
        for container in CONTAINERS:
            record = _run_record(root, container)
            if record is not None:
                self._reap(record["unshare"])
        prefix = f"{self.tag}/{root.name}/"
        hook = f"{prefix}{DISPATCH}"  # in a dispatch's environment, and its wrapper's argv
        _kill_and_wait(
            p.pid
            for p in self._our_processes()
            if (p.marker or "").startswith(prefix) or f"{root}/" in p.command
            if dispatch or not (p.marker == hook or hook in p.command)
        )
        for container in CONTAINERS:
            with contextlib.suppress(FileNotFoundError):
                (root / "run" / f"{container}.json").unlink()
            shutil.rmtree(root / "containers" / container, ignore_errors=True)
            shutil.rmtree(root / "fs" / container, ignore_errors=True)

    def _reap(self, pid: int, timeout: float = 5.0) -> None:
        """Wait for an ``unshare`` to exit (reaping it if it is our child)."""
        with self._children_lock:
            process = self._children.pop(pid, None)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = _proc(pid)
            if proc is None or proc.state == "Z" or proc.comm != "unshare":
                return
            time.sleep(0.01)

    def _signal(self, spec: PodSpec, service: str, signum: signal.Signals) -> list[int]:
        pids = self.service_pids(spec, service)
        if not pids:
            raise PodError(f"{spec.name}: no {service} process is running")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def _our_processes(self) -> list[_Ours]:
        """Live processes of ours: our marker in their environment, or our state dir in argv.

        The marker is in every container's processes (Pebble's environment,
        which its services and execs inherit); the state directory is in the
        argv of the ``unshare`` and ``sh`` wrappers (of containers and dispatch).
        """
        found = []
        marker = f"{ENV_MARKER}={self.tag}/".encode()
        state = str(self.state_dir)
        me = os.getpid()
        for proc in _processes():
            if proc.pid == me or proc.state == "Z":
                continue
            try:
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
                argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv if a]
            command = shlex.join("<script>" if "\n" in w else w for w in words)
            value = next((v for v in environ if v.startswith(marker)), None)
            if value is not None:
                tagged = value.decode(errors="replace").split("=", 1)[1]
                found.append(_Ours(proc.pid, tagged, command))
            elif state in command and proc.comm in ("unshare", "sh", "pebble"):
                found.append(_Ours(proc.pid, None, command))
        return found

    def _rule(self, source: str, destination: str) -> list[str]:
        return [
            "INPUT",
            "-i",
            "lo",
            "-s",
            source,
            "-d",
            destination,
            "-m",
            "comment",
            "--comment",
            self.tag,
            "-j",
            "DROP",
        ]

    def _our_rules(self) -> list[list[str]]:
        """Our rules as ``iptables -S`` prints them (``["-A", "INPUT", ...]``)."""
        if shutil.which("iptables") is None:
            return []
        listing = _iptables("-S", "INPUT", check=False).stdout
        rules = []
        for line in listing.splitlines():
            words = shlex.split(line)
            if words[:1] == ["-A"] and self.tag in words:
                rules.append(words)
        return rules

    def _ours(self, hosts_line: str) -> bool:
        return hosts_line.rstrip().endswith(f"# {self.tag}")

    def _our_host_mounts(self) -> list[str]:
        """Lines of the host's mountinfo that are ours (none, mounts being private)."""
        state = str(self.state_dir)
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [line for line in lines if state in line or f" {self.tag} " in f"{line} "]

    def _ensure_mount_points(self) -> None:
        """Create the mount points missing on the host, and remember which."""
        created = self._created_mount_points()
        for path in MOUNT_POINTS:
            missing = []
            for parent in reversed([Path(path), *Path(path).parents]):
                if not parent.exists():
                    missing.append(str(parent))
            for directory in missing:
                os.mkdir(directory, 0o755)
                created.append(directory)
        if created:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.created_record.write_text(json.dumps(sorted(set(created))))

    def _created_mount_points(self) -> list[str]:
        record = _read_json(self.created_record)
        paths = record if isinstance(record, list) else []
        return [p for p in paths if isinstance(p, str) and os.path.isdir(p)]

    def _remove_mount_points(self) -> None:
        """Remove the mount points we created, unless some namespace still mounts on them.

        Removing a directory that another mount namespace mounts on would
        detach that mount there (another state directory's running pods).
        """
        kept = []
        for path in sorted(self._created_mount_points(), key=len, reverse=True):
            if _mounted_anywhere(path):
                kept.append(path)
                continue
            try:
                os.rmdir(path)
            except OSError as error:
                if error.errno != errno.ENOENT:
                    kept.append(path)
        if kept:
            self.created_record.write_text(json.dumps(sorted(kept)))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.created_record.unlink()


# ---------------------------------------------------------------------- helpers


def _check_container(container: str) -> None:
    if container not in CONTAINERS:
        raise ValueError(f"unknown container {container!r}: one of {CONTAINERS}")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_record(root: Path, container: str) -> dict[str, int] | None:
    """A container's run file: ``unshare`` (its pid), ``init`` (Pebble's), ``start``."""
    record = _read_json(root / "run" / f"{container}.json")
    if not isinstance(record, dict) or not all(
        isinstance(record.get(key), int) for key in ("unshare", "init", "start")
    ):
        return None
    return record


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _proc(pid: int) -> _Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat), [1] the ppid, [19] the start time (22).
    return _Proc(pid=pid, ppid=int(fields[1]), state=fields[0], start=int(fields[19]), comm=comm)


def _processes() -> Iterator[_Proc]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _proc(int(entry))
            if proc is not None:
                yield proc


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _child_in_new_pid_namespace(parent: int) -> _Proc | None:
    """The child ``unshare --fork`` made: PID 1 of the new namespace."""
    ours = _pid_namespace(os.getpid())
    for proc in _processes():
        if proc.ppid == parent and _pid_namespace(proc.pid) not in (None, ours):
            return proc
    return None


def _kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait until each is gone or a zombie."""
    targets = {pid: _proc(pid) for pid in pids}
    targets = {pid: proc for pid, proc in targets.items() if proc is not None}
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid, before in targets.items():
        while time.monotonic() < deadline:
            now = _proc(pid)
            if now is None or now.start != before.start or now.state == "Z":
                break
            time.sleep(0.005)


def _mounted_anywhere(path: str) -> bool:
    """Whether any mount namespace on the machine has something mounted on ``path``."""
    seen: set[str] = set()
    for proc in _processes():
        try:
            namespace = os.readlink(f"/proc/{proc.pid}/ns/mnt")
            if namespace in seen:
                continue
            seen.add(namespace)
            mountinfo = Path(f"/proc/{proc.pid}/mountinfo").read_text()
        except OSError:
            continue
        for line in mountinfo.splitlines():
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == path:
                return True
    return False


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            ["iptables", "-w", "5", *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError as error:
        raise PodError("iptables is not installed (apt-get install iptables)") from error
    if check and result.returncode != 0:
        raise PodError(f"iptables {shlex.join(args)}: {result.stderr.strip()}")
    return result


def _edit_hosts(edit: Callable[[list[str]], list[str]]) -> None:
    """Rewrite /etc/hosts through ``edit(lines) -> lines``, under a lock, atomically.

    The lock is on the file itself; a writer that locked a file since replaced
    tries again. Where /etc/hosts is a mount point (as in a container) it
    cannot be replaced: it is rewritten in place.
    """
    while True:
        with HOSTS_FILE.open("r+") as locked:
            fcntl.flock(locked, fcntl.LOCK_EX)
            if os.fstat(locked.fileno()).st_ino != os.stat(HOSTS_FILE).st_ino:
                continue  # replaced while we waited for the lock
            before = locked.read()
            lines = edit(before.splitlines())
            after = "".join(f"{line}\n" for line in lines)
            if after == before:
                return
            temporary = HOSTS_FILE.with_name(f".{HOSTS_FILE.name}.{MARKER}.{os.getpid()}")
            try:
                temporary.write_text(after)
                shutil.copystat(HOSTS_FILE, temporary)
                os.replace(temporary, HOSTS_FILE)
            except OSError:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
                locked.seek(0)
                locked.write(after)
                locked.truncate()
            return
