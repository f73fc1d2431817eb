"""The unmodified charm on `redis-k8s-local`: real Pebble, redis-server and redis-sentinel.

One cluster for the module, driven through the `redis-k8s-local` command as a
user would: bootstrap of 3 units, a config change, scale 3 -> 4 -> 3, and
`down`. Every check reads the real processes (redis INFO, SENTINEL MASTERS);
every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis_k8s_local import cli
from redis_k8s_local.pods import Pods

pytestmark = pytest.mark.integration
T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
COMMAND = REPO / ".venv" / "bin" / "redis-k8s-local"
SETTLE_TIMEOUT_S = 240

if os.geteuid() != 0 or cli.missing_prerequisites():
    pytest.skip(
        f"the local cluster needs root and: {cli.missing_prerequisites()} (bash .ci/setup)",
        allow_module_level=True,
    )


def local(*args: str, timeout: float = SETTLE_TIMEOUT_S + 60) -> str:
    """Run `redis-k8s-local ARGS`; fail the test with its output if it exits non-zero."""
    result = subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def status() -> dict:
    return json.loads(local("status", "--json"))


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (redis.RedisError, OSError, AssertionError) as error:
            last, value = error, None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    local("down", timeout=120)
    try:
        local("up", "--units", "3", "--timeout", str(SETTLE_TIMEOUT_S))
        yield
    finally:
        subprocess.run([str(COMMAND), "down"], capture_output=True, timeout=180, check=False)


def password(which: str = "admin") -> str:
    return local("password", which).strip()


def redis_of(unit: dict) -> redis.Redis:
    return redis.Redis(unit["address"], 6379, password=password(), socket_timeout=2)


def sentinel_of(unit: dict) -> redis.Redis:
    return redis.Redis(
        unit["address"], 26379, password=password("sentinel"), socket_timeout=2,
        decode_responses=True,
    )  # fmt: skip


def roles(units: list[dict]) -> dict[str, str]:
    return {u["name"]: redis_of(u).info("replication")["role"] for u in units}


def assert_one_primary_and_agreeing_sentinels(expected_units: int) -> dict:
    """One master, the others its connected replicas, every sentinel agreeing on it."""
    units = status()["units"]
    assert len(units) == expected_units
    by_role = roles(units)
    masters = [name for name, role in by_role.items() if role == "master"]
    assert len(masters) == 1, by_role
    primary = next(u for u in units if u["name"] == masters[0])

    def replicas_linked() -> bool:
        for unit in units:
            if unit is primary:
                continue
            info = redis_of(unit).info("replication")
            assert info["master_host"] == primary["hostname"], info
            if info["master_link_status"] != "up":
                return False
        return True

    wait_for("every replica linked to the primary", replicas_linked)

    def sentinels_agree() -> bool:
        for unit in units:
            masters_seen = sentinel_of(unit).execute_command("SENTINEL", "MASTERS")
            entries = [dict(zip(m[::2], m[1::2], strict=False)) for m in masters_seen]
            assert len(entries) == 1, entries
            entry = entries[0]
            assert entry["ip"] == primary["hostname"], entry
            assert int(entry["quorum"]) == expected_units // 2 + 1, entry
            if int(entry["num-other-sentinels"]) != expected_units - 1:
                return False
            if int(entry["num-slaves"]) != expected_units - 1:
                return False
        return True

    wait_for("every sentinel naming the primary, knowing exactly the others", sentinels_agree)
    return primary


# ---------------------------------------------------------------------- tests


def test_three_units_bootstrap_into_one_primary_two_replicas_and_agreeing_sentinels(cluster):
    state = status()
    assert set(state) >= {"app", "units", "settled"}
    assert set(state["app"]) >= {"status", "message"}
    for unit in state["units"]:
        assert set(unit) >= {
            "name", "leader", "workload_status", "message", "role", "state", "address",
            "hostname",
        }  # fmt: skip
        assert unit["workload_status"] == "active", unit
    assert state["settled"] is True
    assert state["app"]["status"] == "active", state["app"]
    assert sum(1 for u in state["units"] if u["leader"]) == 1

    primary = assert_one_primary_and_agreeing_sentinels(3)
    redis_of(primary).set("written-on-the-primary", "42")
    for unit in state["units"]:
        wait_for(
            f"the key on {unit['name']}",
            lambda unit=unit: redis_of(unit).get("written-on-the-primary") == b"42",
        )


def test_a_second_up_says_a_cluster_runs_instead_of_starting_another(cluster):
    again = subprocess.run([str(COMMAND), "up"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert "a local cluster is already running (3 units)" in again.stdout
    assert len(status()["units"]) == 3


def test_a_config_change_is_applied_to_the_running_processes(cluster):
    local("config", "maxmemory=64mb", "sentinel-down-after-ms=2500")
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    for unit in status()["units"]:
        assert redis_of(unit).config_get("maxmemory")["maxmemory"] == str(64 * 1024**2)
        entry = sentinel_of(unit).execute_command("SENTINEL", "MASTERS")[0]
        fields = dict(zip(entry[::2], entry[1::2], strict=False))
        assert fields["down-after-milliseconds"] == "2500", fields


def test_scale_up_syncs_the_new_unit_and_scale_down_resets_the_sentinels(cluster):
    local("add-unit")
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    primary = assert_one_primary_and_agreeing_sentinels(4)
    new = status()["units"][-1]
    assert new["name"] == "redis-k8s/3"
    assert redis_of(new).get("written-on-the-primary") == b"42"
    assert primary["name"] != new["name"]

    local("remove-unit", new["name"])
    wait_for("the unit to go", lambda: len(status()["units"]) == 3, timeout=SETTLE_TIMEOUT_S)
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    wait_for(
        "the sentinel resets to end",
        lambda: status()["app"]["message"].endswith("HA, sentinel quorum 2/3"),
        timeout=SETTLE_TIMEOUT_S,
    )
    assert_one_primary_and_agreeing_sentinels(3)


def test_every_hook_of_the_run_exited_zero(cluster):
    hooks = status()["hooks"]
    assert hooks["dispatched"] > 0
    assert hooks["failed"] == 0, hooks


def test_down_leaves_nothing_behind(cluster):
    local("down", timeout=180)
    pebble = cli.pebble_binary() or Path(shutil.which("pebble") or "pebble")
    assert Pods(cli.state_dir(), pebble).leftovers() == []
    assert not cli.state_dir().exists()
    assert "redis-k8s-local" not in Path("/etc/hosts").read_text()
    local("down", timeout=60)  # safe twice
