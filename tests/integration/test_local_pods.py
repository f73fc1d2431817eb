"""The pods of ``redis-k8s-local`` (``redis_k8s_local.pods``): real Pebble in namespaces.

Each test starts two pods of the application ``podtest`` (127.0.3.1 and
127.0.3.2, which no other test uses) under its own state directory, and the
fixture's finalizer cleans everything up and checks that nothing is left: no
process, no iptables rule, no /etc/hosts line, no mount, no directory.

Needs root, ``unshare``, ``nsenter``, ``iptables``, redis and Pebble (``bash .ci/setup``).
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from ops import pebble
from redis_k8s_local.pods import HOSTS_FILE, MOUNT_POINTS, PodError, Pods, PodSpec, pod_spec

from tests.integration import polling
from workload.layers import PRIMARY_SWITCH_NOTICE, PrimarySwitch, primary_switch_script

pytestmark = pytest.mark.integration
T = TypeVar("T")

LOCAL = Path(__file__).resolve().parents[2] / "local"
APP = "podtest"
NETWORK = "127.0.3"
PORT = 6379


def _find_pebble() -> str | None:
    on_path = shutil.which("pebble")
    if on_path is not None:
        return on_path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = cache / "redis-k8s-ci" / "bin" / "pebble"
    return str(built) if os.access(built, os.X_OK) else None


_PEBBLE = _find_pebble()
_MISSING = [
    name
    for name in ("unshare", "nsenter", "iptables", "redis-server", "redis-cli", "timeout")
    if shutil.which(name) is None
]
if os.geteuid() != 0:
    pytest.skip("pods need root (namespaces, mounts, iptables)", allow_module_level=True)
if _PEBBLE is None:
    pytest.skip("no pebble binary (bash .ci/setup builds it)", allow_module_level=True)
if _MISSING:
    pytest.skip(f"{', '.join(_MISSING)} not installed (bash .ci/setup)", allow_module_level=True)
PEBBLE = Path(_PEBBLE)


wait_until = functools.partial(
    polling.wait_until,
    retry_on=(redis.ConnectionError, redis.TimeoutError, pebble.ConnectionError, OSError),
)


def host_state_of_ours(state_dir: Path, tag: str) -> list[str]:
    """What the host itself shows of us (independent of ``Pods.leftovers``)."""
    found = []
    if tag in HOSTS_FILE.read_text():
        found.append("/etc/hosts")
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    if tag in rules:
        found.append("iptables")
    mountinfo = Path("/proc/self/mountinfo").read_text()
    if str(state_dir) in mountinfo or tag in mountinfo:
        found.append("mountinfo")
    pgrep = subprocess.run(["pgrep", "-af", str(state_dir)], capture_output=True, text=True)
    found += [f"pgrep: {line}" for line in pgrep.stdout.splitlines()]
    return found


def host_mount_targets() -> set[str]:
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path: host-side Pebble sockets must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="podtest-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pods(short_dir: Path) -> Iterator[Pods]:
    """Pods under a fresh state directory; at the end, cleanup and nothing left."""
    existed = {path: os.path.exists(path) for path in MOUNT_POINTS}
    state = short_dir / "state"
    instance = Pods(state, PEBBLE)
    try:
        yield instance
    finally:
        instance.cleanup()
        instance.cleanup()  # twice: safe
        assert instance.leftovers() == []
        assert host_state_of_ours(state, instance.tag) == []
        for path, was in existed.items():
            assert os.path.exists(path) == was, f"{path} created and not removed"


@pytest.fixture
def two(pods: Pods) -> tuple[PodSpec, PodSpec]:
    """Two started pods, podtest-0 and podtest-1."""
    specs = (
        pod_spec(pods.state_dir, APP, 0, network=NETWORK),
        pod_spec(pods.state_dir, APP, 1, network=NETWORK),
    )
    pods.add_hosts(specs)
    for spec in specs:
        started = time.monotonic()
        pods.start(spec)
        print(f"{spec.name} started in {time.monotonic() - started:.3f} s")
    return specs


def redis_layer(address: str) -> pebble.LayerDict:
    command = f"redis-server --bind {address} --port {PORT} --save '' --appendonly no"
    return {
        "services": {
            "redis": {
                "override": "replace",
                "command": command,
                "startup": "enabled",
                "user": "redis",
                "group": "redis",
                "on-failure": "restart",
                "backoff-delay": "100ms",
            }
        }
    }


def run_redis(pods: Pods, spec: PodSpec) -> None:
    client = pods.client(spec, "redis")
    client.add_layer("redis", redis_layer(spec.address), combine=True)
    client.replan_services()
    wait_until(lambda: ping(spec.address), f"redis of {spec.name}")


def ping(host: str, timeout: float = 1.0) -> bool:
    with redis.Redis(host=host, port=PORT, socket_timeout=timeout) as client:
        return bool(client.ping())


def connects(source: str, destination: str, timeout: float = 0.5) -> bool:
    """Whether a TCP connection from ``source`` (bound) reaches ``destination``:6379."""
    with socket.socket() as probe:
        probe.bind((source, 0))
        probe.settimeout(timeout)
        try:
            probe.connect((destination, PORT))
        except OSError:
            return False
        return True


def exists(client: pebble.Client, path: str) -> bool:
    try:
        client.list_files(path, itself=True)
    except pebble.APIError as error:
        if error.code == 404:
            return False
        raise
    return True


def pull_text(client: pebble.Client, path: str) -> str:
    with client.pull(path) as file:
        return file.read()


def exec_output(client: pebble.Client, command: list[str], **kwargs: object) -> str:
    out, _ = client.exec(command, **kwargs).wait_output()  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------- tests


def test_containers_have_their_own_files_and_share_the_data(
    pods: Pods, two: tuple[PodSpec, PodSpec]
) -> None:
    a, b = two
    redis_a, sentinel_a = pods.client(a, "redis"), pods.client(a, "sentinel")
    redis_a.push("/etc/redis-k8s/x", "config of a's redis")
    assert (a.root / "fs" / "redis" / "etc-redis-k8s" / "x").read_text() == "config of a's redis"
    assert not (a.root / "fs" / "sentinel" / "etc-redis-k8s" / "x").exists()
    assert not exists(sentinel_a, "/etc/redis-k8s/x")
    assert not exists(pods.client(b, "redis"), "/etc/redis-k8s/x")
    assert not Path("/etc/redis-k8s/x").exists()

    redis_a.push("/var/lib/redis/y", "data of a")
    assert pull_text(sentinel_a, "/var/lib/redis/y") == "data of a"
    assert (a.root / "data" / "y").read_text() == "data of a"
    assert not exists(pods.client(b, "sentinel"), "/var/lib/redis/y")
    assert not Path("/var/lib/redis/y").exists()

    # Pebble is PID 1 of its container, whose host name is the pod's name.
    for spec in two:
        for container in ("redis", "sentinel"):
            client = pods.client(spec, container)
            script = "cat /proc/1/cmdline; echo; cat /proc/sys/kernel/hostname; echo $$"
            init, hostname, shell_pid = exec_output(client, ["sh", "-c", script]).split("\n")[:3]
            assert init.startswith("/charm/bin/pebble\0run\0")
            assert hostname == spec.name
            assert int(shell_pid) < 100  # a pid of the container's namespace
            env = exec_output(client, ["env"])
            assert "PEBBLE_SOCKET=/charm/container/pebble.socket" in env.splitlines()
    assert (a.root / "containers" / "redis" / "pebble.socket").is_socket()
    # What runs in a container from the host (nsenter) sees the same.
    listing = subprocess.run(
        pods.enter_argv(b, "sentinel", ["sh", "-c", "hostname; ls /charm /charm/container"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listing[0] == b.name
    assert {"bin", "container", "pebble", "pebble.socket"} <= set(listing)

    # The mounts are the namespaces' own: the host sees none of them.
    targets = host_mount_targets()
    assert not targets & {"/charm", "/charm/container", "/charm/bin/pebble", "/etc/redis-k8s"}
    assert str(pods.state_dir) not in Path("/proc/self/mountinfo").read_text()
    assert not Path("/charm/container").exists()


def test_each_pod_has_its_address_and_name_on_the_same_port(
    pods: Pods, two: tuple[PodSpec, PodSpec]
) -> None:
    for spec in two:
        assert socket.gethostbyname(spec.hostname) == spec.address
        assert socket.gethostbyname(spec.name) == spec.address
        run_redis(pods, spec)
    for spec in two:
        with redis.Redis(host=spec.hostname, port=PORT, socket_timeout=1) as client:
            assert client.ping()
            assert client.config_get("bind") == {"bind": spec.address}
        (pid,) = pods.service_pids(spec, "redis")
        assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam("redis").pw_uid
    # Each redis is in its own pod's namespaces.
    pid_a, pid_b = (pods.service_pids(s, "redis")[0] for s in two)
    assert os.readlink(f"/proc/{pid_a}/ns/pid") != os.readlink(f"/proc/{pid_b}/ns/pid")
    assert os.readlink(f"/proc/{pid_a}/ns/mnt") != os.readlink(f"/proc/{pid_b}/ns/mnt")


def test_dispatch_finds_its_pods_sockets_where_ops_looks(
    pods: Pods, two: tuple[PodSpec, PodSpec]
) -> None:
    a, b = two
    script = (
        "import socket, ops\n"
        "c = ops.pebble.Client(socket_path='/charm/containers/redis/pebble.socket')\n"
        "c.push('/etc/redis-k8s/from-dispatch', socket.gethostname())\n"
        "print(sorted(__import__('os').listdir('/charm/containers')))\n"
    )
    for spec in two:
        started = time.monotonic()
        result = subprocess.run(
            pods.dispatch_argv(spec, [sys.executable, "-c", script]),
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"dispatch of {spec.name}: {time.monotonic() - started:.3f} s")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "['redis', 'sentinel']"
        written = spec.root / "fs" / "redis" / "etc-redis-k8s" / "from-dispatch"
        assert written.read_text() == spec.name
    # Exit status and argv pass through the wrapper; nothing is left mounted.
    result = subprocess.run(pods.dispatch_argv(a, ["sh", "-c", "exit 3"]), check=False)
    assert result.returncode == 3
    assert not Path("/charm/containers").exists()
    assert str(pods.state_dir) not in Path("/proc/self/mountinfo").read_text()


def test_the_charms_switch_script_raises_a_notice_in_its_own_pebble(
    pods: Pods, two: tuple[PodSpec, PodSpec]
) -> None:
    a, b = two
    sentinel_a = pods.client(a, "sentinel")
    sentinel_a.push(
        "/etc/redis-k8s/notify-primary-switch", primary_switch_script(), permissions=0o755
    )
    arguments = ["podtest-g1", "leader", "start", "old.host", "6379", "new.host", "6379"]
    sentinel_a.exec(["/etc/redis-k8s/notify-primary-switch", *arguments]).wait()
    notices = sentinel_a.get_notices(types=[pebble.NoticeType.CUSTOM])
    assert [n.key for n in notices] == [PRIMARY_SWITCH_NOTICE]
    switch = PrimarySwitch.from_notice_data(notices[0].last_data)
    assert switch is not None and (switch.from_host, switch.to_host) == ("old.host", "new.host")
    # The plain command, as the brief of the pod says it: PEBBLE=/charm/container.
    sentinel_a.exec(
        ["/charm/bin/pebble", "notify", PRIMARY_SWITCH_NOTICE, "a=b"],
        environment={"PEBBLE": "/charm/container"},
    ).wait()
    (notice,) = sentinel_a.get_notices(types=[pebble.NoticeType.CUSTOM])
    assert notice.occurrences == 2 and notice.last_data == {"a": "b"}
    # Only that container's Pebble has it.
    for client in (pods.client(a, "redis"), pods.client(b, "sentinel")):
        assert client.get_notices(types=[pebble.NoticeType.CUSTOM]) == []


def test_the_agent_makes_one_event_per_notice_occurrence_as_juju_does(
    pods: Pods, two: tuple[PodSpec, PodSpec], short_dir: Path
) -> None:
    """A long-polling watcher per Pebble (Juju's ``WaitNotices``): each occurrence, once."""
    from redis_k8s_local.agent import Agent, Unit

    a, _ = two
    agent = Agent(pods.state_dir, LOCAL.parent, PEBBLE)
    agent.pods = pods
    agent.notice_wait_s = 0.5
    unit = Unit("podtest/0", a, short_dir / "charm", pod_up=True)
    watcher = threading.Thread(target=agent._wait_notices, args=(unit, "sentinel"), daemon=True)
    watcher.start()
    client = pods.client(a, "sentinel")
    log = a.root / "logs" / "sentinel.log"

    def requests_so_far() -> int:
        return log.read_text().count("GET /v1/notices?")

    try:
        for occurrence in (1, 2):
            client.notify(pebble.NoticeType.CUSTOM, PRIMARY_SWITCH_NOTICE)
            wait_until(lambda n=occurrence: len(unit.queue) == n, f"event {occurrence}")
        asked = requests_so_far()
        wait_until(lambda: requests_so_far() >= asked + 3, "the watcher to wait three more times")
    finally:
        agent.stopping.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()
    hook, env = unit.queue[0]
    assert list(unit.queue) == [(hook, env), (hook, env)]  # nothing seen twice
    assert hook == "sentinel-pebble-custom-notice"
    assert env["JUJU_NOTICE_KEY"] == PRIMARY_SWITCH_NOTICE
    assert env["JUJU_WORKLOAD_NAME"] == "sentinel" and env["JUJU_NOTICE_TYPE"] == "custom"


def test_faults_freeze_kill_and_partition(pods: Pods, two: tuple[PodSpec, PodSpec]) -> None:
    a, b = two
    for spec in two:
        run_redis(pods, spec)

    pods.freeze(a)
    with pytest.raises(redis.TimeoutError):
        ping(a.address, timeout=0.5)
    assert ping(b.address)
    pods.thaw(a)
    assert ping(a.address)

    (before,) = pods.kill(a, "redis")
    wait_until(
        lambda: pods.service_pids(a, "redis") not in ([], [before]), "Pebble restarts redis"
    )
    wait_until(lambda: ping(a.address), "the restarted redis answers")
    assert pods.service_pids(b, "redis")

    assert connects(a.address, b.address) and connects(b.address, a.address)
    pods.partition(a, [b])
    pods.partition(a, [a, b])  # twice, and itself: no more rules
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert sum(pods.tag in line for line in rules.splitlines()) == 2
    assert not connects(a.address, b.address)
    assert not connects(b.address, a.address)
    assert connects("127.0.0.1", b.address) and connects("127.0.0.1", a.address)
    pods.heal()
    assert connects(a.address, b.address) and connects(b.address, a.address)
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert pods.tag not in rules


def test_a_deleted_pod_dies_at_once_and_comes_back_new_with_its_data(
    pods: Pods, two: tuple[PodSpec, PodSpec]
) -> None:
    a, b = two
    for spec in two:
        run_redis(pods, spec)
    client = pods.client(a, "redis")
    client.push("/var/lib/redis/y", "kept")
    client.push("/etc/redis-k8s/x", "lost with the container")
    inits = [pods.init_pid(a, c) for c in ("redis", "sentinel")]
    (server,) = pods.service_pids(a, "redis")
    hook = subprocess.Popen(pods.dispatch_argv(a, ["sleep", "30"]))

    started = time.monotonic()
    pods.delete(a)
    print(f"{a.name} deleted in {time.monotonic() - started:.3f} s")
    assert not pods.running(a)
    for pid in [*inits, server]:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert pods.service_pids(a, "redis") == []
    with pytest.raises(pebble.ConnectionError):
        pods.client(a, "redis", timeout=1).get_system_info()
    with pytest.raises(redis.ConnectionError):
        ping(a.address)
    assert (a.root / "data" / "y").read_text() == "kept"
    assert pods.running(b) and ping(b.address)  # the other pod lives on
    assert socket.gethostbyname(a.hostname) == a.address  # its name stays
    assert hook.poll() is None  # a hook in flight is the agent's to end
    hook.kill()
    hook.wait()

    started = time.monotonic()
    pods.start(a)
    print(f"{a.name} started again in {time.monotonic() - started:.3f} s")
    client = pods.client(a, "redis")
    assert client.get_plan().services == {}
    assert client.get_services() == []
    assert client.get_notices(types=[pebble.NoticeType.CUSTOM]) == []
    assert pull_text(client, "/var/lib/redis/y") == "kept"
    assert not exists(client, "/etc/redis-k8s/x")
    assert pods.service_pids(a, "redis") == []
    run_redis(pods, a)  # the charm would add its layer again
    pods.start(a)  # a running pod: no-op
    assert ping(a.address)


def test_destroy_and_cleanup_leave_nothing(pods: Pods, two: tuple[PodSpec, PodSpec]) -> None:
    a, b = two
    for spec in two:
        run_redis(pods, spec)
    pods.partition(a, [b])
    dispatch = subprocess.Popen(pods.dispatch_argv(a, ["sleep", "60"]))
    assert wait_until(lambda: pods.leftovers(), "leftovers listed")

    pods.destroy(a)
    assert not a.root.exists()
    assert a.hostname not in HOSTS_FILE.read_text()
    assert (
        a.address not in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    )
    assert ping(b.address)

    assert dispatch.wait(5) != 0  # the removed unit's hook is killed with it
    hook = subprocess.Popen(pods.dispatch_argv(b, ["sleep", "60"]))

    # Another process (the CLI's `down`) cleans up what this one started.
    code = "import sys; from pathlib import Path; from redis_k8s_local.pods import Pods; "
    code += "Pods(Path(sys.argv[1]), Path(sys.argv[2])).cleanup()"
    cleanup = [sys.executable, "-c", code, str(pods.state_dir), str(PEBBLE)]
    subprocess.run(cleanup, check=True, env={**os.environ, "PYTHONPATH": str(LOCAL)})
    assert hook.wait(5) != 0
    assert pods.leftovers() == []
    assert host_state_of_ours(pods.state_dir, pods.tag) == []
    with pytest.raises(redis.ConnectionError):
        ping(b.address)


def test_a_mount_point_in_use_by_other_pods_is_kept(pods: Pods, short_dir: Path) -> None:
    """Removing /charm while other pods mount on it would detach their mounts."""
    if any(os.path.exists(p) for p in MOUNT_POINTS[:2]):
        pytest.skip("/charm or /etc/redis-k8s already on the host: nothing for us to create")
    other = Pods(short_dir / "other", PEBBLE)
    try:
        mine = pod_spec(pods.state_dir, APP, 5, network=NETWORK)
        theirs = pod_spec(other.state_dir, APP, 6, network=NETWORK)
        pods.start(mine)  # creates /charm and /etc/redis-k8s
        other.start(theirs)
        pods.cleanup()
        assert os.path.isdir("/charm") and os.path.isdir("/etc/redis-k8s")
        assert any("mount point we created: /charm" in line for line in pods.leftovers())
        client = other.client(theirs, "sentinel")
        assert "v1.26" in exec_output(client, ["/charm/bin/pebble", "version", "--client"])
        other.cleanup()
        pods.cleanup()  # now no one uses them
        assert not os.path.exists("/charm")
    finally:
        other.cleanup()
        assert other.leftovers() == []


def test_a_state_dir_too_long_for_a_socket_is_refused(pods: Pods) -> None:
    long_state = pods.state_dir / ("x" * 80)
    spec = pod_spec(long_state, APP, 0, network=NETWORK)
    with pytest.raises(PodError, match="longer than a unix socket path"):
        Pods(long_state, PEBBLE).start(spec)
