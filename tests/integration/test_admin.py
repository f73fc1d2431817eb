"""``workload.admin`` against real redis-server and redis-sentinel processes.

Three units on this machine's loopback (127.0.1.1 primary, 127.0.1.2 and 127.0.1.3
replicas), each a redis-server and, where a test needs them, a redis-sentinel
(quorum 2, down-after 1000 ms), from the files ``workload.config`` renders. Ports
are free ones picked per test, so two runs on one machine do not collide. Every
process is killed when its test ends, passed or failed (stopped ones are resumed
first). No mocks: what the tests see is what the charm's hooks will see.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from machine.types import HANDOVER_COMPLETED
from tests.integration import polling
from tests.integration.acl_support import write_default_admin_acl
from workload.admin import (
    RedisAdmin,
    SentinelAdmin,
    SentinelReplica,
    WorkloadRefused,
    WorkloadUnreachable,
    planned_switchover,
)
from workload.config import (
    CharmConfig,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    sentinel_file_text,
)

pytestmark = pytest.mark.integration
T = TypeVar("T")

REDIS_SERVER = shutil.which("redis-server") or ""
REDIS_SENTINEL = shutil.which("redis-sentinel") or ""
if not REDIS_SERVER or not REDIS_SENTINEL:
    pytest.skip(
        "redis-server and redis-sentinel are not installed (bash .ci/setup installs them)",
        allow_module_level=True,
    )

ADMIN_PASSWORD = "admin!#$%&()*+,-./:;<=>?@[]^_`{|}~pw"
REPLICATION_PASSWORD = "repl \\ \"pass\" 'word'"
SENTINEL_PASSWORD = "sentinel<pass>{word}"
WRONG_PASSWORD = "not-the-admin-password-42"
MASTER_NAME = "primary"
ADDRESSES = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
NOBODY = "127.0.1.9"
"""An address of ours where nothing listens."""
CONFIG = CharmConfig(persistence="none", sentinel_down_after_ms=1000)
REDIS_TEST_ARGS = ["--repl-diskless-sync-delay", "0"]
"""Full syncs start at once instead of after 5 s: only to keep the tests quick."""


wait_until = functools.partial(
    polling.wait_until, retry_on=(WorkloadUnreachable, redis.RedisError)
)


free_port = polling.free_port


@dataclass
class Unit:
    """One unit's redis and (when started) sentinel, on its own loopback address."""

    address: str
    root: Path
    redis_port: int
    sentinel_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def admin(self, password: str = ADMIN_PASSWORD, timeout: float = 2.0) -> RedisAdmin:
        return RedisAdmin(self.address, self.redis_port, password, timeout=timeout)

    def sentinel(self, password: str = SENTINEL_PASSWORD, timeout: float = 2.0) -> SentinelAdmin:
        return SentinelAdmin(self.address, self.sentinel_port, password, timeout=timeout)

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain redis-py client, for what the tests check beside the admin API."""
        return redis.Redis(
            self.address,
            self.redis_port,
            password=ADMIN_PASSWORD,
            socket_timeout=timeout,
            decode_responses=True,
        )

    def log(self, program: str) -> str:
        path = self.root / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Cluster:
    """The units of one test, and every process they started."""

    def __init__(self, tmp_path: Path, config: CharmConfig = CONFIG) -> None:
        self.config = config
        self.units = []
        for number, address in enumerate(ADDRESSES):
            root = tmp_path / f"unit-{number}"
            (root / "data").mkdir(parents=True)
            root.chmod(0o700)
            self.units.append(Unit(address, root, free_port(address), free_port(address)))

    @property
    def primary(self) -> Unit:
        return self.units[0]

    def unit(self, address: str) -> Unit:
        return next(u for u in self.units if u.address == address)

    def start_redis(self, unit: Unit, replica_of: Unit | None = None) -> None:
        secrets = unit.root / "redis-secrets.conf"
        write_private(secrets, render_redis_secrets(REPLICATION_PASSWORD))
        aclfile = write_default_admin_acl(
            unit.root / "users.acl", ADMIN_PASSWORD, REPLICATION_PASSWORD
        )
        conf = render_redis_conf(
            self.config,
            hostname=unit.address,
            bind=unit.address,
            port=unit.redis_port,
            data_dir=str(unit.root / "data"),
            secrets_path=str(secrets),
            aclfile=aclfile,
            replica_of=None if replica_of is None else (replica_of.address, replica_of.redis_port),
        )
        write_private(unit.root / "redis.conf", conf)
        self._start(unit, "redis", [REDIS_SERVER, str(unit.root / "redis.conf"), *REDIS_TEST_ARGS])
        wait_until(unit.admin().ping, f"redis on {unit.address}")

    def start_replicated(self) -> None:
        """A primary and two synced replicas."""
        self.start_redis(self.primary)
        for unit in self.units[1:]:
            self.start_redis(unit, replica_of=self.primary)
        wait_until(
            lambda: len([r for r in self.primary.admin().replication().replicas if r.online]) == 2,
            "both replicas to sync",
        )

    def start_sentinels(self) -> None:
        """A sentinel per unit, each having found the replicas and the two other sentinels."""
        for unit in self.units:
            conf = render_sentinel_conf(
                self.config,
                hostname=unit.address,
                bind=unit.address,
                port=unit.sentinel_port,
                data_dir=str(unit.root / "data"),
                primary_host=self.primary.address,
                primary_port=self.primary.redis_port,
                master_name=MASTER_NAME,
                quorum=2,
            )
            secrets = render_sentinel_secrets(
                redis_password=ADMIN_PASSWORD,
                sentinel_password=SENTINEL_PASSWORD,
                master_name=MASTER_NAME,
            )
            write_private(unit.root / "sentinel.conf", sentinel_file_text(conf, secrets))
            self._start(unit, "sentinel", [REDIS_SENTINEL, str(unit.root / "sentinel.conf")])
        for unit in self.units:
            wait_until(
                lambda u=unit: sees_everyone(u.sentinel()),
                f"sentinel on {unit.address} to find the replicas and the other sentinels",
                timeout=15,
            )

    def signal(self, unit: Unit, program: str, signum: signal.Signals) -> None:
        unit.processes[program].send_signal(signum)

    def _start(self, unit: Unit, program: str, argv: list[str]) -> None:
        with (unit.root / f"{program}.log").open("wb") as log:
            unit.processes[program] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, umask=0o077
            )

    def kill_all(self) -> None:
        for unit in self.units:
            for process in unit.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGCONT)  # a stopped process cannot die
                    process.kill()
        for unit in self.units:
            for process in unit.processes.values():
                process.wait(timeout=10)


def sees_everyone(sentinel: SentinelAdmin) -> bool:
    """The sentinel knows both replicas and is linked to both other sentinels."""
    watched = sentinel.monitored()[MASTER_NAME]
    peers = sentinel.sentinels(MASTER_NAME)
    return watched.replicas == 2 and len(peers) == 2 and all(p.link_ok for p in peers)


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three units; the test starts what it needs. Every process is killed at the end."""
    units = Cluster(tmp_path)
    try:
        yield units
    finally:
        units.kill_all()


@pytest.fixture
def replicated(cluster: Cluster) -> Cluster:
    cluster.start_replicated()
    return cluster


@pytest.fixture
def monitored(replicated: Cluster) -> Cluster:
    replicated.start_sentinels()
    return replicated


# ---------------------------------------------------------------------------- redis


def test_replication_and_keys_on_primary_and_replica(replicated: Cluster):
    primary, replica = replicated.primary, replicated.units[1]
    client = primary.client()
    for number in range(25):
        client.set(f"key:{number}", number)
    client.select(3)
    client.set("in-another-db", 1)

    wait_until(lambda: replica.admin().keys() == 26, "the keys to replicate")
    assert primary.admin().keys() == 26
    on_primary = primary.admin().replication()
    assert on_primary.role == "master"
    assert on_primary.master_host is None and on_primary.master_port is None
    assert {(r.host, r.port) for r in on_primary.replicas} == {
        (u.address, u.redis_port) for u in replicated.units[1:]
    }
    assert all(r.online for r in on_primary.replicas)

    on_replica = wait_until(
        lambda: (
            (r := replica.admin().replication()).master_repl_offset
            == primary.admin().replication().master_repl_offset
            and r
        ),
        "the replica to reach the primary's offset",
    )
    assert on_replica.role == "slave"
    assert (on_replica.master_host, on_replica.master_port) == (
        primary.address,
        primary.redis_port,
    )
    assert on_replica.master_link_up and not on_replica.sync_in_progress
    assert on_replica.replicas == ()
    assert on_replica.master_repl_offset > 0


def test_replicate_from_and_become_primary(replicated: Cluster):
    primary, second, third = replicated.units
    third.admin().become_primary()
    third.admin().become_primary()  # already a primary: still fine
    assert third.admin().replication().role == "master"
    wait_until(
        lambda: len(primary.admin().replication().replicas) == 1, "the primary to lose one replica"
    )

    second.admin().replicate_from(third.address, third.redis_port)
    second.admin().replicate_from(third.address, third.redis_port)  # "Already connected"
    following = wait_until(
        lambda: (r := second.admin().replication()).master_link_up and r,
        "the second replica to follow the third unit",
    )
    assert (following.master_host, following.master_port) == (third.address, third.redis_port)
    assert [r.host for r in third.admin().replication().replicas] == [second.address]
    # min-replicas-to-write is 1: the new primary takes writes once its replica acknowledges.
    wait_until(lambda: third.client().set("written", "on-third"), "a write on the new primary")
    wait_until(lambda: second.client().get("written") == "on-third", "the write to replicate")


def test_config_set_get_rewrite(replicated: Cluster):
    admin = replicated.primary.admin()
    admin.config_set({"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"})
    assert admin.config_get(["maxmemory", "maxmemory-policy"]) == {
        "maxmemory": str(64 * 1024**2),
        "maxmemory-policy": "allkeys-lru",
    }
    assert admin.config_get("maxmemory-p*") == {"maxmemory-policy": "allkeys-lru"}
    admin.config_rewrite()
    assert "maxmemory-policy allkeys-lru" in (replicated.primary.root / "redis.conf").read_text()
    with pytest.raises(WorkloadRefused, match="CONFIG SET"):
        admin.config_set({"maxmemory": "lots"})


def test_pause_holds_writes_not_reads_until_unpaused(replicated: Cluster):
    primary = replicated.primary
    admin = primary.admin()
    admin.pause_writes(5000)
    try:
        acknowledged_after: list[float] = []
        started = time.monotonic()
        writer = threading.Thread(
            target=lambda: (
                primary.client(timeout=10).set("held", 1),
                acknowledged_after.append(time.monotonic() - started),
            )
        )
        writer.start()
        assert primary.client().get("held") is None  # reads go on
        time.sleep(0.3)
        assert acknowledged_after == []  # the write is held
    finally:
        admin.unpause()
    writer.join(timeout=5)
    assert acknowledged_after and acknowledged_after[0] < 2.0
    assert primary.client().get("held") == "1"


def test_frozen_redis_raises_within_the_timeout(replicated: Cluster):
    replica = replicated.units[1]
    timeout = 0.5
    connected = replica.admin(timeout=timeout)
    assert connected.ping()  # a connection open before the freeze
    replicated.signal(replica, "redis", signal.SIGSTOP)
    try:
        for admin in (connected, replica.admin(timeout=timeout)):
            for call in (admin.replication, admin.keys, lambda a=admin: a.pause_writes(100)):
                started = time.monotonic()
                with pytest.raises(WorkloadUnreachable, match="Timeout"):
                    call()
                assert time.monotonic() - started < timeout * 3
            started = time.monotonic()
            assert admin.ping() is False
            assert time.monotonic() - started < timeout * 3
    finally:
        replicated.signal(replica, "redis", signal.SIGCONT)
    assert connected.ping(), "a client that failed reconnects on its next call"


def test_clients_sharing_a_hook_wait_for_a_frozen_redis_only_once(replicated: Cluster):
    """A frozen redis costs a hook one timeout: later calls of the hook fail at once."""
    replica, other = replicated.units[1], replicated.units[2]
    unresponsive: set[tuple[str, int]] = set()
    first = RedisAdmin(replica.address, replica.redis_port, ADMIN_PASSWORD, timeout=0.5,
                       unresponsive=unresponsive)  # fmt: skip
    replicated.signal(replica, "redis", signal.SIGSTOP)
    try:
        with pytest.raises(WorkloadUnreachable, match="Timeout"):
            first.replication()
        assert unresponsive == {(replica.address, replica.redis_port)}
        again = RedisAdmin(replica.address, replica.redis_port, ADMIN_PASSWORD, timeout=0.5,
                           unresponsive=unresponsive)  # fmt: skip
        with pytest.raises(WorkloadUnreachable, match="timed out earlier"):
            again.replication()
        assert again.ping() is False
        shared = RedisAdmin(other.address, other.redis_port, ADMIN_PASSWORD,
                            unresponsive=unresponsive)  # fmt: skip
        assert shared.ping(), "only the server that timed out is skipped"
    finally:
        replicated.signal(replica, "redis", signal.SIGCONT)
    assert replica.admin().ping(), "a client of the next hook (a fresh set) asks again"


def test_unreachable_and_wrong_password_never_show_a_password(replicated: Cluster):
    primary = replicated.primary
    wrong = primary.admin(password=WRONG_PASSWORD)
    assert wrong.ping() is False
    with pytest.raises(WorkloadUnreachable, match="authentication failed") as failure:
        wrong.replication()
    nobody = RedisAdmin(NOBODY, 6379, ADMIN_PASSWORD)
    with pytest.raises(WorkloadUnreachable, match="refused") as refused:
        nobody.keys()
    with pytest.raises(WorkloadRefused) as config_failure:
        primary.admin().config_set({"masterauth": ADMIN_PASSWORD, "maxmemory": "lots"})

    texts = [repr(wrong), str(wrong), repr(nobody), repr(primary.admin())]
    for error in (failure.value, refused.value, config_failure.value):
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
    for text in texts:
        assert WRONG_PASSWORD not in text and ADMIN_PASSWORD not in text, text


def test_importing_admin_does_not_import_redis_py():
    """Every hook is a fresh process: redis-py (about 0.3 s) loads only when one connects."""
    check = "import sys, workload.admin; assert 'redis' not in sys.modules, 'redis imported'"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, timeout=60)


# ---------------------------------------------------------------------------- sentinel


def all_eligible(replicas: list[SentinelReplica]) -> list[SentinelReplica] | None:
    return replicas if all(r.eligible for r in replicas) else None


def test_sentinel_views_of_primary_replicas_and_peers(monitored: Cluster):
    primary = monitored.primary
    for unit in monitored.units:
        sentinel = unit.sentinel()
        assert sentinel.ping()
        watched = sentinel.monitored()[MASTER_NAME]
        assert (watched.host, watched.port) == (primary.address, primary.redis_port)
        assert watched.config_epoch == 0 and watched.quorum == 2
        assert watched.other_sentinels == 2 and watched.replicas == 2
        assert watched.link_ok and not watched.failover_in_progress
        assert watched.down_after_ms == 1000
        assert sentinel.primary_address(MASTER_NAME) == (primary.address, primary.redis_port)
        assert sentinel.primary_address("nothing-by-that-name") is None
        replicas = wait_until(
            lambda s=sentinel: all_eligible(s.replicas(MASTER_NAME)),
            "the sentinel to see both replicas linked",
        )
        assert {(r.host, r.port, r.priority) for r in replicas} == {
            (u.address, u.redis_port, 100) for u in monitored.units[1:]
        }
        peers = sentinel.sentinels(MASTER_NAME)
        assert {(p.host, p.port) for p in peers} == {
            (u.address, u.sentinel_port) for u in monitored.units if u is not unit
        }
        assert all(p.link_ok and len(p.run_id) == 40 for p in peers), peers
        ok, text = sentinel.ckquorum(MASTER_NAME)
        assert ok and text.startswith("OK 3 usable Sentinels"), text


def test_ckquorum_answers_noquorum_and_frozen_sentinels_raise_within_timeout(
    monitored: Cluster,
):
    awake, *frozen = monitored.units
    sentinel = awake.sentinel()
    sentinel.monitor("alone", monitored.primary.address, monitored.primary.redis_port, 3)
    ok, text = sentinel.ckquorum("alone")
    assert not ok and text.startswith("NOQUORUM 1 usable Sentinels"), text
    assert sentinel.remove("alone") is True
    assert sentinel.remove("alone") is False
    with pytest.raises(WorkloadRefused, match="No such master"):
        sentinel.ckquorum("alone")

    for unit in frozen:
        monitored.signal(unit, "sentinel", signal.SIGSTOP)
    try:
        wait_until(
            lambda: not sentinel.ckquorum(MASTER_NAME)[0],
            "the awake sentinel to count the frozen ones out",
        )
        ok, text = sentinel.ckquorum(MASTER_NAME)
        assert not ok and "NOQUORUM" in text, text
        assert {p.link_ok for p in sentinel.sentinels(MASTER_NAME)} == {False}
        timeout = 0.5
        started = time.monotonic()
        with pytest.raises(WorkloadUnreachable, match="Timeout"):
            frozen[0].sentinel(timeout=timeout).monitored()
        assert time.monotonic() - started < timeout * 3
    finally:
        for unit in frozen:
            monitored.signal(unit, "sentinel", signal.SIGCONT)
    wait_until(lambda: sentinel.ckquorum(MASTER_NAME)[0], "the quorum to come back")


def test_reset_returns_the_count_and_sentinel_finds_the_live_ones_again(monitored: Cluster):
    sentinel = monitored.primary.sentinel()
    assert sentinel.reset("no-such-*") == 0
    started = time.monotonic()
    assert sentinel.reset(MASTER_NAME) == 1
    assert sentinel.monitored()[MASTER_NAME].other_sentinels == 0
    wait_until(
        lambda: sentinel.monitored()[MASTER_NAME].other_sentinels == 2,
        "the sentinel to hear the other sentinels again",
    )
    peers_back = time.monotonic() - started
    wait_until(
        lambda: sees_everyone(sentinel),
        "the sentinel to find the live replicas again",
        timeout=15,
    )
    print(
        f"\nafter SENTINEL RESET: sentinels back in {peers_back:.1f} s,"
        f" replicas in {time.monotonic() - started:.1f} s"
    )
    assert sentinel.monitored()[MASTER_NAME].link_ok


def test_sentinel_set_takes_several_options_and_keeps_passwords_out(monitored: Cluster):
    sentinel = monitored.primary.sentinel()
    sentinel.set(MASTER_NAME, {"down-after-milliseconds": "1500", "auth-pass": ADMIN_PASSWORD})
    assert sentinel.monitored()[MASTER_NAME].down_after_ms == 1500
    # A new auth-pass makes Sentinel drop its links to reconnect with it.
    wait_until(lambda: sentinel.monitored()[MASTER_NAME].link_ok, "Sentinel to reconnect")

    with pytest.raises(ValueError, match="unquoted") as unsafe:
        sentinel.set(MASTER_NAME, {"auth-pass": "has a space"})
    assert "has a space" not in str(unsafe.value)
    # Sentinel echoes a bad argument in its error; a password given in the call is scrubbed.
    with pytest.raises(WorkloadRefused, match="Invalid argument") as refused:
        sentinel.set(MASTER_NAME, {"auth-pass": ADMIN_PASSWORD, "quorum": ADMIN_PASSWORD})
    with pytest.raises(WorkloadRefused) as own_password_echoed:
        sentinel.set(MASTER_NAME, {"quorum": SENTINEL_PASSWORD})
    for error in (refused.value, own_password_echoed.value):
        text = str(error) + "".join(traceback.format_exception(error))
        assert ADMIN_PASSWORD not in text and SENTINEL_PASSWORD not in text, text
        assert "***" in str(error)
    assert SENTINEL_PASSWORD not in repr(sentinel)

    with pytest.raises(WorkloadUnreachable, match="authentication failed"):
        monitored.primary.sentinel(password=WRONG_PASSWORD).monitored()


# ---------------------------------------------------------------------------- switchover


@dataclass(frozen=True)
class Ack:
    key: str
    counter: int
    host: str
    at: float


class Writer(threading.Thread):
    """Writes ``SET key:N N`` + ``INCR counter`` in one transaction, to whoever Sentinel names.

    Records every acknowledged write and which redis acknowledged it. On any error it
    asks Sentinel again and moves on to the next key (a failed write may or may not
    have happened; only acknowledged ones are promised).
    """

    def __init__(self, sentinel: Unit) -> None:
        super().__init__(daemon=True)
        self.sentinel = sentinel
        self.acks: list[Ack] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        client: redis.Redis | None = None
        host = ""
        number = 0
        while not self.stopping.is_set():
            try:
                if client is None:
                    address = self.sentinel.sentinel().primary_address(MASTER_NAME)
                    assert address is not None
                    host = address[0]
                    client = redis.Redis(
                        *address, password=ADMIN_PASSWORD, socket_timeout=10, decode_responses=True
                    )
                key = f"key:{number}"
                number += 1
                pipe = client.pipeline(transaction=True)
                pipe.set(key, key)
                pipe.incr("counter")
                _, counter = pipe.execute()
                self.acks.append(Ack(key, counter, host, time.monotonic()))
            except (redis.RedisError, WorkloadUnreachable) as error:
                self.errors.append(f"{host}: {type(error).__name__}: {error}")
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.01)
        if client is not None:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        assert not self.is_alive()

    def longest_gap(self, since: float) -> float:
        times = [since] + [a.at for a in self.acks if a.at >= since]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


def switch_over(
    cluster: Cluster,
    target: str | None,
    *,
    replica_timeout: float = 2.0,
    with_peer_sentinels: bool = False,
    **options: Any,
) -> str:
    """``planned_switchover`` from the cluster's primary, with a client for every other unit.

    ``with_peer_sentinels`` passes the other units' sentinels, as the charm does.
    """
    old = cluster.primary
    others = [u for u in cluster.units if u is not old]
    if with_peer_sentinels:
        options["peer_sentinels"] = [u.sentinel() for u in others]
    return planned_switchover(
        old.admin(),
        old.sentinel(),
        MASTER_NAME,
        {u.address: u.admin(timeout=replica_timeout) for u in others},
        target,
        **options,
    )


def assert_present(unit: Unit, acks: list[Ack]) -> None:
    client: Any = unit.client()
    keys = [a.key for a in acks]
    values = []
    for start in range(0, len(keys), 500):
        values += client.mget(keys[start : start + 500])
    lost = [key for key, value in zip(keys, values, strict=True) if value != key]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert int(client.get("counter") or 0) >= max(a.counter for a in acks)


def test_planned_switchover_under_write_load_loses_no_acknowledged_write(monitored: Cluster):
    old, target = monitored.primary, monitored.units[2]
    # PING replicas every second, not every 10 s: without the switchover's silencing, one
    # would land while writes are held and force full resyncs after the switch.
    old.admin().config_set({"repl-ping-replica-period": "1"})
    writer = Writer(monitored.units[1])
    writer.start()
    try:
        wait_until(lambda: len(writer.acks) >= 200, "the writer to get going")
        began = time.monotonic()
        outcome = switch_over(monitored, target.address, with_peer_sentinels=True)
        took = time.monotonic() - began
        wait_until(
            lambda: sum(a.host == target.address for a in writer.acks) >= 200,
            "writes acknowledged by the new primary",
        )
    finally:
        writer.stop()

    assert outcome == HANDOVER_COMPLETED
    before = [a for a in writer.acks if a.at < began]
    by_old = [a for a in writer.acks if a.host == old.address]
    by_new = [a for a in writer.acks if a.host == target.address]
    assert len(before) >= 200 and by_new
    assert_present(target, writer.acks)
    gap = writer.longest_gap(began)
    error_kinds = sorted({error.split(":")[1].strip() for error in writer.errors})
    print(
        f"\nswitchover: {took:.2f} s, longest gap between acknowledged writes {gap:.2f} s,"
        f" {len(by_old)} writes acknowledged by the old primary, {len(by_new)} by the new,"
        f" {len(writer.errors)} refused or failed: {error_kinds}"
    )
    assert took < 5.0 and gap < 5.0

    for unit in monitored.units:
        address = unit.sentinel().primary_address(MASTER_NAME)
        assert address == (target.address, target.redis_port)
    follower = old.admin().replication()
    assert (follower.role, follower.master_host) == ("slave", target.address)
    wait_until(
        lambda: len([r for r in target.admin().replication().replicas if r.online]) == 2,
        "both other units to follow the new primary",
    )
    assert target.client().info("stats")["sync_full"] == 0, "a replica needed a full resync"
    # Everything the switchover changed is back.
    for unit in monitored.units:
        assert unit.admin().config_get("replica-priority") == {"replica-priority": "100"}
    assert old.admin().config_get("repl-ping-replica-period") == {"repl-ping-replica-period": "1"}
    for unit in monitored.units:
        assert unit.sentinel().debug_timers()["INFO-PERIOD"] == 10_000


def test_switchover_to_a_unit_that_is_not_a_replica_changes_nothing(monitored: Cluster):
    old = monitored.primary
    for target in (NOBODY, old.address):
        outcome = switch_over(monitored, target)
        assert outcome == f"{target} is not a synced replica of the primary"
    outcome = planned_switchover(old.admin(), old.sentinel(), MASTER_NAME, {}, None)
    assert outcome == "no connected replica to hand over to"

    assert old.sentinel().primary_address(MASTER_NAME) == (old.address, old.redis_port)
    assert old.admin().replication().role == "master"
    started = time.monotonic()
    assert old.client(timeout=1).set("right-after", 1)
    assert time.monotonic() - started < 0.5, "writes are not held"


def test_switchover_that_runs_out_of_time_still_keeps_one_primary_and_every_write(
    monitored: Cluster,
):
    old, target = monitored.primary, monitored.units[1]
    client = old.client()
    for number in range(100):
        client.set(f"key:{number}", f"key:{number}")
    acks = [Ack(f"key:{number}", 0, old.address, 0.0) for number in range(100)]

    # 400 ms of pause leave 100 ms for Sentinel to name the target: it needs about one second.
    began = time.monotonic()
    outcome = switch_over(monitored, target.address, pause_ms=400)
    took = time.monotonic() - began
    assert outcome.startswith(f"sentinel did not name {target.address} within")
    assert outcome.endswith("the old primary follows it")
    assert took < 2.0

    with pytest.raises(redis.ReadOnlyError):
        old.client().set("after", 1)
    wait_until(
        lambda: old.sentinel().primary_address(MASTER_NAME) == (target.address, target.redis_port),
        "Sentinel to finish the failover it accepted",
    )
    wait_until(
        lambda: old.admin().replication().master_link_up, "the old primary to follow the target"
    )
    assert_present(target, acks)


def test_switchover_to_a_frozen_replica_gives_a_reason_and_releases_writes(monitored: Cluster):
    old, target = monitored.primary, monitored.units[1]
    monitored.signal(target, "redis", signal.SIGSTOP)
    try:
        started = time.monotonic()
        outcome = switch_over(monitored, target.address, replica_timeout=0.5)
        took = time.monotonic() - started
    finally:
        monitored.signal(target, "redis", signal.SIGCONT)
    print(f"\nswitchover to a frozen replica: {outcome!r} after {took:.2f} s")
    assert outcome != HANDOVER_COMPLETED
    assert took < 5.0
    assert old.sentinel().primary_address(MASTER_NAME) == (old.address, old.redis_port)
    assert old.client(timeout=1).set("right-after", 1)


def test_switchover_without_a_target_moves_on_when_the_best_replica_cannot_take_over(
    monitored: Cluster,
):
    """The replica it would pick first is frozen (say, a unit being removed at the same time)."""
    old = monitored.primary
    links = [r for r in old.admin().replication().replicas if r.online]
    first_choice = max(links, key=lambda r: r.offset).host
    frozen = next(u for u in monitored.units if u.address == first_choice)
    other = next(u for u in monitored.units[1:] if u is not frozen)
    monitored.signal(frozen, "redis", signal.SIGSTOP)
    try:
        outcome = switch_over(monitored, None, replica_timeout=0.5)
    finally:
        monitored.signal(frozen, "redis", signal.SIGCONT)
    assert outcome == HANDOVER_COMPLETED
    assert old.sentinel().primary_address(MASTER_NAME) == (other.address, other.redis_port)
    with pytest.raises(redis.ReadOnlyError):
        old.client().set("after", 1)


def test_switchover_without_a_target_avoids_the_replicas_of_units_being_removed(
    monitored: Cluster,
):
    """Two units removed at once: the leaving primary never picks the other leaving one."""
    old = monitored.primary
    links = [r for r in old.admin().replication().replicas if r.online]
    first_choice = max(links, key=lambda r: r.offset).host
    other = next(u for u in monitored.units[1:] if u.address != first_choice)
    outcome = switch_over(monitored, None, avoid={first_choice})
    assert outcome == HANDOVER_COMPLETED
    assert old.sentinel().primary_address(MASTER_NAME) == (other.address, other.redis_port)


def test_switchover_avoiding_every_replica_still_hands_over_to_the_best_of_them(
    monitored: Cluster,
):
    """All other units leaving too (scale to zero): handing over still beats stopping."""
    old = monitored.primary
    replicas = monitored.units[1:]
    outcome = switch_over(monitored, None, avoid={u.address for u in replicas})
    assert outcome == HANDOVER_COMPLETED
    assert old.sentinel().primary_address(MASTER_NAME) != (old.address, old.redis_port)


def role_reported(observer: Unit, of: Unit) -> tuple[str, int]:
    """What ``observer``'s sentinel last saw ``of`` report as its role, and how long ago (ms)."""
    seen = next(r for r in observer.sentinel().replicas(MASTER_NAME) if r.host == of.address)
    return seen.role_reported, seen.role_reported_ms_ago


def test_switchover_waits_until_every_sentinel_has_seen_the_target_as_a_replica(
    monitored: Cluster,
):
    """A sentinel whose last look at the target saw a master would demote it once promoted.

    Sentinel turns back into a replica any replica it sees reporting ``master`` for
    over 8 s without a new configuration, and it looks at replicas every 10 s: a
    target that was a master a while ago (the old primary, thawed after a failover
    and made a replica by the charm) can still be a master in another sentinel's
    view. That sentinel then demotes the freshly promoted target (``+convert-to-slave``)
    and the switchover fails with no primary for a while (a CI run did this). The
    observer here is made to keep such a view, and to look again only once the
    target is promoted.
    """
    old, target, observer = monitored.primary, monitored.units[1], monitored.units[2]
    observer.sentinel().set_debug_timer("INFO-PERIOD", 100)
    target.admin().become_primary()
    wait_until(lambda: role_reported(observer, target)[0] == "master", "the observer to look")
    observer.sentinel().set_debug_timer("INFO-PERIOD", 60_000)  # ... and not look again
    target.admin().replicate_from(old.address, old.redis_port)
    wait_until(
        lambda: old.admin().replication().online_replica(target.address) is not None,
        "the target to be a synced replica again",
    )
    wait_until(
        lambda: role_reported(observer, target)[1] > 8_500,
        "the observer's view of the target as a master to be 8 s old",
        timeout=15,
    )
    assert role_reported(observer, target)[0] == "master"

    def sleep_and_let_the_observer_look_once_promoted(seconds: float) -> None:
        if target.admin().replication().role == "master":
            observer.sentinel().set_debug_timer("INFO-PERIOD", 100)
        time.sleep(seconds)

    outcome = switch_over(
        monitored,
        target.address,
        with_peer_sentinels=True,
        sleep=sleep_and_let_the_observer_look_once_promoted,
    )
    assert outcome == HANDOVER_COMPLETED
    wait_until(
        lambda: (
            observer.sentinel().primary_address(MASTER_NAME) == (target.address, target.redis_port)
        ),
        "the observer to learn the new primary",
    )
    assert "+convert-to-slave" not in observer.log("sentinel")
    assert target.admin().replication().role == "master"


def test_a_completed_switchover_returns_once_every_sentinel_names_the_new_primary(
    monitored: Cluster,
):
    """A leaving unit stops its sentinel right after handing over: the others must know.

    The sentinel that ran the failover tells the others in its next hello; stopped
    before that, it leaves them to fail the old primary over again seconds later.
    """
    old, target = monitored.primary, monitored.units[1]
    peers = [u for u in monitored.units if u is not old]
    outcome = switch_over(monitored, target.address, with_peer_sentinels=True)
    named = {u.address: u.sentinel().primary_address(MASTER_NAME) for u in peers}
    monitored.signal(old, "sentinel", signal.SIGKILL)  # as the leaving unit stops it
    monitored.signal(old, "redis", signal.SIGKILL)

    assert outcome == HANDOVER_COMPLETED
    assert named == {u.address: (target.address, target.redis_port) for u in peers}
    assert target.admin().replication().role == "master"
