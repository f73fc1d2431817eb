"""What the real-Juju test modules share: the skip guard, the packed charm, the image.

- `skip_without_controller()` skips the calling module unless the ``juju`` CLI is
  installed and has a current controller (call it before importing jubilant).
- `charm_path()` is the packed charm to deploy: ``$REDIS_K8S_CHARM``, else the
  newest ``*.charm`` in the repository root; it fails the test saying what to do
  when there is none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "redis-k8s"
REDIS_IMAGE = "ubuntu/redis:7.0-22.04_beta"
"""The ``redis-image`` resource (charmcraft.yaml's upstream-source)."""
CHARM_ENV = "REDIS_K8S_CHARM"


def current_controller() -> str | None:
    """The current Juju controller's name, or None (no ``juju`` CLI, none set, unreachable)."""
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


def skip_without_controller() -> None:
    """Skip the calling test module unless a Juju controller is reachable."""
    if current_controller() is None:
        pytest.skip(
            "no reachable Juju controller (needs the juju CLI with a current controller)",
            allow_module_level=True,
        )


def charm_path() -> Path:
    """The packed charm: ``$REDIS_K8S_CHARM``, else the newest ``*.charm`` in the repo root."""
    configured = os.environ.get(CHARM_ENV)
    if configured:
        path = Path(configured).resolve()
        if not path.is_file():
            pytest.fail(f"{CHARM_ENV}={configured}: no such file")
        return path
    charms = sorted(REPO_ROOT.glob("*.charm"), key=lambda p: p.stat().st_mtime)
    if not charms:
        pytest.fail(
            f"no packed *.charm in {REPO_ROOT}: run `charmcraft pack` there,"
            f" or set {CHARM_ENV} to the path of a packed charm"
        )
    return charms[-1].resolve()
