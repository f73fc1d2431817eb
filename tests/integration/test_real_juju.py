"""Tests against a real Juju controller, with jubilant.

Skipped unless the ``juju`` CLI is installed and has a current controller; the
tests that run on every machine use real Pebble and redis without Juju.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _current_controller() -> str | None:
    if shutil.which("juju") is None:
        return None
    try:
        out = subprocess.run(
            ["juju", "controllers", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return json.loads(out).get("current-controller") or None
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


if _current_controller() is None:
    pytest.skip(
        "no reachable Juju controller (needs the juju CLI with a current controller)",
        allow_module_level=True,
    )

import jubilant  # noqa: E402  (only needed when a controller is reachable)


def test_deploy_three_units_goes_active():
    charms = sorted(REPO_ROOT.glob("*.charm"))
    if not charms:
        pytest.fail("no packed *.charm in the repository root: run `charmcraft pack` first")
    with jubilant.temp_model() as juju:
        juju.deploy(
            charms[0],
            "redis-k8s",
            num_units=3,
            resources={"redis-image": "ubuntu/redis:7.0-22.04_beta"},
        )
        juju.wait(jubilant.all_active, timeout=15 * 60)
