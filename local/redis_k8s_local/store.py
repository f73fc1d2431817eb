"""The local Juju model: one JSON document on disk, shared by the agent and the hook tools.

``<state_dir>/store.json`` holds the whole model as Juju's controller would see it for
one application. Every reader and writer takes ``fcntl.flock`` on
``<state_dir>/store.lock`` (shared to read, exclusive to read-modify-write), and a
write replaces the file atomically (temporary file + ``os.replace``), so the agent
and any number of concurrent hook-tool processes never see a torn document.

Schema (every key is present in a document made by :func:`new_model`)::

    {
      "model": str,                 # JUJU_MODEL_NAME
      "model_uuid": str,            # JUJU_MODEL_UUID
      "app": str,                   # the one application
      "leader": str | None,         # the leader unit's name
      "config": {option: value},    # only what the operator set; config-get adds the
                                    # defaults of <charm dir>/config.yaml
      "units": {
        unit: {
          "address": str,           # network-get bind and ingress address
          "hostname": str,
          "status": {"status": str, "message": str},
          "workload_version": str,  # application-version-set
          "ports": [str],           # open-port, as opened-ports prints them: "6379/tcp"
          "life": "alive" | "dying",  # goal-state reports dying units as such
        }
      },
      "app_status": {"status": str, "message": str},
      "relations": {
        "<id>": {
          "endpoint": str,          # the local endpoint ("redis-peers")
          "interface": str,
          "app_data": {key: value},         # our application's databag
          "unit_data": {unit: {key: value}},  # the unit databags, by unit name
          "units": [unit, ...],     # every unit in the relation, of either side:
                                    # a unit sees the relation (relation-ids, -r) only
                                    # while it is listed; relation-list shows the others
          # optional, for a relation to another application (absent for peers):
          "remote_app": str,
          "remote_app_data": {key: value},  # the remote application's databag
        }
      },
      "secrets": {
        "secret:<xid>": {
          "owner": "application" | "unit",
          "owner_name": str,        # the app or unit name
          "label": str | None,      # the owner's label
          "description": str | None,
          "expire": str | None,
          "rotate": str | None,
          "revision": int,          # the latest revision
          "contents": {"<rev>": {key: value}},
          "tracked": {unit: rev},   # the revision each observer unit sees (first get tracks)
          "labels": {unit: label},  # observers' labels
          "grants": {"<relation id>": [app or unit, ...]},
          "notified": {unit: rev},  # the last revision secret-changed was queued for
        }
      },
      "actions": {
        "<id>": {
          "unit": str, "name": str,
          "params": {},             # what the operator gave; action-get adds the
                                    # defaults of <charm dir>/actions.yaml
          "results": {},            # action-set, nested on the dots of the keys
          "status": "pending" | "running" | "completed" | "failed",
                                    # the agent sets "running" and "completed";
                                    # action-fail sets "failed"
          "message": str,           # action-fail
          "log": [str],             # action-log
        }
      },
      "storage": {unit: {"data/<n>": location}},
      "pending": {
        "<JUJU_CONTEXT_ID>": {      # relation-set writes of a running hook, see below
          "unit": str,
          "relations": {"<id>": {"app": {key: value}, "unit": {key: value}}},
        }
      },
    }

Relation data, as in Juju, is committed only when the hook succeeds: when the hook's
environment has ``JUJU_CONTEXT_ID``, ``relation-set`` writes into ``pending[<context>]``
(the hook itself reads its own writes back), and the agent calls :func:`commit_context`
after ``dispatch`` exits 0 or :func:`discard_context` otherwise. Without
``JUJU_CONTEXT_ID`` writes land at once. An empty value deletes a key, in both places.
Status, secrets, ports and action results are applied at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORE_FILE = "store.json"
LOCK_FILE = "store.lock"
# Juju's secret IDs are xids: 20 characters of lowercase base32hex.
_XID_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
UNKNOWN_STATUS = {"status": "unknown", "message": ""}


class Store:
    """The model document of one state directory, locked for every access."""

    def __init__(self, state_dir: Path) -> None:
        """Use ``state_dir`` (created if missing) for the document and its lock."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / STORE_FILE
        self.lock_path = self.state_dir / LOCK_FILE

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def read(self) -> dict[str, Any]:
        """A snapshot of the whole document (``{}`` before the first write)."""
        with self._locked(fcntl.LOCK_SH):
            return self._load()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Yield the whole document, locked; write it back if the block raises nothing.

        Not reentrant: do not open a transaction (or ``read``) inside another one on
        the same store from the same process.
        """
        with self._locked(fcntl.LOCK_EX):
            doc = self._load()
            yield doc
            tmp = self.path.with_name(f".{STORE_FILE}.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)


# ----------------------------------------------------------------- building a model


def new_model(model: str, app: str, model_uuid: str | None = None) -> dict[str, Any]:
    """A fresh document for application ``app`` in model ``model``, with no units yet."""
    import uuid  # here, not at the top: every hook tool imports this module

    return {
        "model": model,
        "model_uuid": model_uuid or str(uuid.uuid4()),
        "app": app,
        "leader": None,
        "config": {},
        "units": {},
        "app_status": dict(UNKNOWN_STATUS),
        "relations": {},
        "secrets": {},
        "actions": {},
        "storage": {},
        "pending": {},
    }


def add_unit(doc: dict[str, Any], unit: str, address: str, hostname: str = "") -> None:
    """Add ``unit`` (``app/n``) with its pod address; it joins no relation by itself."""
    doc["units"][unit] = {
        "address": address,
        "hostname": hostname or unit.replace("/", "-"),
        "status": dict(UNKNOWN_STATUS),
        "workload_version": "",
        "ports": [],
        "life": "alive",
    }


def _next_id(table: dict[str, Any]) -> int:
    return max((int(key) for key in table), default=-1) + 1


def add_relation(
    doc: dict[str, Any],
    endpoint: str,
    interface: str,
    *,
    remote_app: str | None = None,
    units: list[str] | None = None,
    relation_id: int | None = None,
) -> int:
    """Add a relation on ``endpoint`` (a peer relation unless ``remote_app``); its id.

    The id is the next free one unless ``relation_id`` is given.
    """
    if relation_id is None:
        relation_id = _next_id(doc["relations"])
    doc["relations"][str(relation_id)] = {
        "endpoint": endpoint,
        "interface": interface,
        "app_data": {},
        "unit_data": {},
        "units": list(units or []),
    }
    if remote_app is not None:
        doc["relations"][str(relation_id)].update(remote_app=remote_app, remote_app_data={})
    return relation_id


def add_action(
    doc: dict[str, Any], unit: str, name: str, params: dict[str, Any] | None = None
) -> str:
    """Queue action ``name`` on ``unit``; its id (``JUJU_ACTION_UUID``)."""
    action_id = str(_next_id(doc["actions"]))
    doc["actions"][action_id] = {
        "unit": unit,
        "name": name,
        "params": dict(params or {}),
        "results": {},
        "status": "pending",
        "message": "",
        "log": [],
    }
    return action_id


# ----------------------------------------------------------------------- secrets


def new_secret_id() -> str:
    """A new secret URI in Juju's form, ``secret:<xid>`` (20 lowercase base32hex)."""
    import secrets

    return "secret:" + "".join(secrets.choice(_XID_ALPHABET) for _ in range(20))


def secret_key(ref: str) -> str:
    """The store key of a secret given in any form ops uses.

    ``secret:<xid>``, ``secret://<model uuid>/<xid>`` and a bare ``<xid>`` all give
    ``secret:<xid>``.
    """
    ref = ref.strip()
    ref = ref.removeprefix("secret:")
    return "secret:" + ref.rsplit("/", 1)[-1]


def secret_changes(doc: dict[str, Any]) -> list[tuple[str, str, str | None, int]]:
    """The ``secret-changed`` events due: ``(unit, secret id, unit's label, revision)``.

    One per observer unit whose tracked revision is older than the latest, once per
    revision (the revisions returned are marked as notified in ``doc``).
    """
    due: list[tuple[str, str, str | None, int]] = []
    for secret_id, secret in doc["secrets"].items():
        latest = secret["revision"]
        for unit, tracked in secret["tracked"].items():
            if tracked < latest and secret["notified"].get(unit, 0) < latest:
                secret["notified"][unit] = latest
                due.append((unit, secret_id, secret["labels"].get(unit), latest))
    return due


# --------------------------------------------------------------- hook contexts


def commit_context(doc: dict[str, Any], context_id: str) -> list[tuple[str, str]]:
    """Apply the relation-set writes of a successful hook; the databags that changed.

    Returns ``(relation id, app or unit name)`` pairs, to queue ``relation-changed``
    for the other units of those relations.
    """
    pending = doc.get("pending", {}).pop(context_id, None)
    if pending is None:
        return []
    changed: list[tuple[str, str]] = []
    unit = pending["unit"]
    for relation_id, bags in pending["relations"].items():
        relation = doc["relations"].get(relation_id)
        if relation is None:  # gone during the hook: dead relations tell no tales
            continue
        for kind, writes in bags.items():
            if kind == "app":
                owner, bag = unit.split("/")[0], relation.setdefault("app_data", {})
            else:
                owner, bag = unit, relation.setdefault("unit_data", {}).setdefault(unit, {})
            if apply_writes(bag, writes):
                changed.append((relation_id, owner))
    return changed


def discard_context(doc: dict[str, Any], context_id: str) -> None:
    """Forget the relation-set writes of a failed hook."""
    doc.get("pending", {}).pop(context_id, None)


def apply_writes(bag: dict[str, str], writes: dict[str, str]) -> bool:
    """Apply relation-set ``writes`` to ``bag`` (an empty value deletes); any change."""
    before = dict(bag)
    for key, value in writes.items():
        if value == "":
            bag.pop(key, None)
        else:
            bag[key] = value
    return bag != before


# --------------------------------------------------------------- charm defaults


def _yaml(path: Path) -> dict[str, Any]:
    import yaml  # only the tools that read charm files pay for the import

    try:
        with open(path) as f:
            return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except FileNotFoundError:
        return {}


def config_defaults(charm_dir: Path) -> dict[str, Any]:
    """The options of ``<charm_dir>/config.yaml`` that have a default, with it."""
    options = _yaml(Path(charm_dir) / "config.yaml").get("options") or {}
    return {
        name: option["default"]
        for name, option in options.items()
        if (option or {}).get("default") is not None
    }


def effective_config(doc: dict[str, Any], charm_dir: Path) -> dict[str, Any]:
    """What ``config-get`` shows: the defaults, overridden by the operator's values."""
    return {**config_defaults(charm_dir), **doc.get("config", {})}


def action_defaults(charm_dir: Path, name: str) -> dict[str, Any]:
    """The defaults of action ``name``'s parameters, from ``<charm_dir>/actions.yaml``."""
    action = _yaml(Path(charm_dir) / "actions.yaml").get(name) or {}
    params = action.get("params") or {}
    return {
        key: spec["default"]
        for key, spec in params.items()
        if isinstance(spec, dict) and "default" in spec
    }
