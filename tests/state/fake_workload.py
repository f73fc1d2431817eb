"""A fake redis and sentinel behind ``workload.admin``, for the ops.testing charm tests.

The charm's own tests in ``tests/state`` run without processes: ops.testing
stands in for Juju and Pebble, and these fakes stand in for redis-server and
redis-sentinel at the admin-client boundary. ``FakeNetwork.boot`` plays what the
real processes do when Pebble starts them: they load the files the charm pushed
(redis' role from ``replicaof``, sentinel's monitor). The real processes are
exercised in ``tests/integration``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from workload import admin
from workload.config import FENCE_PRIMARY
from workload.workload import ACL_FILE, REDIS_CONF, SENTINEL_CONF


@dataclasses.dataclass
class FakeRedis:
    role: str = "slave"
    master_host: str | None = FENCE_PRIMARY[0]
    master_port: int | None = FENCE_PRIMARY[1]
    link_up: bool = False
    offset: int = 0
    keys: int = 0
    config: dict[str, str] = dataclasses.field(default_factory=dict)
    replicas: tuple[admin.ReplicaLink, ...] = ()
    users: dict[str, str] = dataclasses.field(default_factory=dict)
    """The ACL users redis loaded (name -> rule text), from the charm's ACL file."""


@dataclasses.dataclass
class FakeSentinel:
    monitored: dict[str, admin.MonitoredPrimary] = dataclasses.field(default_factory=dict)
    promoted: dict[str, str] = dataclasses.field(default_factory=dict)
    """A failover in progress whose promotion is confirmed: name -> the promoted host."""
    resets: list[str] = dataclasses.field(default_factory=list)
    conf: Path | None = None
    """The file sentinel owns (in the container's root): rewritten as sentinel does."""
    unflushed_users: dict[str, str | None] = dataclasses.field(default_factory=dict)
    """``ACL SETUSER`` / ``DELUSER`` (None) not yet in the file: sentinel writes them
    at its next rewrite (``SENTINEL FLUSHCONFIG``), not before."""

    def rewrite(self, replace: dict[tuple[str, ...], str | None]) -> None:
        """Sentinel's rewrite of its file.

        Each line starting with a key's words is replaced (None: dropped); keys not
        found are appended.
        """
        assert self.conf is not None
        lines = self.conf.read_text().splitlines()
        done = set()
        kept = []
        for line in lines:
            key = next((k for k in replace if tuple(line.split()[: len(k)]) == k), None)
            if key is None:
                kept.append(line)
            elif replace[key] is not None and key not in done:
                kept.append(replace[key])
                done.add(key)
        kept += [v for k, v in replace.items() if k not in done and v is not None]
        self.conf.write_text("\n".join(kept) + "\n")


class FakeNetwork:
    """Redis and sentinel servers by host, and every password a client presented."""

    def __init__(self) -> None:
        self.redis: dict[str, FakeRedis] = {}
        self.sentinels: dict[str, FakeSentinel] = {}
        self.passwords_seen: list[str | None] = []
        self.usernames_seen: list[str | None] = []
        self.commands: list[tuple[str, ...]] = []
        self.roots: dict[str, Path] = {}
        self.redis_timeouts: list[tuple[str, float | None]] = []
        """Each redis client made: its host, and the timeout it was given (None: default)."""

    def redis_admin(
        self,
        host: str,
        port: int = 6379,
        password: str | None = None,
        username=None,
        timeout: float | None = None,
        **_,
    ):
        self.passwords_seen.append(password)
        self.usernames_seen.append(username)
        self.redis_timeouts.append((host, timeout))
        return FakeRedisAdmin(self, host)

    def sentinel_admin(self, host: str, port: int = 26379, password: str | None = None, **_):
        self.passwords_seen.append(password)
        return FakeSentinelAdmin(self, host)

    def boot(self, host: str, redis_root: Path | None, sentinel_root: Path | None) -> None:
        """Start the servers from the files the charm pushed, as Pebble's replan would."""
        if redis_root is not None and (redis_root / REDIS_CONF.lstrip("/")).exists():
            text = (redis_root / REDIS_CONF.lstrip("/")).read_text()
            server = self.redis.setdefault(host, FakeRedis())
            self.roots[host] = redis_root
            server.users = read_acl(redis_root)
            match = re.search(r"^replicaof (\S+) (\d+)$", text, re.MULTILINE)
            if match is None:
                server.role, server.master_host, server.master_port = "master", None, None
            else:
                server.role, server.master_host = "slave", match.group(1)
                server.master_port = int(match.group(2))
        if sentinel_root is not None and (sentinel_root / SENTINEL_CONF.lstrip("/")).exists():
            text = (sentinel_root / SENTINEL_CONF.lstrip("/")).read_text()
            sentinel = self.sentinels.setdefault(host, FakeSentinel())
            sentinel.conf = sentinel_root / SENTINEL_CONF.lstrip("/")
            for name, primary, port, quorum in re.findall(
                r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", text, re.MULTILINE
            ):
                sentinel.monitored.setdefault(
                    name, monitored(name, primary, port=int(port), quorum=int(quorum))
                )


def read_acl(redis_root: Path) -> dict[str, str]:
    path = redis_root / ACL_FILE.lstrip("/")
    if not path.exists():
        return {}
    users = {}
    for line in path.read_text().splitlines():
        _, name, rules = line.split(" ", 2)
        users[name] = rules
    return users


def monitored(
    name: str, host: str, *, port: int = 6379, epoch: int = 0, quorum: int = 1, others: int = 0
) -> admin.MonitoredPrimary:
    return admin.MonitoredPrimary(
        name=name,
        host=host,
        port=port,
        config_epoch=epoch,
        quorum=quorum,
        other_sentinels=others,
        replicas=0,
        flags=frozenset({"master"}),
        down_after_ms=3000,
        failover_timeout_ms=30000,
    )


class _FakeClient:
    def __init__(self, net: FakeNetwork, host: str) -> None:
        self.net, self.host = net, host

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class FakeRedisAdmin(_FakeClient):
    def _server(self) -> FakeRedis:
        server = self.net.redis.get(self.host)
        if server is None:
            raise admin.WorkloadUnreachable(f"redis at {self.host}: connection refused")
        return server

    def ping(self) -> bool:
        return self.host in self.net.redis

    def replication(self) -> admin.Replication:
        s = self._server()
        return admin.Replication(
            role=s.role,  # type: ignore[arg-type]
            master_repl_offset=s.offset,
            master_host=s.master_host,
            master_port=s.master_port,
            master_link_up=s.link_up,
            replicas=s.replicas,
        )

    def keys(self) -> int:
        return self._server().keys

    def replicate_from(self, host: str, port: int) -> None:
        s = self._server()
        self.net.commands.append((self.host, "REPLICAOF", host, str(port)))
        s.role, s.master_host, s.master_port, s.link_up = "slave", host, port, False

    def become_primary(self) -> None:
        s = self._server()
        self.net.commands.append((self.host, "REPLICAOF", "NO", "ONE"))
        s.role, s.master_host, s.master_port, s.link_up = "master", None, None, False

    def config_get(self, names: list[str]) -> dict[str, str]:
        server = self._server()
        return {name: server.config[name] for name in names if name in server.config}

    def config_set(self, options: dict[str, str]) -> None:
        self.net.commands.append((self.host, "CONFIG SET", *sorted(options)))
        self._server().config.update(options)

    def acl_load(self) -> None:
        server = self._server()
        self.net.commands.append((self.host, "ACL LOAD"))
        server.users = read_acl(self.net.roots[self.host])

    def acl_users(self) -> list[str]:
        return sorted(self._server().users)


class FakeSentinelAdmin(_FakeClient):
    def _server(self) -> FakeSentinel:
        server = self.net.sentinels.get(self.host)
        if server is None:
            raise admin.WorkloadUnreachable(f"sentinel at {self.host}: connection refused")
        return server

    def ping(self) -> bool:
        return self.host in self.net.sentinels

    def monitored(self) -> dict[str, admin.MonitoredPrimary]:
        return dict(self._server().monitored)

    def primary_address(self, name: str) -> tuple[str, int] | None:
        server = self._server()
        if name not in server.monitored:
            return None
        return server.promoted.get(name, server.monitored[name].host), 6379

    def sentinels(self, name: str) -> list[admin.SentinelPeer]:
        self._server()
        return [
            admin.SentinelPeer(host=host, port=26379, run_id=host, flags=frozenset({"sentinel"}))
            for host in sorted(self.net.sentinels)
            if host != self.host
        ]

    def set_user(self, name: str, rule: str) -> None:
        self.net.commands.append((self.host, "ACL SETUSER", name))
        self._server().unflushed_users[name] = rule

    def delete_user(self, name: str) -> None:
        self.net.commands.append((self.host, "ACL DELUSER", name))
        self._server().unflushed_users[name] = None

    def flush_config(self) -> None:
        self.net.commands.append((self.host, "SENTINEL FLUSHCONFIG"))
        server = self._server()
        users = server.unflushed_users
        server.rewrite(
            {("user", n): None if r is None else f"user {n} {r}" for n, r in users.items()}
        )
        users.clear()

    def set_sentinel_pass(self, password: str) -> None:
        self.net.commands.append((self.host, "SENTINEL CONFIG SET", "sentinel-pass"))
        self._server().rewrite(
            {("sentinel", "sentinel-pass"): f"sentinel sentinel-pass {password}"}
        )

    def set(self, name: str, options: dict[str, str]) -> None:
        self.net.commands.append((self.host, "SENTINEL SET", name, *sorted(options)))
        if "auth-pass" in options:
            line = f"sentinel auth-pass {name} {options['auth-pass']}"
            self._server().rewrite({("sentinel", "auth-pass", name): line})
        current = self._server().monitored[name]
        changes: dict[str, object] = {}
        if "quorum" in options:
            changes["quorum"] = int(options["quorum"])
        if "down-after-milliseconds" in options:
            changes["down_after_ms"] = int(options["down-after-milliseconds"])
        if "failover-timeout" in options:
            changes["failover_timeout_ms"] = int(options["failover-timeout"])
        self._server().monitored[name] = dataclasses.replace(current, **changes)  # type: ignore[arg-type]

    def reset(self, pattern: str) -> int:
        self._server().resets.append(pattern)
        return 1
