"""The unmodified charm on `redis-k8s-local`: real Pebble, redis-server and redis-sentinel.

One cluster for the module, driven through the `redis-k8s-local` command as a
user would: bootstrap of 3 units, a config change, scale 3 -> 4 -> 3, and
`down`. Every check reads the real processes (redis INFO, SENTINEL MASTERS);
every wait is bounded.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_k8s_local import cli
from redis_k8s_local.pods import Pods

from tests.integration.cluster_support import (
    COMMAND,
    SETTLE_TIMEOUT_S,
    assert_converged,
    local,
    monitored,
    redis_of,
    skip_without_local_cluster,
    status,
    wait_for,
)

pytestmark = pytest.mark.integration

skip_without_local_cluster()


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    local("down", timeout=120)
    try:
        local("up", "--units", "3", "--timeout", str(SETTLE_TIMEOUT_S))
        yield
    finally:
        subprocess.run([str(COMMAND), "down"], capture_output=True, timeout=180, check=False)


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

    primary = assert_converged(3)
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
        fields = monitored(unit)[0]
        assert fields["down-after-milliseconds"] == "2500", fields


def test_scale_up_syncs_the_new_unit_and_scale_down_resets_the_sentinels(cluster):
    local("add-unit")
    local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
    primary = assert_converged(4)
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
    assert_converged(3)


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
