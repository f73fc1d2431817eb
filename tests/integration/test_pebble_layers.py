"""The layers of ``workload.layers`` under real Pebble, with real redis-server and redis-sentinel.

Each "container" is its own ``pebble run``, laid out as Juju lays out a workload
container: ``PEBBLE`` is a fresh directory and ``PEBBLE_SOCKET`` is
``pebble.socket`` in it (Juju serves it at ``/charm/container/pebble.socket``).
Config files come from ``workload.config``, as the charm renders them. Addresses
are 127.0.2.1-9, which no other test uses.

What is measured here (and printed, with ``-s``): how long a frozen redis takes
to fail its check, how fast Pebble restarts a killed redis when allowed, and
that a Sentinel failover reaches Pebble as a custom notice.

Pebble is found on PATH, then where ``.ci/setup`` builds it
(``$XDG_CACHE_HOME/redis-k8s-ci/bin/pebble``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, TypeVar, cast

import pytest
import redis
from ops import pebble

from tests.integration import polling
from tests.integration.acl_support import write_default_admin_acl
from workload.config import (
    CharmConfig,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    sentinel_file_text,
)
from workload.layers import (
    PRIMARY_SWITCH_NOTICE,
    REDIS_CHECK,
    REDIS_SERVICE,
    SENTINEL_CHECK,
    SENTINEL_SERVICE,
    SYNC_DONE_CHECK,
    PrimarySwitch,
    primary_switch_script,
    redis_layer,
    sentinel_layer,
)

pytestmark = pytest.mark.integration
T = TypeVar("T")


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
    for name in ("redis-server", "redis-sentinel", "redis-cli", "timeout", "sh")
    if shutil.which(name) is None
]
if _PEBBLE is None:
    pytest.skip(
        "no pebble binary on PATH or in ~/.cache/redis-k8s-ci/bin (bash .ci/setup builds it)",
        allow_module_level=True,
    )
if _MISSING:
    pytest.skip(
        f"{', '.join(_MISSING)} not installed (bash .ci/setup installs redis)",
        allow_module_level=True,
    )
PEBBLE: str = _PEBBLE

ADMIN_PASSWORD = "admin-pw-7f3a!#$%&()*+,-./:;<=>?@[]^_`{|}~"
REPLICATION_PASSWORD = "repl pw 'with' \"quotes\" \\ 5be1"
SENTINEL_PASSWORD = "sentinel-pw-91c4<>{}"
PASSWORDS = (ADMIN_PASSWORD, REPLICATION_PASSWORD, SENTINEL_PASSWORD)
MASTER_NAME = "primary"
CONFIG = CharmConfig(persistence="aof", min_replicas_to_write=0, sentinel_down_after_ms=1000)
NO_PERSISTENCE = CONFIG.model_copy(update={"persistence": "none"})


class CheckTimings(TypedDict, total=False):
    check_period_s: int
    check_timeout_s: int
    check_threshold: int


# Fast checks for most tests; test_default_check_detects_a_frozen_redis measures the defaults.
FAST_CHECK = CheckTimings(check_period_s=1, check_timeout_s=2, check_threshold=2)


wait_until = functools.partial(
    polling.wait_until,
    retry_on=(
        redis.ConnectionError,
        redis.TimeoutError,
        redis.BusyLoadingError,
        pebble.ConnectionError,  # its socket is not there yet
    ),
)


free_port = polling.free_port


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.touch(mode=mode)
    path.chmod(mode)
    path.write_text(text)


def processes() -> dict[int, tuple[int, list[str]]]:
    """Every process: pid -> (parent pid, argv)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_text = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat_text.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = (ppid, [arg.decode(errors="replace") for arg in argv if arg])
    return found


def descendants(root: int) -> set[int]:
    table = processes()
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (ppid, _) in table.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def server_pid(title: str) -> int | None:
    """The pid of the redis-server or redis-sentinel whose process title starts with ``title``.

    Redis rewrites its argv to ``redis-server <address>:<port>`` (sentinel adds
    `` [sentinel]``), so the title tells the servers of the tests apart.
    """
    for pid, (_, argv) in processes().items():
        if argv and " ".join(argv).startswith(title):
            return pid
    return None


def stray_servers() -> list[str]:
    """The redis processes left on this module's addresses."""
    return [
        " ".join(argv)
        for _, argv in processes().values()
        if argv and argv[0].startswith("redis-") and " 127.0.2." in " ".join(argv)
    ]


def pebble_env(directory: Path) -> dict[str, str]:
    """The environment Juju gives a workload container's Pebble (``/charm/container``)."""
    return {
        **os.environ,
        "PEBBLE": str(directory),
        "PEBBLE_SOCKET": str(directory / "pebble.socket"),
    }


@dataclass
class Pebble:
    """One ``pebble run``, standing for one workload container."""

    directory: Path
    popen: subprocess.Popen
    log: Path
    client: pebble.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = pebble.Client(socket_path=str(self.socket))

    @property
    def socket(self) -> Path:
        return self.directory / "pebble.socket"

    def env(self) -> dict[str, str]:
        return pebble_env(self.directory)

    def apply(self, layer: pebble.LayerDict, label: str) -> None:
        self.client.add_layer(label, layer, combine=True)
        self.client.replan_services()

    def check(self, name: str) -> pebble.CheckInfo:
        return self.client.get_checks(names=[name])[0]

    def service(self, name: str) -> pebble.ServiceInfo:
        return self.client.get_services(names=[name])[0]

    def healthy(self, level: str) -> bool:
        """What Juju's Kubernetes probes would see (``/v1/health?level=...``)."""
        cli = [PEBBLE, "health", f"--level={level}"]
        return subprocess.run(cli, env=self.env(), capture_output=True).returncode == 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_pebble(tmp_path: Path) -> Iterator[Callable[[str], Pebble]]:
    """Start Pebbles; at the end stop their services and them, and leave no process behind."""
    started: list[Pebble] = []

    def _start(name: str) -> Pebble:
        directory = tmp_path / f"pebble-{name}"
        directory.mkdir(mode=0o700)
        log = tmp_path / f"pebble-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [PEBBLE, "run", "--create-dirs", "--hold", "--verbose"],
                env=pebble_env(directory),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        instance = Pebble(directory, popen, log)
        started.append(instance)
        wait_until(
            lambda: popen.poll() is None and instance.client.get_system_info(),
            f"pebble {name} to answer",
        )
        return instance

    try:
        yield _start
    finally:
        _stop_all(started)


def _stop_all(started: list[Pebble]) -> None:
    leftovers: set[int] = set()
    for instance in started:
        children = descendants(instance.popen.pid)
        leftovers |= children
        for pid in (instance.popen.pid, *children):  # a frozen process cannot stop
            _signal(pid, signal.SIGCONT)
        if instance.popen.poll() is None:
            try:
                running = [s.name for s in instance.client.get_services() if s.is_running()]
                if running:
                    instance.client.stop_services(running, timeout=30)
            except (pebble.Error, OSError):
                pass
            instance.popen.terminate()
    for instance in started:
        try:
            instance.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            instance.popen.kill()
            instance.popen.wait(timeout=5)
    for pid in leftovers:
        _signal(pid, signal.SIGKILL)
    wait_until(lambda: not stray_servers(), "every redis of these tests to be gone", timeout=5)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class Unit:
    address: str
    root: Path
    redis_port: int = 0
    sentinel_port: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(mode=0o700)
        self.data_dir.mkdir(mode=0o700)
        self.redis_port = free_port(self.address)
        self.sentinel_port = free_port(self.address)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis.conf"

    @property
    def sentinel_conf(self) -> Path:
        return self.root / "sentinel.conf"

    @property
    def redis_title(self) -> str:
        return f"redis-server {self.address}:{self.redis_port}"

    @property
    def sentinel_title(self) -> str:
        return f"redis-sentinel {self.address}:{self.sentinel_port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            self.address, self.redis_port, password=ADMIN_PASSWORD, socket_timeout=2
        )

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(
            self.address,
            self.sentinel_port,
            password=SENTINEL_PASSWORD,
            socket_timeout=2,
            decode_responses=True,
        )


def run_redis(
    box: Pebble,
    unit: Unit,
    *,
    config: CharmConfig = CONFIG,
    restart_on_failure: bool = True,
    replica_of: Unit | None = None,
    check: CheckTimings = FAST_CHECK,
    probe_password_file: Path | None = None,
) -> int:
    """Write the unit's redis files and run its layer in ``box``; return redis' pid."""
    secrets = unit.root / "redis-secrets.conf"
    write_private(secrets, render_redis_secrets(REPLICATION_PASSWORD))
    aclfile = write_default_admin_acl(
        unit.root / "users.acl", ADMIN_PASSWORD, REPLICATION_PASSWORD
    )
    conf = render_redis_conf(
        config,
        hostname=unit.address,
        bind=unit.address,
        port=unit.redis_port,
        data_dir=str(unit.data_dir),
        secrets_path=str(secrets),
        aclfile=aclfile,
        replica_of=None if replica_of is None else (replica_of.address, replica_of.redis_port),
    )
    write_private(unit.redis_conf, conf)
    layer = redis_layer(
        config_path=str(unit.redis_conf),
        restart_on_failure=restart_on_failure,
        host=unit.address,
        port=unit.redis_port,
        probe_password_file=None if probe_password_file is None else str(probe_password_file),
        **check,
    )
    box.apply(layer, REDIS_SERVICE)
    wait_until(unit.client().ping, f"redis on {unit.address}")
    pid = server_pid(unit.redis_title)
    assert pid is not None
    return pid


def run_sentinel(
    box: Pebble, unit: Unit, primary: Unit, *, script: Path | None = None, quorum: int = 1
) -> int:
    """Write the unit's sentinel file, run its layer in ``box``; return sentinel's pid."""
    conf = render_sentinel_conf(
        CONFIG,
        hostname=unit.address,
        bind=unit.address,
        port=unit.sentinel_port,
        data_dir=str(unit.data_dir),
        primary_host=primary.address,
        primary_port=primary.redis_port,
        quorum=quorum,
        master_name=MASTER_NAME,
        client_reconfig_script=None if script is None else str(script),
    )
    secrets = render_sentinel_secrets(
        redis_password=ADMIN_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        master_name=MASTER_NAME,
    )
    write_private(unit.sentinel_conf, sentinel_file_text(conf, secrets))
    layer = sentinel_layer(
        config_path=str(unit.sentinel_conf),
        host=unit.address,
        port=unit.sentinel_port,
        **FAST_CHECK,
    )
    box.apply(layer, SENTINEL_SERVICE)
    wait_until(unit.sentinel_client().ping, f"sentinel on {unit.address}")
    pid = server_pid(unit.sentinel_title)
    assert pid is not None
    return pid


def info_replication(unit: Unit) -> dict[str, Any]:
    return cast(dict[str, Any], unit.client().info("replication"))


def master_info(sentinel: redis.Redis) -> dict[str, Any]:
    return cast(dict[str, Any], sentinel.sentinel_master(MASTER_NAME))


def check_is(box: Pebble, name: str, status: pebble.CheckStatus) -> pebble.CheckInfo | None:
    info = box.check(name)
    return info if info.status == status else None


def test_services_start_checks_pass_and_no_password_shows(tmp_path, start_pebble):
    unit = Unit("127.0.2.1", tmp_path / "unit")
    redis_box, sentinel_box = start_pebble("redis"), start_pebble("sentinel")
    redis_pid = run_redis(redis_box, unit)
    sentinel_pid = run_sentinel(sentinel_box, unit, unit)

    for box, service, check in (
        (redis_box, REDIS_SERVICE, REDIS_CHECK),
        (sentinel_box, SENTINEL_SERVICE, SENTINEL_CHECK),
    ):
        assert box.service(service).is_running()
        info = wait_until(
            lambda b=box, c=check: (i := b.check(c)).successes and i,
            f"{check} to succeed",
        )
        assert info.status == pebble.CheckStatus.UP
        assert info.failures == 0
        assert info.level in (None, pebble.CheckLevel.UNSET)
        assert box.healthy("alive") and box.healthy("ready")

    # Secrets never reach a plan, an environment or an argv (rule 7).
    shown = {}
    for box in (redis_box, sentinel_box):
        plan = box.client.get_plan()
        shown[f"{box.directory.name} plan"] = plan.to_yaml()
        for name, service in plan.services.items():
            shown[f"{name} environment"] = str(service.environment)
    for pid in (redis_pid, sentinel_pid):
        for part in ("cmdline", "environ"):
            shown[f"/proc/{pid}/{part}"] = Path(f"/proc/{pid}/{part}").read_bytes().decode()
    assert "redis-ping" in shown["pebble-redis plan"]
    for where, text in shown.items():
        for password in PASSWORDS:
            assert password not in text, f"a password in {where}"

    # Both servers rewrite their files with 0644 & ~umask, secrets copied in: the
    # layers' umask keeps them private.
    unit.client().config_rewrite()
    rewritten = unit.redis_conf.read_text()
    assert "masterauth" in rewritten  # CONFIG REWRITE copied the included secret in
    assert ADMIN_PASSWORD not in rewritten  # users live in the ACL file, which it leaves alone
    wait_until(
        lambda: "Generated by CONFIG REWRITE" in unit.sentinel_conf.read_text(),
        "sentinel to rewrite its file",
    )
    for path in (unit.redis_conf, unit.sentinel_conf):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("server", ["redis", "sentinel"])
def test_frozen_server_fails_its_check_without_a_restart(tmp_path, start_pebble, server):
    unit = Unit("127.0.2.2", tmp_path / "unit")
    box = start_pebble(server)
    if server == "redis":
        pid = run_redis(box, unit)
        service, check = REDIS_SERVICE, REDIS_CHECK
    else:
        # Sentinel monitors a redis that is not there: it does not need one to answer.
        pid = run_sentinel(box, unit, unit)
        service, check = SENTINEL_SERVICE, SENTINEL_CHECK
    wait_until(lambda: box.check(check).successes, f"{check} to succeed once")

    frozen_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        down = wait_until(
            lambda: check_is(box, check, pebble.CheckStatus.DOWN),
            f"{check} to fail on a frozen {server}",
            timeout=15,
        )
        print(f"\n{check}: frozen {server} down after {time.monotonic() - frozen_at:.1f} s")
        assert down.failures >= down.threshold == FAST_CHECK.get("check_threshold")
        # The check failed and nothing acted on it: same process, still frozen, the
        # service still active, and the pod's probes still healthy.
        assert box.service(service).is_running()
        assert server_pid(unit.redis_title if server == "redis" else unit.sentinel_title) == pid
        assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        assert box.healthy("alive") and box.healthy("ready")
        # A timed-out ping leaves no redis-cli behind on the frozen server: at most
        # the one of the ping in progress (without `timeout`, one per failure).
        port = str(unit.redis_port if server == "redis" else unit.sentinel_port)
        pings = [argv for _, argv in processes().values() if argv[:1] == ["redis-cli"]]
        assert len([argv for argv in pings if port in argv]) <= 1, "a redis-cli outlived its check"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: check_is(box, check, pebble.CheckStatus.UP), f"{check} to recover")
    assert box.check(check).failures == 0


def test_the_sync_done_check_fails_once_a_replica_has_synced_and_not_before(
    tmp_path, start_pebble
):
    """Stopped until started; passes while the replica cannot sync; fails once it has.

    The replication password (spaces, quotes, a backslash) reaches redis-cli from
    its file, inside the check's shell: it is in no argv and not in the plan.
    """
    primary, replica = Unit("127.0.2.5", tmp_path / "p"), Unit("127.0.2.6", tmp_path / "r")
    password_file = tmp_path / "replication-password"
    write_private(password_file, REPLICATION_PASSWORD)
    primary_pid = run_redis(start_pebble("primary"), primary)
    primary.client().set("k", "v")
    box = start_pebble("replica")
    os.kill(primary_pid, signal.SIGSTOP)  # the replica cannot sync until the thaw
    try:
        run_redis(box, replica, replica_of=primary, probe_password_file=password_file)
        assert box.check(SYNC_DONE_CHECK).status == pebble.CheckStatus.INACTIVE  # disabled
        box.client.start_checks([SYNC_DONE_CHECK])
        wait_until(lambda: box.check(SYNC_DONE_CHECK).successes >= 3, "three passes", 15)
        assert box.check(SYNC_DONE_CHECK).status == pebble.CheckStatus.UP
        plan = box.client.get_plan().to_yaml()
        argvs = [" ".join(argv) for _, argv in processes().values()]
        assert REPLICATION_PASSWORD not in plan
        assert not [a for a in argvs if REPLICATION_PASSWORD in a]
    finally:
        os.kill(primary_pid, signal.SIGCONT)
    done = wait_until(
        lambda: check_is(box, SYNC_DONE_CHECK, pebble.CheckStatus.DOWN), "the sync to end", 20
    )
    assert info_replication(replica)["master_link_status"] == "up"
    assert replica.client().get("k") == b"v"
    assert done.failures >= 1
    box.client.stop_checks([SYNC_DONE_CHECK])
    assert box.check(SYNC_DONE_CHECK).status == pebble.CheckStatus.INACTIVE


def test_default_check_detects_a_frozen_redis(tmp_path, start_pebble):
    """The defaults (every 5 s, 3 s timeout, threshold 3): how long a frozen redis takes.

    Pebble runs a check first one period after it starts, so freezing redis as soon
    as it answers is the worst case: three pings at 5, 10 and 15 s, the last one
    given up after 2 s.
    """
    unit = Unit("127.0.2.3", tmp_path / "unit")
    box = start_pebble("redis")
    pid = run_redis(box, unit, check=CheckTimings())
    info = box.check(REDIS_CHECK)
    assert (info.threshold, box.client.get_plan().checks[REDIS_CHECK].period) == (3, "5s")
    assert (info.status, info.failures) == (pebble.CheckStatus.UP, 0)
    frozen_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(
            lambda: check_is(box, REDIS_CHECK, pebble.CheckStatus.DOWN),
            "the default check to fail on a frozen redis",
            timeout=25,
        )
        took = time.monotonic() - frozen_at
        print(f"\ndefault {REDIS_CHECK}: frozen redis down after {took:.1f} s")
        assert server_pid(unit.redis_title) == pid
    finally:
        os.kill(pid, signal.SIGCONT)


def test_killed_redis_is_restarted_when_allowed(tmp_path, start_pebble):
    unit = Unit("127.0.2.4", tmp_path / "unit")
    box = start_pebble("redis")
    pid = run_redis(box, unit, restart_on_failure=True)
    unit.client().set("key", "survives with AOF")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(
        lambda: (p := server_pid(unit.redis_title)) not in (None, pid) and p,
        "Pebble to restart the killed redis",
    )
    wait_until(unit.client().ping, "the restarted redis to answer")
    print(f"\nPebble restarted a killed redis in {time.monotonic() - killed_at:.2f} s")
    assert new_pid != pid
    assert box.service(REDIS_SERVICE).is_running()
    assert unit.client().get("key") == b"survives with AOF"


def test_redis_is_not_restarted_when_persistence_is_off(tmp_path, start_pebble):
    """Neither after SIGKILL nor after a clean exit (``SHUTDOWN NOSAVE`` exits 0)."""
    unit = Unit("127.0.2.5", tmp_path / "unit")
    box = start_pebble("redis")
    for stop in ("SIGKILL", "SHUTDOWN NOSAVE"):
        pid = run_redis(box, unit, config=NO_PERSISTENCE, restart_on_failure=False)
        if stop == "SIGKILL":
            os.kill(pid, signal.SIGKILL)
        else:
            unit.client().shutdown(nosave=True)  # redis-py takes the dropped link as done
        wait_until(lambda: not box.service(REDIS_SERVICE).is_running(), f"{stop}: redis to stop")
        # With restarts allowed Pebble is back within about a second (1 s backoff):
        # watch three times that long.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert server_pid(unit.redis_title) is None, f"{stop}: Pebble restarted redis"
            assert not box.service(REDIS_SERVICE).is_running()
            time.sleep(0.1)
        print(f"\n{stop}: redis service is {box.service(REDIS_SERVICE).current.value}")


def test_failover_raises_the_custom_notice(tmp_path, start_pebble):
    """Sentinel's client-reconfig-script turns a failover into a Pebble custom notice."""
    primary = Unit("127.0.2.6", tmp_path / "primary")
    replica = Unit("127.0.2.7", tmp_path / "replica")
    watcher = Unit("127.0.2.8", tmp_path / "watcher")
    primary_box, replica_box = start_pebble("primary"), start_pebble("replica")
    sentinel_box = start_pebble("sentinel")

    script = tmp_path / "notify-primary-switch"
    text = primary_switch_script(pebble_binary=PEBBLE, pebble_dir=str(sentinel_box.directory))
    write_private(script, text, mode=0o755)
    run_redis(primary_box, primary)
    run_redis(replica_box, replica, replica_of=primary)
    run_sentinel(sentinel_box, watcher, primary, script=script)
    sentinel = watcher.sentinel_client()
    wait_until(
        lambda: info_replication(replica)["master_link_status"] == "up",
        "the replica to sync",
    )
    wait_until(
        lambda: master_info(sentinel)["num-slaves"] == 1,
        "sentinel to find the replica",
    )
    assert not sentinel_box.client.get_notices(types=[pebble.NoticeType.CUSTOM])

    started = time.monotonic()
    assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    notice = wait_until(
        lambda: sentinel_box.client.get_notices(
            types=[pebble.NoticeType.CUSTOM], keys=[PRIMARY_SWITCH_NOTICE]
        ),
        "the custom notice",
        timeout=20,
    )[0]
    print(f"\nnotice {notice.key} {notice.last_data} {time.monotonic() - started:.2f} s after")
    switch = PrimarySwitch.from_notice_data(notice.last_data)
    assert switch == PrimarySwitch(
        master=MASTER_NAME,
        role="leader",
        state="start",
        from_host=primary.address,
        from_port=primary.redis_port,
        to_host=replica.address,
        to_port=replica.redis_port,
    )
    assert sentinel.sentinel_get_master_addr_by_name(MASTER_NAME) == (
        replica.address,
        replica.redis_port,
    )
    # Only that Pebble heard of it; the redis containers have their own.
    for box in (primary_box, replica_box):
        assert not box.client.get_notices(types=[pebble.NoticeType.CUSTOM])


HOSTILE = ["$(touch pwned)", "; touch pwned", "`touch pwned`", "a b", "'", '"', "*=\\n"]


def test_switch_script_passes_sentinels_arguments_verbatim(tmp_path, start_pebble):
    box = start_pebble("sentinel")
    script = tmp_path / "notify-primary-switch"
    write_private(
        script,
        primary_switch_script(pebble_binary=PEBBLE, pebble_dir=str(box.directory)),
        mode=0o755,
    )
    done = subprocess.run([str(script), *HOSTILE], cwd=tmp_path, timeout=15)
    assert done.returncode == 0
    [notice] = box.client.get_notices(types=[pebble.NoticeType.CUSTOM])
    names = ["master", "role", "state", "from-host", "from-port", "to-host", "to-port"]
    assert notice.key == PRIMARY_SWITCH_NOTICE
    assert notice.last_data == dict(zip(names, HOSTILE, strict=True))
    assert not (tmp_path / "pwned").exists()
    assert PrimarySwitch.from_notice_data(notice.last_data) is None  # ports are not numbers


@pytest.mark.parametrize("pebble_state", ["absent", "frozen"])
def test_switch_script_exits_zero_in_bounded_time(tmp_path, start_pebble, pebble_state):
    """Sentinel retries a script that fails and kills a slow one: it exits 0, in time."""
    box = start_pebble("sentinel")
    directory = tmp_path / "nowhere" if pebble_state == "absent" else box.directory
    script = tmp_path / "notify-primary-switch"
    text = primary_switch_script(
        pebble_binary=PEBBLE, pebble_dir=str(directory), notify_timeout_s=1
    )
    write_private(script, text, mode=0o755)
    if pebble_state == "frozen":
        os.kill(box.popen.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        done = subprocess.run([str(script), *HOSTILE], cwd=tmp_path, timeout=15)
        took = time.monotonic() - started
    finally:
        os.kill(box.popen.pid, signal.SIGCONT)
    assert done.returncode == 0
    assert took < 3
    print(f"\nswitch script with Pebble {pebble_state}: exit 0 after {took:.2f} s")
    assert not (tmp_path / "pwned").exists()
