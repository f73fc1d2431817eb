"""The charm's ACL users against real redis-server and redis-sentinel processes.

Three units on loopback (127.0.5.1 primary, .2 and .3 replicas), free ports, each
started from exactly what the charm renders: ``redis.conf`` with ``aclfile``, the
ACL file of ``Passwords.acl_users()`` plus client users (hashes only), and the
included ``masteruser``/``masterauth``; sentinels authenticate to redis as the
``sentinel`` ACL user. Checked: replicas sync as the ``replication`` user, the
sentinel user can fail over, legacy clients (``default``) get data but no admin,
a client user is held to its key prefix and is rejected once removed, and a
rotation accepts both passwords mid-way and only the new one at the end.
"""

import dataclasses
import functools
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.sentinel

from machine.clients import client_rules
from tests.integration import polling
from workload.admin import RedisAdmin, SentinelAdmin, WorkloadUnreachable
from workload.config import (
    ADMIN_USER,
    SENTINEL_ADMIN_RULES,
    SENTINEL_USER,
    CharmConfig,
    acl_rule,
    password_hash,
    render_acl_file,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    sentinel_client_rule,
    sentinel_file_text,
)
from workload.workload import Passwords

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server") or ""
REDIS_SENTINEL = shutil.which("redis-sentinel") or ""
if not REDIS_SERVER or not REDIS_SENTINEL:
    pytest.skip("redis-server and redis-sentinel are not installed", allow_module_level=True)

ADDRESSES = ("127.0.5.1", "127.0.5.2", "127.0.5.3")
MASTER = "redis-k8s-g1"
CONFIG = CharmConfig(persistence="none", sentinel_down_after_ms=1000)
PASSWORDS = Passwords(
    admin="admin-pw-1", replication="repl-pw-1", sentinel="sentinel-pw-1", client="legacy-pw-1"
)
CLIENT_PASSWORD = "client-pw-7"

wait_until = functools.partial(
    polling.wait_until, retry_on=(WorkloadUnreachable, redis.RedisError)
)


@dataclass
class Unit:
    address: str
    root: Path
    redis_port: int
    sentinel_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def acl_path(self) -> Path:
        return self.root / "users.acl"

    def admin(self, password: str = PASSWORDS.admin) -> RedisAdmin:
        return RedisAdmin(self.address, self.redis_port, password, username=ADMIN_USER)

    def sentinel(self, password: str = PASSWORDS.sentinel) -> SentinelAdmin:
        return SentinelAdmin(self.address, self.sentinel_port, password)

    def client(self, username: str | None, password: str) -> redis.Redis:
        return redis.Redis(
            self.address,
            self.redis_port,
            username=username,
            password=password,
            socket_timeout=2,
            decode_responses=True,
        )


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.units = []
        for number, address in enumerate(ADDRESSES):
            root = tmp_path / f"unit-{number}"
            (root / "data").mkdir(parents=True)
            root.chmod(0o700)
            ports = polling.free_port(address), polling.free_port(address)
            self.units.append(Unit(address, root, *ports))
        self.client_users: dict[str, str] = {}
        self.passwords = PASSWORDS

    @property
    def primary(self) -> Unit:
        return self.units[0]

    def acl_text(self) -> str:
        """What ``Workload.acl_text`` renders: client users, then the internal ones."""
        return render_acl_file(self.client_users | self.passwords.acl_users())

    def start_redis(self, unit: Unit, replica_of: Unit | None) -> None:
        write_private(unit.acl_path, self.acl_text())
        secrets = unit.root / "secrets.conf"
        write_private(secrets, render_redis_secrets(self.passwords.replication))
        conf = render_redis_conf(
            CONFIG,
            hostname=unit.address,
            bind=unit.address,
            port=unit.redis_port,
            data_dir=str(unit.root / "data"),
            secrets_path=str(secrets),
            aclfile=str(unit.acl_path),
            replica_of=None if replica_of is None else (replica_of.address, replica_of.redis_port),
        )
        write_private(unit.root / "redis.conf", conf)
        argv = [REDIS_SERVER, str(unit.root / "redis.conf"), "--repl-diskless-sync-delay", "0"]
        self._start(unit, "redis", argv)
        wait_until(unit.admin().ping, f"redis on {unit.address}")

    def start_sentinel(self, unit: Unit, users: dict[str, str] | None = None) -> None:
        conf = render_sentinel_conf(
            CONFIG,
            hostname=unit.address,
            bind=unit.address,
            port=unit.sentinel_port,
            data_dir=str(unit.root / "data"),
            primary_host=self.primary.address,
            primary_port=self.primary.redis_port,
            master_name=MASTER,
            quorum=2,
        )
        secrets = render_sentinel_secrets(
            redis_password=self.passwords.sentinel,
            sentinel_password=self.passwords.sentinel,
            master_name=MASTER,
            redis_user=SENTINEL_USER,
            users=users,
        )
        write_private(unit.root / "sentinel.conf", sentinel_file_text(conf, secrets))
        self._start(unit, "sentinel", [REDIS_SENTINEL, str(unit.root / "sentinel.conf")])

    def restart_sentinel(self, unit: Unit) -> None:
        """Kill sentinel and start it again from the file it rewrote (a pod restart)."""
        unit.processes["sentinel"].kill()
        unit.processes["sentinel"].wait(timeout=10)
        self._start(unit, "sentinel", [REDIS_SENTINEL, str(unit.root / "sentinel.conf")])

    def sentinels_settled(self, password: str = PASSWORDS.sentinel) -> bool:
        for unit in self.units:
            with unit.sentinel(password) as sentinel:
                watched = sentinel.monitored()[MASTER]
                if not (
                    watched.link_ok and watched.replicas == 2 and watched.other_sentinels == 2
                ):
                    return False
        return True

    def fail_over(self, sentinel_password: str = PASSWORDS.sentinel) -> None:
        """``SENTINEL FAILOVER``; wait until another unit is primary and the old one follows."""
        with self.units[2].sentinel(sentinel_password) as sentinel:
            sentinel.failover(MASTER)

        def moved() -> bool:
            with self.units[2].sentinel(sentinel_password) as sentinel:
                address = sentinel.primary_address(MASTER)
            return address is not None and address[0] != self.primary.address

        wait_until(moved, "sentinel to fail over", timeout=15)
        with self.primary.admin() as admin:
            wait_until(lambda: admin.replication().role == "slave", "old primary to follow", 15)

    def reload_acl_everywhere(self) -> None:
        """What every unit's hook does when the users change: rewrite, then ``ACL LOAD``."""
        for unit in self.units:
            write_private(unit.acl_path, self.acl_text())
            with unit.admin() as admin:
                admin.acl_load()

    def _start(self, unit: Unit, program: str, argv: list[str]) -> None:
        with (unit.root / f"{program}.log").open("wb") as log:
            unit.processes[program] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, umask=0o077
            )

    def kill_all(self) -> None:
        for unit in self.units:
            for process in unit.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                process.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    units = Cluster(tmp_path)
    try:
        units.start_redis(units.primary, None)
        for unit in units.units[1:]:
            units.start_redis(unit, units.primary)
        yield units
    finally:
        units.kill_all()


def online_replicas(unit: Unit, password: str = PASSWORDS.admin) -> int:
    with unit.admin(password) as admin:
        return len([r for r in admin.replication().replicas if r.online])


def refused(call) -> str:
    with pytest.raises(redis.RedisError) as caught:
        call()
    return str(caught.value)


def test_replicas_sync_as_the_replication_user_which_can_do_nothing_else(cluster) -> None:
    wait_until(lambda: online_replicas(cluster.primary) == 2, "both replicas to sync")
    text = cluster.primary.acl_path.read_text()
    for password in (PASSWORDS.admin, PASSWORDS.replication, PASSWORDS.client):
        assert password not in text  # hashes only
    replication = cluster.primary.client("replication", PASSWORDS.replication)
    assert "no permissions" in refused(lambda: replication.get("k"))
    with cluster.primary.admin() as admin:
        assert set(admin.acl_users()) == {"charm-admin", "default", "replication", "sentinel"}


def test_legacy_clients_get_data_but_no_administration(cluster) -> None:
    legacy = cluster.primary.client(None, PASSWORDS.client)  # AUTH <password>: the default user
    assert legacy.set("k", "v") and legacy.get("k") == "v"
    assert "no permissions" in refused(lambda: legacy.config_get("maxmemory"))
    assert "no permissions" in refused(lambda: legacy.execute_command("ACL", "LIST"))
    wrong = cluster.primary.client(None, PASSWORDS.admin)
    assert "invalid" in refused(lambda: wrong.ping()).lower()


def test_sentinels_authenticate_as_the_sentinel_user_and_can_fail_over(cluster) -> None:
    for unit in cluster.units:
        cluster.start_sentinel(unit)

    wait_until(
        cluster.sentinels_settled,
        "sentinels to see the primary, its replicas and each other",
        timeout=15,
    )
    cluster.fail_over()  # SLAVEOF, CONFIG REWRITE, CLIENT KILL... as the sentinel user


def test_a_client_user_is_held_to_its_prefix_and_rejected_once_removed(cluster) -> None:
    rules, problem = client_rules("app:", None)
    assert problem is None and rules is not None
    cluster.client_users["relation-7"] = acl_rule([CLIENT_PASSWORD], rules)
    cluster.reload_acl_everywhere()

    client = cluster.primary.client("relation-7", CLIENT_PASSWORD)
    assert client.set("app:one", "1")
    assert "no permissions" in refused(lambda: client.set("other:one", "1"))
    assert "no permissions" in refused(lambda: client.config_get("maxmemory"))
    assert "no permissions" in refused(lambda: client.flushall())
    wait_until(lambda: online_replicas(cluster.primary) == 2, "replicas to sync")
    for replica in cluster.units[1:]:  # every unit holds every user: redis does not replicate ACLs
        reader = replica.client("relation-7", CLIENT_PASSWORD)
        wait_until(lambda r=reader: r.get("app:one") == "1", "the write to reach the replica")

    del cluster.client_users["relation-7"]
    cluster.reload_acl_everywhere()
    for unit in cluster.units:
        gone = unit.client("relation-7", CLIENT_PASSWORD)
        assert "invalid" in refused(gone.ping).lower()
    # The connection opened before the removal was closed by redis, not left working.
    assert refused(lambda: client.get("app:one"))


def test_a_rotation_accepts_both_passwords_mid_way_and_only_the_new_one_at_the_end(
    cluster,
) -> None:
    old = PASSWORDS
    new_admin, new_client, new_repl = "admin-pw-2", "legacy-pw-2", "repl-pw-2"
    # Phase 1 (adding): every unit accepts both, while still using the old ones.
    cluster.passwords = Passwords(
        admin=old.admin,
        replication=old.replication,
        sentinel=old.sentinel,
        client=old.client,
        also_accepted=(
            ("charm-admin", new_admin),
            ("default", new_client),
            ("replication", new_repl),
        ),
    )
    cluster.reload_acl_everywhere()
    for unit in cluster.units:
        for password in (old.admin, new_admin):
            with unit.admin(password) as admin:
                assert admin.ping()
        for password in (old.client, new_client):
            assert unit.client(None, password).ping()
    # Phase 2 (switching): units use the new passwords; the old ones are still accepted.
    cluster.passwords = Passwords(
        admin=new_admin,
        replication=new_repl,
        sentinel=old.sentinel,
        client=new_client,
        also_accepted=(
            ("charm-admin", old.admin),
            ("default", old.client),
            ("replication", old.replication),
        ),
    )
    cluster.reload_acl_everywhere()
    for unit in cluster.units:  # what Workload.reconcile_config sets at run time
        with unit.admin() as admin:
            admin.config_set({"masterauth": new_repl})
    assert cluster.primary.client(None, old.client).ping()
    # Phase 3 (removing): only the new ones.
    cluster.passwords = Passwords(
        admin=new_admin, replication=new_repl, sentinel=old.sentinel, client=new_client
    )
    cluster.reload_acl_everywhere()
    for unit in cluster.units:
        with unit.admin(new_admin) as admin:
            assert admin.ping()
        with unit.admin(old.admin) as admin:
            assert not admin.ping()
        assert "invalid" in refused(unit.client(None, old.client).ping).lower()
        assert unit.client(None, new_client).ping()
    assert "invalid" in refused(cluster.primary.client("replication", old.replication).ping)
    # Replicas re-authenticate with the new password when their link is cut.
    primary = cluster.primary
    with primary.admin(new_admin) as admin:
        admin._call("CLIENT", "KILL", "TYPE", "replica")
    wait_until(lambda: online_replicas(primary, new_admin) == 2, "replicas to resync")


def accepts(unit: Unit, password: str) -> bool:
    with unit.sentinel(password) as sentinel:
        try:
            return sentinel.ping()
        except WorkloadUnreachable as error:
            assert "authentication failed" in str(error) or "NOAUTH" in str(error), error
            return False


def test_rotating_the_sentinel_password_at_run_time_survives_a_restart_and_a_failover(
    cluster,
) -> None:
    """What ``Workload._reconcile_sentinel_auth`` does in each phase, on real sentinels."""
    old, new = PASSWORDS.sentinel, "sentinel-pw-2"
    for unit in cluster.units:
        cluster.start_sentinel(unit)
    wait_until(cluster.sentinels_settled, "sentinels to see everything", timeout=15)
    # adding: redis' sentinel user and every sentinel's default user accept both.
    cluster.passwords = dataclasses.replace(PASSWORDS, also_accepted=((SENTINEL_USER, new),))
    cluster.reload_acl_everywhere()
    for unit in cluster.units:
        with unit.sentinel(old) as sentinel:
            sentinel.set_user("default", acl_rule([old, new], SENTINEL_ADMIN_RULES))
            sentinel.flush_config()
        assert accepts(unit, old) and accepts(unit, new)
    # switching: every sentinel sends the new one, to redis and to the other sentinels.
    for unit in cluster.units:
        with unit.sentinel(new) as sentinel:
            sentinel.set_sentinel_pass(new)
            sentinel.set(MASTER, {"auth-pass": new})
    # removing: only the new one anywhere.
    cluster.passwords = dataclasses.replace(PASSWORDS, sentinel=new)
    cluster.reload_acl_everywhere()
    for unit in cluster.units:
        with unit.sentinel(new) as sentinel:
            sentinel.set_user("default", acl_rule([new], SENTINEL_ADMIN_RULES))
            sentinel.flush_config()
        assert accepts(unit, new) and not accepts(unit, old)
        text = (unit.root / "sentinel.conf").read_text()
        assert old not in text and password_hash(old) not in text
    assert "invalid" in refused(cluster.primary.client(SENTINEL_USER, old).ping).lower()
    # Every sentinel restarts from its own file: the new password only, and they all
    # authenticate to redis and to each other again with it.
    for unit in cluster.units:
        cluster.restart_sentinel(unit)
    wait_until(lambda: accepts(cluster.units[2], new), "the sentinel to come back", timeout=15)
    for unit in cluster.units:
        wait_until(lambda u=unit: accepts(u, new), "sentinels to come back", timeout=15)
        assert not accepts(unit, old)
    wait_until(lambda: cluster.sentinels_settled(new), "sentinels to settle again", timeout=20)
    cluster.fail_over(new)


def test_a_client_user_on_sentinel_discovers_the_primary_and_nothing_more(cluster) -> None:
    rules, _ = client_rules("app:", None)
    assert rules is not None
    cluster.client_users["relation-7"] = acl_rule([CLIENT_PASSWORD], rules)
    cluster.reload_acl_everywhere()
    users = {
        "default": acl_rule([PASSWORDS.sentinel], SENTINEL_ADMIN_RULES),
        "relation-7": sentinel_client_rule(cluster.client_users["relation-7"]),
    }
    for unit in cluster.units:
        cluster.start_sentinel(unit, users)
    wait_until(cluster.sentinels_settled, "sentinels to see everything", timeout=15)
    credentials = {"username": "relation-7", "password": CLIENT_PASSWORD, "socket_timeout": 2}
    discovery = redis.sentinel.Sentinel(
        [(u.address, u.sentinel_port) for u in cluster.units],
        sentinel_kwargs=credentials,
        **credentials,
    )
    assert discovery.discover_master(MASTER) == (
        cluster.primary.address,
        cluster.primary.redis_port,
    )
    assert len(discovery.discover_slaves(MASTER)) == 2
    assert discovery.master_for(MASTER).set("app:via-sentinel", "1")
    direct = redis.Redis(cluster.units[0].address, cluster.units[0].sentinel_port, **credentials)
    for command in (("SENTINEL", "FAILOVER", MASTER), ("SENTINEL", "RESET", "*"), ("ACL", "LIST")):
        assert "no permissions" in refused(lambda c=command: direct.execute_command(*c))
    assert "no permissions" in refused(
        lambda: direct.execute_command("SENTINEL", "SET", MASTER, "quorum", "1")
    )
