"""The rendered redis.conf and sentinel.conf, loaded into real redis-server and redis-sentinel.

Two units on this machine's loopback: unit 0 (redis primary and a sentinel on
127.0.0.2) and unit 1 (redis replica and a sentinel on 127.0.0.3), each from the
files ``workload.config`` renders, the way the charm will write them. Passwords
hold spaces, quotes and backslashes so redis' own parser checks the quoting.
"""

import functools
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tests.integration import polling
from tests.integration.acl_support import write_default_admin_acl
from workload.config import (
    FENCE_PRIMARY,
    CharmConfig,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    sentinel_file_text,
)

pytestmark = pytest.mark.integration
T = TypeVar("T")

REDIS_SERVER = shutil.which("redis-server")
REDIS_SENTINEL = shutil.which("redis-sentinel")
if REDIS_SERVER is None or REDIS_SENTINEL is None:
    pytest.skip(
        "redis-server and redis-sentinel are not installed (bash .ci/setup installs them)",
        allow_module_level=True,
    )

# Sentinel keeps the admin and sentinel passwords, and cannot take spaces, quotes or
# backslashes (see workload.config); redis takes anything.
ADMIN_PASSWORD = "admin!#$%&()*+,-./:;<=>?@[]^_`{|}~pw"
REPLICATION_PASSWORD = "repl \\ \"pass\" 'word'"
SENTINEL_PASSWORD = "sentinel<pass>{word}"
MASTER_NAME = "primary"
UNIT_ADDRESSES = ("127.0.0.2", "127.0.0.3")
DEFAULT = CharmConfig()
NON_DEFAULT = CharmConfig(
    persistence="none",
    maxmemory="64mb",
    maxmemory_policy="allkeys-lru",
    min_replicas_to_write=0,
    sentinel_down_after_ms=1500,
)


wait_until = functools.partial(
    polling.wait_until,
    retry_on=(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError),
)


def free_ports(address: str, count: int) -> list[int]:
    """Ports free on ``address``, all different (the probes are held open together)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((address, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class Process:
    popen: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start() -> Iterator[Callable[[list[str], Path], Process]]:
    """Start a process with its output in a log file; every one is stopped at the end.

    SIGTERM, then SIGKILL after 2 s: a replica with AOF that has just synced ignores
    SIGTERM while it writes its first AOF ("Writing initial AOF, can't exit").
    """
    started: list[Process] = []

    def _start(argv: list[str], log: Path) -> Process:
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, umask=0o077)
        started.append(Process(popen, log))
        return started[-1]

    yield _start
    for process in started:
        process.popen.terminate()
    for process in started:
        try:
            process.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(timeout=5)


@dataclass
class Unit:
    address: str
    redis_port: int
    sentinel_port: int
    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis.conf"

    @property
    def sentinel_conf(self) -> Path:
        return self.root / "sentinel.conf"

    def client(self) -> redis.Redis:
        return redis.Redis(
            self.address,
            self.redis_port,
            password=ADMIN_PASSWORD,
            socket_timeout=2,
            decode_responses=True,
        )

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(
            self.address,
            self.sentinel_port,
            password=SENTINEL_PASSWORD,
            socket_timeout=2,
            decode_responses=True,
        )


def make_unit(tmp_path: Path, number: int) -> Unit:
    address = UNIT_ADDRESSES[number]
    root = tmp_path / f"unit-{number}"
    redis_port, sentinel_port = free_ports(address, 2)
    unit = Unit(address, redis_port, sentinel_port, root)
    unit.data_dir.mkdir(parents=True)
    root.chmod(0o700)
    return unit


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def start_redis(
    start, unit: Unit, config: CharmConfig, *, replica_of=None, fenced=False
) -> Process:
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
        replica_of=replica_of,
        fenced=fenced,
    )
    write_private(unit.redis_conf, conf)
    process = start([REDIS_SERVER, str(unit.redis_conf)], unit.root / "redis.log")
    wait_until(lambda: running(process) and unit.client().ping(), f"redis on {unit.address}")
    return process


def start_sentinel(start, unit: Unit, config: CharmConfig, primary: Unit, **kwargs) -> Process:
    conf = render_sentinel_conf(
        config,
        hostname=unit.address,
        bind=unit.address,
        port=unit.sentinel_port,
        data_dir=str(unit.data_dir),
        primary_host=primary.address,
        primary_port=primary.redis_port,
        master_name=MASTER_NAME,
        quorum=2,
        **kwargs,
    )
    secrets = render_sentinel_secrets(
        redis_password=ADMIN_PASSWORD,
        sentinel_password=SENTINEL_PASSWORD,
        master_name=MASTER_NAME,
    )
    write_private(unit.sentinel_conf, sentinel_file_text(conf, secrets))
    process = start([REDIS_SENTINEL, str(unit.sentinel_conf)], unit.root / "sentinel.log")
    wait_until(
        lambda: running(process) and unit.sentinel_client().ping(), f"sentinel on {unit.address}"
    )
    return process


def running(process: Process) -> bool:
    if process.popen.poll() is not None:
        pytest.fail(f"exited with {process.popen.returncode}:\n{process.log_text()}")
    return True


def info_replication(unit: Unit) -> dict[str, Any]:
    return unit.client().info("replication")  # type: ignore[return-value]


def expected_config_get(config: CharmConfig, unit: Unit) -> dict[str, str]:
    rdb = config.persistence in ("rdb", "aof+rdb")
    return {
        "bind": unit.address,
        "port": str(unit.redis_port),
        "dir": str(unit.data_dir.resolve()),
        "protected-mode": "no",
        "replica-announce-ip": unit.address,
        "replica-announce-port": str(unit.redis_port),
        "replica-read-only": "yes",
        "appendonly": "yes" if config.persistence in ("aof", "aof+rdb") else "no",
        "appendfsync": "everysec",
        "save": "3600 1 300 100 60 10000" if rdb else "",
        "min-replicas-to-write": str(config.min_replicas_to_write),
        "min-replicas-max-lag": str(config.min_replicas_max_lag_s),
        "maxmemory": str(config.maxmemory_bytes),
        "maxmemory-policy": config.maxmemory_policy,
        "masteruser": "replication",
    }


@pytest.fixture(params=[DEFAULT, NON_DEFAULT], ids=["default", "non-default"])
def config(request) -> CharmConfig:
    return request.param


def test_two_units_from_rendered_files(tmp_path, start, config):
    primary, replica = make_unit(tmp_path, 0), make_unit(tmp_path, 1)
    script = tmp_path / "on-failover"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o700)

    start_redis(start, primary, config)
    start_redis(start, replica, config, replica_of=(primary.address, primary.redis_port))
    for unit in (primary, replica):
        start_sentinel(start, unit, config, primary, client_reconfig_script=str(script))

    for unit in (primary, replica):
        for name, value in expected_config_get(config, unit).items():
            assert unit.client().config_get(name) == {name: value}, (unit.address, name)

    wait_until(
        lambda: info_replication(replica)["master_link_status"] == "up",
        "the replica to sync from the primary",
    )
    wait_until(
        lambda: info_replication(primary).get("min_slaves_good_slaves", 1) >= 1,
        "the primary to count the replica as good for writes",
    )
    assert primary.client().set("written-on", "primary")
    wait_until(lambda: replica.client().get("written-on") == "primary", "the write to replicate")
    with pytest.raises(redis.ReadOnlyError):
        replica.client().set("written-on", "replica")

    for unit in (primary, replica):
        sentinel = unit.sentinel_client()
        addr = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        assert addr == (primary.address, primary.redis_port)
        master = sentinel.sentinel_master(MASTER_NAME)
        assert master["down-after-milliseconds"] == config.sentinel_down_after_ms
        assert master["failover-timeout"] == config.sentinel_failover_timeout_ms
        assert master["parallel-syncs"] == 1
        assert master["quorum"] == 2
        wait_until(
            lambda s=sentinel: s.sentinel_master(MASTER_NAME)["num-slaves"] == 1,
            "each sentinel to find the replica",
        )
        wait_until(
            lambda s=sentinel: s.sentinel_master(MASTER_NAME)["num-other-sentinels"] == 1,
            "each sentinel to find the other one (with sentinel-pass)",
            timeout=15,
        )
        # redis-py's sentinel_ckquorum() wants a bare "OK"; sentinel says "OK 2 usable ...".
        assert sentinel.execute_command("SENTINEL", "CKQUORUM", MASTER_NAME).startswith("OK")


def test_sentinel_owns_its_file_and_keeps_secrets_and_script_across_restarts(tmp_path, start):
    primary = make_unit(tmp_path, 0)
    script = tmp_path / "on-failover"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o700)
    start_redis(start, primary, DEFAULT)
    sentinel = start_sentinel(start, primary, DEFAULT, primary, client_reconfig_script=str(script))

    wait_until(
        lambda: "Generated by CONFIG REWRITE" in primary.sentinel_conf.read_text(),
        "sentinel to rewrite its file on start",
    )
    rewritten = primary.sentinel_conf.read_text()
    script_lines = [line for line in rewritten.splitlines() if "client-reconfig-script" in line]
    assert [line.replace('"', "") for line in script_lines] == [
        f"sentinel client-reconfig-script {MASTER_NAME} {script}"
    ]
    # Sentinel rewrites with 0644 & ~umask: the umask (or a private directory) keeps it private.
    assert stat.S_IMODE(primary.sentinel_conf.stat().st_mode) == 0o600

    sentinel.popen.terminate()
    sentinel.popen.wait(timeout=5)
    start([REDIS_SENTINEL, str(primary.sentinel_conf)], primary.root / "sentinel-again.log")
    wait_until(
        lambda: primary.sentinel_client().ping(), "sentinel to start again from its own file"
    )
    addr = primary.sentinel_client().sentinel_get_master_addr_by_name(MASTER_NAME)
    assert addr == (primary.address, primary.redis_port)
    master = wait_until(
        lambda: primary.sentinel_client().sentinel_master(MASTER_NAME), "sentinel to report"
    )
    assert "s_down" not in master["flags"], "sentinel lost the redis password"


def test_fenced_redis_refuses_writes_answers_role_and_serves_no_sync(tmp_path, start):
    fenced, follower = make_unit(tmp_path, 0), make_unit(tmp_path, 1)
    start_redis(start, fenced, DEFAULT, fenced=True)

    role: Any = fenced.client().execute_command("ROLE")
    assert role[0] == "slave"
    assert (role[1], int(role[2])) == FENCE_PRIMARY
    assert info_replication(fenced)["master_link_status"] == "down"
    assert info_replication(fenced)["master_repl_offset"] == 0
    with pytest.raises(redis.ReadOnlyError):
        fenced.client().set("key", "value")

    process = start_redis(start, follower, DEFAULT, replica_of=(fenced.address, fenced.redis_port))
    wait_until(
        lambda: "NOMASTERLINK" in process.log_text(),
        "the fenced redis to refuse to serve a sync",
    )
    assert info_replication(follower)["master_link_status"] == "down"


def test_password_is_required_everywhere(tmp_path, start):
    unit = make_unit(tmp_path, 0)
    start_redis(start, unit, DEFAULT)
    start_sentinel(start, unit, DEFAULT, unit)
    for port in (unit.redis_port, unit.sentinel_port):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unit.address, port, socket_timeout=2).ping()
    replication = redis.Redis(
        unit.address,
        unit.redis_port,
        username="replication",
        password=REPLICATION_PASSWORD,
        socket_timeout=2,
    )
    assert replication.ping()
    with pytest.raises(redis.ResponseError, match="no permissions"):
        replication.get("key")
    assert os.stat(unit.root / "redis-secrets.conf").st_mode & 0o077 == 0


def test_why_sentinel_passwords_are_restricted(tmp_path, start):
    """redis-sentinel 7.0.15 rewrites sentinel-pass unquoted: a quoted space breaks its file."""
    unit = make_unit(tmp_path, 0)
    start_redis(start, unit, DEFAULT)
    conf = render_sentinel_conf(
        DEFAULT,
        hostname=unit.address,
        bind=unit.address,
        port=unit.sentinel_port,
        data_dir=str(unit.data_dir),
        primary_host=unit.address,
        primary_port=unit.redis_port,
        quorum=1,
    )
    write_private(unit.sentinel_conf, conf + 'sentinel sentinel-pass "two words"\n')
    first = start([REDIS_SENTINEL, str(unit.sentinel_conf)], unit.root / "sentinel.log")
    wait_until(
        lambda: "sentinel-pass two words" in unit.sentinel_conf.read_text(),
        "sentinel to rewrite the password unquoted",
    )
    first.popen.terminate()
    first.popen.wait(timeout=5)
    again = start([REDIS_SENTINEL, str(unit.sentinel_conf)], unit.root / "sentinel-again.log")
    assert again.popen.wait(timeout=5) != 0
    assert "FATAL CONFIG FILE ERROR" in again.log_text()
