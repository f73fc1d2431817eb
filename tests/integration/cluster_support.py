"""Driving and checking a `redis-k8s-local` cluster from tests, as a user and a client would.

- `local(...)` runs the `redis-k8s-local` command; `status()` is its JSON status.
- `wait_for(...)` waits on a condition with a bound, never sleep-and-hope.
- `assert_converged(n)` is the end state every scenario must reach: one master,
  its replicas linked to it and caught up, every sentinel naming it with the
  right number of replicas and other sentinels (no ghosts), and the charm's
  recorded primary and roles agreeing with Sentinel.
- `Writer` is a continuous client: it writes increasing keys to the primary
  Sentinel names, rediscovers it after errors as a real client does, records
  every acknowledged write, and reports what was acknowledged and is present,
  acknowledged and lost, and the longest pause between acknowledgements.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis_k8s_local import cli

from workload.config import ADMIN_USER

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
COMMAND = REPO / ".venv" / "bin" / "redis-k8s-local"
SETTLE_TIMEOUT_S = 240
DOWN_AFTER_MS = 2000
"""The scenarios' sentinel-down-after-ms: fail over fast, and still not falsely on this machine."""


FIGURES: list[str] = []
"""What the tests recorded with ``record_figure``; tests/conftest.py prints them at the end."""


def record_figure(text: str) -> None:
    """A figure for the end of the test run, and for the test's own log."""
    FIGURES.append(text)
    print(text)


def skip_without_local_cluster() -> None:
    """Skip the calling test module where no local cluster can run (not root, not set up)."""
    missing = cli.missing_prerequisites()
    if os.geteuid() != 0 or missing:
        pytest.skip(
            f"the local cluster needs root and: {missing} (bash .ci/setup)",
            allow_module_level=True,
        )


def up(*config: str, units: int = 3, down_after_ms: int = DOWN_AFTER_MS) -> None:
    """A fresh cluster, settled: the scenarios' down-after, update-status only hourly.

    With update-status that rare, what the charm learns it learns from Pebble
    notices and checks, as the HA claims require.
    """
    local("down", timeout=120)
    local(
        "up",
        "--units",
        str(units),
        "--update-status-interval",
        "3600",
        "--config",
        f"sentinel-down-after-ms={down_after_ms}",
        *config,
        "--timeout",
        str(SETTLE_TIMEOUT_S),
    )


def deployed(*config: str, units: int = 3) -> Iterator[None]:
    """`up`, for a fixture: the cluster is removed after the test unless KEEP_CLUSTER=1."""
    try:
        up(*config, units=units)
        yield
    finally:
        if not os.environ.get("KEEP_CLUSTER"):
            subprocess.run([str(COMMAND), "down"], capture_output=True, timeout=180, check=False)


def local(*args: str, timeout: float = SETTLE_TIMEOUT_S + 60) -> str:
    """Run `redis-k8s-local ARGS`; fail the test with its output if it exits non-zero."""
    result = subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def status() -> dict:
    """`redis-k8s-local status --json`."""
    return json.loads(local("status", "--json"))


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll ``check`` until it returns something truthy, or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (redis.RedisError, OSError, AssertionError, KeyError) as error:
            last, value = error, None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last: {last!r}); {statuses_now()}"
    )


def statuses_now() -> str:
    """What `juju status` would say now, for a failure message (the cluster's logs go with it)."""
    try:
        now = status()
    except (AssertionError, OSError, ValueError, subprocess.SubprocessError) as error:
        return f"no status ({type(error).__name__})"
    units = "; ".join(f"{u['name']}: {u.get('message', '')}" for u in now["units"])
    return f"app: {now['app'].get('message', '')}; units: {units}"


def password(which: str = "admin") -> str:
    """An internal password of the cluster."""
    return local("password", which).strip()


def redis_at(address: str, secret: str | None = None) -> redis.Redis:
    """A client of the redis at ``address`` (short timeouts: a frozen one must not hang)."""
    return redis.Redis(
        address,
        6379,
        username=ADMIN_USER,
        password=secret or password(),
        socket_timeout=2,
        socket_connect_timeout=2,
    )


def redis_of(unit: dict) -> redis.Redis:
    """A client of a unit's redis."""
    return redis_at(unit["address"])


def sentinel_of(unit: dict) -> redis.Redis:
    """A client of a unit's sentinel."""
    return redis.Redis(
        unit["address"],
        26379,
        password=password("sentinel"),
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )


def monitored(unit: dict) -> list[dict[str, str]]:
    """What a unit's sentinel monitors (``SENTINEL MASTERS`` as dicts)."""
    reply = sentinel_of(unit).execute_command("SENTINEL", "MASTERS")
    return [dict(zip(m[::2], m[1::2], strict=False)) for m in reply]


def primary_unit(units: list[dict]) -> dict:
    """The one unit whose redis reports master (asserted: exactly one)."""
    roles = {}
    for unit in units:
        try:
            roles[unit["name"]] = redis_of(unit).info("replication")["role"]
        except (redis.RedisError, OSError) as error:
            roles[unit["name"]] = f"unreachable: {error}"
    masters = [name for name, role in roles.items() if role == "master"]
    assert len(masters) == 1, roles
    return next(u for u in units if u["name"] == masters[0])


def assert_converged(expected_units: int, timeout: float = 90) -> dict:
    """One primary; replicas linked and caught up; sentinels agree, no ghosts; charm agrees."""
    units = status()["units"]
    assert len(units) == expected_units, units
    primary = wait_for("exactly one master", lambda: primary_unit(units), timeout=timeout)

    def replicas_caught_up() -> bool:
        primary_offset = redis_of(primary).info("replication")["master_repl_offset"]
        for unit in units:
            if unit is primary:
                continue
            info = redis_of(unit).info("replication")
            assert info["master_host"] == primary["hostname"], (unit["name"], info)
            if info["master_link_status"] != "up":
                return False
            if info["slave_repl_offset"] < primary_offset:
                return False
        return True

    wait_for("every replica linked to the primary and caught up", replicas_caught_up, timeout)

    def sentinels_agree() -> bool:
        for unit in units:
            entries = monitored(unit)
            assert len(entries) == 1, (unit["name"], entries)
            entry = entries[0]
            assert entry["ip"] == primary["hostname"], (unit["name"], entry["ip"])
            assert int(entry["quorum"]) == expected_units // 2 + 1, entry
            if int(entry["num-other-sentinels"]) != expected_units - 1:
                return False
            if int(entry["num-slaves"]) != expected_units - 1:
                return False
        return True

    wait_for("every sentinel naming the primary, knowing exactly the others", sentinels_agree)

    def charm_agrees() -> bool:
        state = status()
        recorded = state["app"]["message"].startswith(f"primary {primary['name']};")
        roles = {u["name"]: (u["role"], u["state"]) for u in state["units"]}
        expected = {
            u["name"]: ("master", "primary") if u is primary else ("slave", "replica")
            for u in units
        }
        return recorded and roles == expected and state["settled"]

    wait_for("the charm's records and statuses agreeing with Sentinel", charm_agrees, timeout)
    return primary


@dataclasses.dataclass
class WriteReport:
    """What a `Writer` saw."""

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


class Writer:
    """A client writing ``key:<i>`` for i = 1, 2, ... to whatever primary Sentinel names."""

    def __init__(self, sentinel_addresses: list[str], interval_s: float = 0.01) -> None:
        """Write through the primary the sentinels at these addresses name."""
        self.sentinels = sentinel_addresses
        self.interval_s = interval_s
        self.admin = password()
        self.sentinel_password = password("sentinel")
        self.acknowledged: dict[int, float] = {}
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.client: redis.Redis | None = None

    def __enter__(self) -> Writer:
        self.thread.start()
        wait_for("a first acknowledged write", lambda: self.acknowledged, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _discover(self) -> redis.Redis | None:
        for address in self.sentinels:
            try:
                sentinel = redis.Redis(
                    address,
                    26379,
                    password=self.sentinel_password,
                    socket_timeout=1,
                    socket_connect_timeout=1,
                    decode_responses=True,
                )
                names = [m[1] for m in sentinel.execute_command("SENTINEL", "MASTERS")]
                host, port = sentinel.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", names[0]
                )
                return redis.Redis(
                    host, int(port), username=ADMIN_USER, password=self.admin, socket_timeout=1,
                    socket_connect_timeout=1,
                )  # fmt: skip
            except (redis.RedisError, OSError, IndexError, ValueError):
                continue
        return None

    def _run(self) -> None:
        i = 1
        while not self.stop.is_set():
            if self.client is None:
                self.client = self._discover()
                if self.client is None:
                    self.errors += 1
                    time.sleep(0.1)
                    continue
            try:
                self.client.set(f"key:{i}", i)
                self.acknowledged[i] = time.monotonic()
                i += 1
            except (redis.RedisError, OSError):
                self.errors += 1
                self.client = None  # READONLY, NOREPLICAS, a timeout: ask Sentinel again
                time.sleep(0.05)
                continue
            time.sleep(self.interval_s)

    def report(self, primary: dict) -> WriteReport:
        """Compare what was acknowledged with what the final primary holds."""
        client = redis_of(primary)
        acknowledged = sorted(self.acknowledged)
        present = set()
        for start in range(0, len(acknowledged), 1000):
            batch = acknowledged[start : start + 1000]
            values = client.mget([f"key:{i}" for i in batch])
            present |= {i for i, value in zip(batch, values, strict=True) if value is not None}
        times = [self.acknowledged[i] for i in acknowledged]
        pauses = [b - a for a, b in zip(times, times[1:], strict=False)]
        return WriteReport(
            acknowledged=len(acknowledged),
            present=len(present),
            lost=[i for i in acknowledged if i not in present],
            longest_pause_s=max(pauses, default=0.0),
            errors=self.errors,
        )
