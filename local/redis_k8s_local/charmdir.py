"""Lay out the charm directory the way ``charmcraft pack`` does, from the repository.

Juju runs a charm from its unpacked directory: ``dispatch`` at the root, the
code in ``src/`` and ``lib/``, and ``metadata.yaml``, ``config.yaml`` and
``actions.yaml``, which ``charmcraft pack`` splits out of the unified
``charmcraft.yaml`` (ops reads those three at run time,
``CharmMeta.from_charm_root``). They are generated here from ``charmcraft.yaml``
on every deploy, never kept by hand. The dependencies are the project's locked
environment (``.venv``), which ``dispatch`` runs ``src/charm.py`` with, as the
packed charm's ``venv`` would.

Each unit gets its own copy: ops keeps the unit's local state
(``.unit-state.db``) in the charm directory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

METADATA_KEYS = (
    "name",
    "title",
    "summary",
    "description",
    "assumes",
    "containers",
    "resources",
    "storage",
    "peers",
    "provides",
    "requires",
)
"""The keys of ``charmcraft.yaml`` that ``charmcraft pack`` writes into ``metadata.yaml``."""


def split_charmcraft(charmcraft: dict) -> tuple[dict, dict, dict]:
    """``metadata.yaml``, ``config.yaml`` and ``actions.yaml`` as pack writes them."""
    metadata = {key: charmcraft[key] for key in METADATA_KEYS if key in charmcraft}
    config = charmcraft.get("config") or {"options": {}}
    actions = charmcraft.get("actions") or {}
    return metadata, config, actions


def dispatch_script(python: str) -> str:
    """The ``dispatch`` Juju runs for every event (cwd: the charm directory).

    A ``PYTHONPATH`` in the environment is kept after ``lib:src`` (Juju sets none):
    the agent puts its peak-RSS probe there (``peakrss``).
    """
    return (
        "#!/bin/sh\n"
        "# Written by redis-k8s-local, as charmcraft pack writes it (with the project venv).\n"
        'JUJU_DISPATCH_PATH="${JUJU_DISPATCH_PATH:-$0}" \\\n'
        '    PYTHONPATH="lib:src${PYTHONPATH:+:$PYTHONPATH}" \\\n'
        f'    exec "{python}" ./src/charm.py\n'
    )


def build_charm_dir(repo: Path, dest: Path, python: str | None = None) -> Path:
    """Write the unpacked charm for one unit at ``dest`` (replacing an older copy's code).

    The unit's local state file, if any, is kept: it survives an upgrade as in Juju.
    """
    charmcraft = yaml.safe_load((repo / "charmcraft.yaml").read_text())
    metadata, config, actions = split_charmcraft(charmcraft)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("src", "lib"):
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(
            repo / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for name, content in (
        ("metadata.yaml", metadata),
        ("config.yaml", config),
        ("actions.yaml", actions),
    ):
        (dest / name).write_text(yaml.safe_dump(content, sort_keys=False))
    dispatch = dest / "dispatch"
    dispatch.write_text(dispatch_script(python or project_python(repo)))
    dispatch.chmod(0o755)
    (dest / "hooks").mkdir(exist_ok=True)
    return dest


def project_python(repo: Path) -> str:
    """The locked environment's interpreter (the packed charm's venv)."""
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
