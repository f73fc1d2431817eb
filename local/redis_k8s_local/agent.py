"""The local Juju agent: units as pods on this machine, events delivered as Juju delivers them.

One daemon process (``redis-k8s-local up`` starts it) owns the model: the
pods (``pods``), the store the hook tools read and write (``store``), and one
queue of events per unit. Each unit has a worker thread that runs the queued
events one at a time, each as a fresh ``dispatch`` process of the unmodified
charm in the unit's own view of ``/charm/containers`` (as Juju's uniter does:
one hook at a time per unit, units in parallel). What Juju derives from a hook
is derived here too:

- a unit databag written by a hook: ``relation-changed`` on every other unit
  (remote unit: the writer); the app databag written by the leader:
  ``relation-changed`` on every other unit (remote app only). A pending
  ``relation-changed`` for the same remote is not queued twice: Juju runs it
  once, with the latest data;
- a secret revised by its owner: ``secret-changed`` on the units that track an
  older revision;
- a hook that exits non-zero: the unit is in error, shown in status, and the
  same hook is retried with a growing delay, as Juju retries failed hooks.

A watcher per Pebble daemon waits for custom notices as Juju's uniter does (a
long-polling ``GET /v1/notices``, Pebble's ``WaitNotices``): a new one becomes
``<container>-pebble-custom-notice`` as soon as it is raised. Checks are polled:
one going down or up becomes ``<container>-pebble-check-failed`` / ``-recovered``.
``update-status`` is queued on every unit periodically.

Event sequences (Juju 3.6, Kubernetes sidecar charms):

- a new unit: ``data-storage-attached``, ``install``, ``redis-peers-relation-created``,
  ``leader-elected`` (the leader), ``config-changed``, ``start``,
  ``redis-pebble-ready``, ``sentinel-pebble-ready``, then ``relation-joined`` and
  ``relation-changed`` for every peer; every peer gets them for the new unit;
- a restarted pod: ``upgrade-charm``, ``config-changed``, ``start`` and the two
  pebble-ready events;
- a removed unit: ``relation-departed`` for each peer, ``relation-broken``,
  ``data-storage-detaching``, ``stop``, ``remove``; then the pod goes and every
  other unit gets ``relation-departed`` for it (and a new leader
  ``leader-elected`` if it was the leader).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ops import pebble

from redis_k8s_local import charmdir, hooktool, peakrss
from redis_k8s_local.pods import Pods, PodSpec, pod_spec
from redis_k8s_local.store import (
    Store,
    add_action,
    add_relation,
    add_unit,
    apply_writes,
    commit_context,
    discard_context,
    new_model,
)

logger = logging.getLogger(__name__)

JUJU_VERSION = "3.6.8"
PEER = "redis-peers"
PEER_RELATION_ID = "1"
CONTAINERS = ("redis", "sentinel")
STORAGE = "data"
HOOK_TIMEOUT_S = 300
RETRY_DELAYS_S = (2, 4, 8, 16, 30)
PEBBLE_POLL_S = 0.25
NOTICE_WAIT_S = 5
"""How long one long-polling notices request waits in Pebble before it is renewed."""
SETTLED_STATUSES = frozenset({"active", "blocked"})


@dataclasses.dataclass
class HookRecord:
    """One dispatch: what ran, how long, how it ended."""

    unit: str
    hook: str
    started: float
    seconds: float
    exit_code: int
    max_rss_kib: int = 0
    """The dispatched charm process's own peak RSS (``VmHWM``, reported at its exit:
    ``peakrss``); 0 if it reported none (killed, or never started)."""


@dataclasses.dataclass
class Unit:
    """One unit as the agent runs it."""

    name: str
    spec: PodSpec
    charm_dir: Path
    queue: deque[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=deque)
    running: str | None = None
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    leaving: bool = False
    removed: bool = False
    pod_up: bool = False
    seen_notices: dict[str, str] = dataclasses.field(default_factory=dict)
    check_status: dict[str, str] = dataclasses.field(default_factory=dict)


class Agent:
    """The model of one application on this machine."""

    def __init__(
        self,
        state_dir: Path,
        repo: Path,
        pebble_binary: Path,
        *,
        app: str = "redis-k8s",
        model: str = "local",
        update_status_s: float = 60.0,
        jujuc: Path | None = None,
    ) -> None:
        """An agent for ``app`` keeping its store, pods and logs under ``state_dir``."""
        self.state_dir = state_dir
        self.repo = repo
        self.app = app
        self.model = model
        self.update_status_s = update_status_s
        self.store = Store(state_dir)
        self.pods = Pods(state_dir, pebble_binary)
        self.tools_bin = state_dir / "bin"
        self.jujuc = jujuc
        """The hook tools' binary (each tool a link to it); None: Python scripts."""
        self.peak_rss_dir = state_dir / "peak-rss"
        self.units: dict[str, Unit] = {}
        self.history: list[HookRecord] = []
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.notice_watchers: dict[tuple[str, str], threading.Thread] = {}
        self.notice_wait_s: float = NOTICE_WAIT_S
        self.next_number = 0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Prepare the state directory and start the watcher and update-status threads."""
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        hooktool.install_tools(self.tools_bin, self.jujuc)
        peakrss.install(self.peak_rss_dir)
        with self.store.transaction() as doc:
            if not doc.get("model_uuid"):
                doc.update(new_model(self.model, self.app))
                add_relation(doc, PEER, "redis_peers", relation_id=int(PEER_RELATION_ID))
        for target in (self._watch_pebble, self._tick_update_status):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self.threads.append(thread)

    def shutdown(self) -> None:
        """Stop delivering events and tear every pod down."""
        self.stopping.set()
        with self.wake:
            self.wake.notify_all()
        for unit in list(self.units.values()):
            with contextlib.suppress(Exception):
                self.pods.destroy(unit.spec)
        self.pods.cleanup()

    # ---------------------------------------------------------------- deploy

    def add_units(self, count: int) -> list[str]:
        """Add ``count`` units: pods, charm directories, and the new-unit event sequence."""
        added = []
        for _ in range(count):
            with self.lock:
                number = self.next_number
                self.next_number += 1
            spec = pod_spec(self.state_dir, self.app, number)
            name = spec.unit
            charm_dir = charmdir.build_charm_dir(self.repo, self.state_dir / "charms" / name)
            unit = Unit(name=name, spec=spec, charm_dir=charm_dir)
            with self.store.transaction() as doc:
                add_unit(doc, name, spec.address, spec.hostname)
                doc["units"][name]["status"] = {
                    "status": "waiting",
                    "message": "agent initialising",
                }
                doc["storage"][name] = {f"{STORAGE}/{number}": "/var/lib/redis"}
                relation = doc["relations"][PEER_RELATION_ID]
                peers = list(relation["units"])
                relation["units"].append(name)
                relation["unit_data"][name] = {}
                clients = self._client_relations(doc)
                for _, client in clients:
                    client["units"].append(name)
                    client["unit_data"][name] = {}
                leader = doc["leader"]
                if leader is None:
                    doc["leader"] = leader = name
            self.pods.add_hosts([u.spec for u in self.units.values()] + [spec])
            self.pods.start(spec)
            unit.pod_up = True
            sequence = [
                (f"{STORAGE}-storage-attached", {"JUJU_STORAGE_ID": f"{STORAGE}/{number}"}),
                ("install", {}),
                (f"{PEER}-relation-created", self._relation_env()),
            ]
            if leader == name:
                sequence.append(("leader-elected", {}))
            sequence += [("config-changed", {}), ("start", {})]
            sequence += [(f"{c}-pebble-ready", {"JUJU_WORKLOAD_NAME": c}) for c in CONTAINERS]
            for relation_id, client in clients:
                sequence += self._joining(relation_id, client)
            for peer in peers:
                sequence += [
                    (f"{PEER}-relation-joined", self._relation_env(remote=peer)),
                    (f"{PEER}-relation-changed", self._relation_env(remote=peer)),
                ]
            with self.wake:
                self.units[name] = unit
                unit.queue.extend(sequence)
                for peer in peers:
                    other = self.units.get(peer)
                    if other is not None and not other.leaving:
                        other.queue.append(
                            (f"{PEER}-relation-joined", self._relation_env(remote=name))
                        )
                        other.queue.append(
                            (f"{PEER}-relation-changed", self._relation_env(remote=name))
                        )
                thread = threading.Thread(target=self._worker, args=(unit,), daemon=True)
                thread.start()
                self.threads.append(thread)
                self.wake.notify_all()
            added.append(name)
        return added

    def remove_units(self, names: list[str]) -> None:
        """Start removing units: their own departure sequence first (see the module doc)."""
        with self.wake:
            # As `juju remove-unit a b` does: every named unit is dying before any of
            # their hooks runs, and goal-state says so to all units.
            with self.store.transaction() as doc:
                for name in names:
                    if name in doc["units"]:
                        doc["units"][name]["life"] = "dying"
            for name in names:
                unit = self._unit(name)
                if unit.leaving:
                    continue
                unit.leaving = True
                peers = [u for u in self._members() if u != name]
                doc = self.store.read()
                for relation_id, client in self._client_relations(doc):
                    unit.queue.extend(self._parting(relation_id, client, departing=name))
                for peer in peers:
                    env = self._relation_env(remote=peer, departing=name)
                    unit.queue.append((f"{PEER}-relation-departed", env))
                unit.queue.append((f"{PEER}-relation-broken", self._relation_env()))
                unit.queue.append(
                    (
                        f"{STORAGE}-storage-detaching",
                        {"JUJU_STORAGE_ID": f"{STORAGE}/{unit.spec.number}"},
                    )
                )
                unit.queue.append(("stop", {}))
                unit.queue.append(("remove", {}))
            self.wake.notify_all()

    def _finish_removal(self, unit: Unit) -> None:
        """The unit ran ``remove``: its pod goes, the others see it depart."""
        self.pods.destroy(unit.spec)
        unit.pod_up = False
        unit.removed = True
        new_leader = None
        with self.store.transaction() as doc:
            relation = doc["relations"][PEER_RELATION_ID]
            for member_of in (relation, *(c for _, c in self._client_relations(doc))):
                _forget(member_of, unit.name)
            doc["units"].pop(unit.name, None)
            doc["storage"].pop(unit.name, None)
            remaining = list(relation["units"])
            if doc["leader"] == unit.name:
                doc["leader"] = new_leader = remaining[0] if remaining else None
        self.pods.remove_hosts([unit.spec])
        with self.wake:
            self.units.pop(unit.name, None)
            for name in remaining:
                other = self.units[name]
                env = self._relation_env(remote=unit.name, departing=unit.name)
                other.queue.append((f"{PEER}-relation-departed", env))
            if new_leader is not None:
                self.units[new_leader].queue.append(("leader-elected", {}))
            self.wake.notify_all()

    # ------------------------------------------------------- client relations

    def relate(self, endpoint: str, remote_app: str, interface: str, remote_units: int) -> int:
        """Relate ``endpoint`` to an application the caller plays (see ``remote_set``).

        Its units (``<remote_app>/0``...) run no charm: their data is what the
        caller writes. Each of our units gets ``relation-created``, then
        ``relation-joined`` and ``relation-changed`` for every remote unit.
        Units added later join the relation the same way.

        Returns:
            The relation id.
        """
        remote = [f"{remote_app}/{n}" for n in range(remote_units)]
        with self.store.transaction() as doc:
            ours = list(doc["relations"][PEER_RELATION_ID]["units"])
            relation_id = add_relation(
                doc, endpoint, interface, remote_app=remote_app, units=ours + remote
            )
            relation = doc["relations"][str(relation_id)]
            relation["unit_data"] = {name: {} for name in ours + remote}
            joining = self._joining(str(relation_id), relation)
        with self.wake:
            for name in ours:
                unit = self.units.get(name)
                if unit is not None and not unit.leaving:
                    unit.queue.extend(joining)
            self.wake.notify_all()
        return relation_id

    def remote_set(
        self,
        relation_id: str,
        app_data: dict[str, str] | None = None,
        unit: str | None = None,
        unit_data: dict[str, str] | None = None,
    ) -> None:
        """The remote application (or one of its units) writes its databag ("" deletes a key).

        Our units get ``relation-changed``: with no remote unit for the
        application's databag, with ``unit`` for a unit's.
        """
        with self.store.transaction() as doc:
            relation = doc["relations"][relation_id]
            endpoint, remote_app = relation["endpoint"], relation["remote_app"]
            changed_app = apply_writes(relation["remote_app_data"], app_data or {})
            changed_unit = False
            if unit is not None:
                if unit not in relation["units"] or unit.split("/")[0] != remote_app:
                    raise ValueError(f"{unit} is not a unit of {remote_app} in this relation")
                changed_unit = apply_writes(relation["unit_data"][unit], unit_data or {})
            ours = [u for u in relation["units"] if u.split("/")[0] == self.app]
        env = self._client_env(relation_id, endpoint, remote_app)
        with self.wake:
            for name in ours:
                other = self.units.get(name)
                if other is None or other.leaving:
                    continue
                if changed_app:
                    self._queue_once(
                        other, f"{endpoint}-relation-changed", {**env, "JUJU_REMOTE_UNIT": ""}
                    )
                if changed_unit:
                    self._queue_once(
                        other, f"{endpoint}-relation-changed", {**env, "JUJU_REMOTE_UNIT": unit}
                    )
            self.wake.notify_all()

    def unrelate(self, relation_id: str) -> None:
        """Remove the relation: ``relation-departed`` for each remote unit, then ``-broken``.

        The relation is gone from the model when every one of our units has run
        its ``relation-broken``.
        """
        with self.store.transaction() as doc:
            relation = doc["relations"][relation_id]
            ours = [u for u in relation["units"] if u.split("/")[0] == self.app]
            relation["dying"] = True
            parting = self._parting(relation_id, relation, departing=None)
        with self.wake:
            for name in ours:
                unit = self.units.get(name)
                if unit is not None:
                    unit.queue.extend(parting)
            self.wake.notify_all()

    def _joining(self, relation_id: str, relation: dict) -> list:
        """The events of one of our units joining a client relation."""
        env = self._client_env(relation_id, relation["endpoint"], relation["remote_app"])
        events = [(f"{relation['endpoint']}-relation-created", env)]
        for member in _remote_units(relation):
            events += [
                (f"{relation['endpoint']}-relation-joined", {**env, "JUJU_REMOTE_UNIT": member}),
                (f"{relation['endpoint']}-relation-changed", {**env, "JUJU_REMOTE_UNIT": member}),
            ]
        return events

    def _parting(self, relation_id: str, relation: dict, *, departing: str | None) -> list:
        """The events of one of our units leaving a client relation: departed, then broken.

        ``relation-departed`` for each remote unit (``JUJU_REMOTE_UNIT``), with
        ``JUJU_DEPARTING_UNIT`` the unit that leaves the relation: ``departing``, our
        unit being removed (as for the peer relation, Juju names the local unit
        itself), or, when ``departing`` is None (the relation is removed), each
        remote unit.
        """
        env = self._client_env(relation_id, relation["endpoint"], relation["remote_app"])
        events = []
        for member in _remote_units(relation):
            departed = {
                **env,
                "JUJU_REMOTE_UNIT": member,
                "JUJU_DEPARTING_UNIT": departing or member,
            }
            events.append((f"{relation['endpoint']}-relation-departed", departed))
        return [*events, (f"{relation['endpoint']}-relation-broken", env)]

    @staticmethod
    def _client_env(relation_id: str, endpoint: str, remote_app: str) -> dict[str, str]:
        return {
            "JUJU_RELATION": endpoint,
            "JUJU_RELATION_ID": f"{endpoint}:{relation_id}",
            "JUJU_REMOTE_APP": remote_app,
        }

    def _client_relations(self, doc: dict) -> list[tuple[str, dict]]:
        """``(id, relation)`` of every live relation to another application."""
        return [
            (relation_id, relation)
            for relation_id, relation in doc["relations"].items()
            if relation.get("remote_app") and not relation.get("dying")
        ]

    # ------------------------------------------------------------ operations

    def set_config(self, values: dict[str, str]) -> None:
        """The operator changed config: every unit gets config-changed."""
        with self.store.transaction() as doc:
            for key, value in values.items():
                if value == "":
                    doc["config"].pop(key, None)
                else:
                    doc["config"][key] = value
        self.queue_everywhere("config-changed")

    def run_action(self, unit_name: str, action: str, params: dict[str, object]) -> str:
        """Queue an action on a unit; returns its id (``action_result`` waits for it)."""
        self._unit(unit_name)
        with self.store.transaction() as doc:
            action_id = add_action(doc, unit_name, action, params)
        env = {"JUJU_ACTION_NAME": action, "JUJU_ACTION_UUID": action_id}
        self.queue(unit_name, f"{action}-action", env)
        return action_id

    def action_result(self, action_id: str) -> dict | None:
        """The action's record once it ended, else None."""
        record = self.store.read()["actions"].get(action_id)
        if record is None or record["status"] in ("pending", "running"):
            return None
        return record

    def delete_pod(self, unit_name: str, down_for_s: float = 5.0) -> None:
        """The pod dies at once (no hook) and comes back with its storage, as a new pod.

        Kubernetes takes seconds to reschedule a deleted pod (termination, a new
        pod, the containers starting); the pod stays down ``down_for_s`` first.
        """
        unit = self._unit(unit_name)
        with self.wake:
            unit.queue.clear()
            unit.pod_up = False
        self.pods.delete(unit.spec)
        unit.seen_notices.clear()
        unit.check_status.clear()
        threading.Thread(target=self._restart_pod, args=(unit, down_for_s), daemon=True).start()

    def _restart_pod(self, unit: Unit, down_for_s: float) -> None:
        if self.stopping.wait(down_for_s) or unit.removed:
            return
        self.pods.start(unit.spec)
        with self.wake:
            unit.pod_up = True
            unit.queue.extend(
                [("upgrade-charm", {}), ("config-changed", {}), ("start", {})]
                + [(f"{c}-pebble-ready", {"JUJU_WORKLOAD_NAME": c}) for c in CONTAINERS]
            )
            self.wake.notify_all()

    def queue(self, unit_name: str, hook: str, env: dict[str, str] | None = None) -> None:
        """Queue one event on a unit."""
        with self.wake:
            self._unit(unit_name).queue.append((hook, env or {}))
            self.wake.notify_all()

    def queue_everywhere(self, hook: str) -> None:
        """Queue one event on every unit that is not leaving."""
        with self.wake:
            for unit in self.units.values():
                if not unit.leaving:
                    unit.queue.append((hook, {}))
            self.wake.notify_all()

    # ---------------------------------------------------------------- status

    def settled(self) -> bool:
        """No hook queued or running, no unit in error, every unit active or blocked."""
        doc = self.store.read()
        with self.lock:
            units = list(self.units.values())
            if not units:
                return False
            for unit in units:
                if unit.queue or unit.running or unit.error or not unit.pod_up:
                    return False
                status = doc["units"].get(unit.name, {}).get("status", {})
                if status.get("status") not in SETTLED_STATUSES:
                    return False
        return True

    def status(self) -> dict:
        """Everything ``redis-k8s-local status`` shows."""
        doc = self.store.read()
        relation = doc["relations"][PEER_RELATION_ID]
        units = []
        with self.lock:
            for name in sorted(self.units, key=lambda n: int(n.rsplit("/", 1)[1])):
                unit = self.units[name]
                record = doc["units"].get(name, {})
                status = record.get("status", {})
                facts = _unit_facts(relation["unit_data"].get(name, {}))
                units.append(
                    {
                        "name": name,
                        "leader": doc["leader"] == name,
                        "workload_status": "error" if unit.error else status.get("status"),
                        "message": unit.error or status.get("message", ""),
                        "role": facts.get("role", "unknown"),
                        "state": facts.get("state", ""),
                        "address": unit.spec.address,
                        "hostname": unit.spec.hostname,
                        "queued": len(unit.queue),
                        "running": unit.running,
                        "leaving": unit.leaving,
                    }
                )
        return {
            "app": {"name": self.app, **doc["app_status"]},
            "units": units,
            "settled": self.settled(),
            "hooks": {
                "dispatched": len(self.history),
                "failed": sum(1 for h in self.history if h.exit_code != 0),
                "tools": "jujuc" if self.jujuc is not None else "python",
            },
        }

    # ----------------------------------------------------------------- workers

    def _worker(self, unit: Unit) -> None:
        """Run the unit's events one at a time until it is removed or the agent stops."""
        while not self.stopping.is_set():
            with self.wake:
                while not self.stopping.is_set() and not self._ready(unit):
                    timeout = max(unit.retry_at - time.monotonic(), 0.05) if unit.error else None
                    self.wake.wait(timeout)
                if self.stopping.is_set():
                    return
                hook, env = unit.queue[0]
                unit.running = hook
            exit_code = self._dispatch(unit, hook, env)
            with self.wake:
                unit.running = None
                if exit_code == 0:
                    if unit.queue and unit.queue[0] == (hook, env):
                        unit.queue.popleft()
                    unit.error, unit.failures = None, 0
                else:
                    unit.failures += 1
                    delay = RETRY_DELAYS_S[min(unit.failures, len(RETRY_DELAYS_S)) - 1]
                    unit.error = f"hook failed: {hook!r}"
                    unit.retry_at = time.monotonic() + delay
                self.wake.notify_all()
            if exit_code == 0 and hook == "remove":
                self._finish_removal(unit)
                return

    def _ready(self, unit: Unit) -> bool:
        return bool(unit.queue) and unit.pod_up and time.monotonic() >= unit.retry_at

    def _dispatch(self, unit: Unit, hook: str, env: dict[str, str]) -> int:
        """Run ``dispatch`` for one event in the unit's view of ``/charm/containers``."""
        before = self.store.read()
        action = "JUJU_ACTION_UUID" in env
        if action:
            with self.store.transaction() as doc:
                doc["actions"][env["JUJU_ACTION_UUID"]]["status"] = "running"
        dispatch_path = f"actions/{env['JUJU_ACTION_NAME']}" if action else f"hooks/{hook}"
        full_env = {
            "PATH": f"{self.tools_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "JUJU_UNIT_NAME": unit.name,
            "JUJU_MODEL_NAME": self.model,
            "JUJU_MODEL_UUID": before["model_uuid"],
            "JUJU_VERSION": JUJU_VERSION,
            "JUJU_CHARM_DIR": str(unit.charm_dir),
            "JUJU_DISPATCH_PATH": dispatch_path,
            "JUJU_HOOK_NAME": "" if action else hook,
            "JUJU_AVAILABILITY_ZONE": "local",
            "REDIS_K8S_LOCAL_STATE": str(self.state_dir),
            # Relation writes are buffered under this id and applied only if the hook
            # succeeds, as Juju commits a hook's relation settings at its end.
            "JUJU_CONTEXT_ID": f"{unit.name}-{uuid.uuid4().hex[:12]}",
            **env,
        }
        # The charm process writes its own peak RSS there at exit: wait4's ru_maxrss
        # would include this agent's RSS, which the child inherits at exec (peakrss).
        peak_report = self.peak_rss_dir / f"{full_env['JUJU_CONTEXT_ID'].replace('/', '-')}.kib"
        full_env = peakrss.environ(self.peak_rss_dir, peak_report, full_env)
        argv = self.pods.dispatch_argv(unit.spec, [str(unit.charm_dir / "dispatch")])
        started = time.monotonic()
        log = self.state_dir / "logs" / f"{unit.name.replace('/', '-')}.dispatch.log"
        with log.open("ab") as output:
            output.write(f"=== {time.strftime('%H:%M:%S')} {hook}\n".encode())
            output.flush()
            try:
                process = subprocess.Popen(
                    argv, cwd=unit.charm_dir, env=full_env, stdout=output, stderr=output
                )
                exit_code = process.wait()
            except OSError as error:
                output.write(f"cannot run dispatch: {error}\n".encode())
                exit_code = 127
        seconds = time.monotonic() - started
        max_rss = peakrss.read(peak_report)
        with self.lock:
            self.history.append(HookRecord(unit.name, hook, started, seconds, exit_code, max_rss))
        if action:
            self._end_action(env["JUJU_ACTION_UUID"], exit_code)
        with self.store.transaction() as doc:
            if exit_code == 0:
                changed = commit_context(doc, full_env["JUJU_CONTEXT_ID"])
                if hook == f"{PEER}-relation-broken":  # gone from this unit's view
                    doc["relations"][PEER_RELATION_ID].setdefault("left", []).append(unit.name)
                elif hook.endswith("-relation-broken"):
                    self._left_client_relation(doc, unit.name, env["JUJU_RELATION_ID"])
            else:
                discard_context(doc, full_env["JUJU_CONTEXT_ID"])
                changed = []
            after = copy.deepcopy(doc)
        if exit_code == 0:
            self._derive_events(unit, changed, before, after)
        return exit_code

    def _left_client_relation(self, doc: dict, unit: str, ref: str) -> None:
        """A unit ran ``relation-broken``: the relation is gone once all of ours have."""
        relation_id = ref.rpartition(":")[2]
        relation = doc["relations"].get(relation_id)
        if relation is None:
            return
        relation.setdefault("left", []).append(unit)
        ours = [u for u in relation["units"] if u.split("/")[0] == self.app]
        if relation.get("dying") and set(ours) <= set(relation["left"]):
            del doc["relations"][relation_id]
            for secret in doc["secrets"].values():  # Juju revokes the relation's grants
                secret.get("grants", {}).pop(relation_id, None)

    def _end_action(self, action_id: str, exit_code: int) -> None:
        with self.store.transaction() as doc:
            record = doc["actions"][action_id]
            if exit_code != 0:
                record.update(status="failed", message=record["message"] or "action hook failed")
            elif record["status"] == "running":
                record["status"] = "completed"

    def _derive_events(
        self, unit: Unit, changed: list[tuple[str, str]], before: dict, after: dict
    ) -> None:
        """What Juju derives from a hook's writes: relation-changed and secret-changed."""
        new = after["relations"][PEER_RELATION_ID]
        changed_unit = (PEER_RELATION_ID, unit.name) in changed
        changed_app = (PEER_RELATION_ID, self.app) in changed
        with self.wake:
            for other in self.units.values():
                if other is unit or other.leaving or other.name not in new["units"]:
                    continue
                if changed_unit:
                    self._queue_once(
                        other, f"{PEER}-relation-changed", self._relation_env(remote=unit.name)
                    )
                if changed_app:  # no remote unit: ops wants the variable, empty
                    env = {**self._relation_env(), "JUJU_REMOTE_UNIT": ""}
                    self._queue_once(other, f"{PEER}-relation-changed", env)
            for secret_id, secret in after["secrets"].items():
                old_secret = before["secrets"].get(secret_id)
                if old_secret is None or old_secret["revision"] == secret["revision"]:
                    continue
                for name, tracked in secret.get("tracked", {}).items():
                    other = self.units.get(name)
                    if other is not None and int(tracked) < int(secret["revision"]):
                        env = {
                            "JUJU_SECRET_ID": secret_id,
                            "JUJU_SECRET_LABEL": secret.get("labels", {}).get(name) or "",
                            "JUJU_SECRET_REVISION": str(secret["revision"]),
                        }
                        self._queue_once(other, "secret-changed", env)
            self.wake.notify_all()

    @staticmethod
    def _queue_once(unit: Unit, hook: str, env: dict[str, str]) -> None:
        """Queue an event unless the same one is already pending (Juju runs it once)."""
        if (hook, env) not in list(unit.queue)[1 if unit.running else 0 :]:
            unit.queue.append((hook, env))

    # ----------------------------------------------------------------- watchers

    def _watch_pebble(self) -> None:
        """Keep a notice watcher on every live Pebble; turn check changes into events."""
        while not self.stopping.wait(PEBBLE_POLL_S):
            with self.lock:
                units = [u for u in self.units.values() if u.pod_up and not u.removed]
            for unit in units:
                for container in CONTAINERS:
                    watcher = self.notice_watchers.get((unit.name, container))
                    if watcher is None or not watcher.is_alive():
                        watcher = threading.Thread(
                            target=self._wait_notices, args=(unit, container), daemon=True
                        )
                        self.notice_watchers[unit.name, container] = watcher
                        watcher.start()
                    try:
                        self._poll_checks(unit, container)
                    except (pebble.Error, OSError, ConnectionError):
                        pass  # a pod going away or restarting: the next poll sees it
                    except Exception:  # never let one bad poll stop the watcher
                        logger.exception("watching %s/%s", unit.name, container)

    def _wait_notices(self, unit: Unit, container: str) -> None:
        """Wait on one Pebble for custom notices until its pod goes (``WaitNotices``).

        Each request returns as soon as a notice newer than ``after`` is raised, or
        empty after ``notice_wait_s``. ``after`` is Pebble's own timestamp text (in
        nanoseconds: a parsed one would lose precision and see the last notice again).
        """
        after: str | None = None
        client = self.pods.client(unit.spec, container, timeout=self.notice_wait_s + 5)
        while not self.stopping.is_set() and unit.pod_up and not unit.removed:
            query = {"types": "custom", "timeout": f"{self.notice_wait_s}s"}
            if after is not None:
                query["after"] = after
            try:
                raw = client._request("GET", "/v1/notices", query)["result"] or []
            except (pebble.Error, OSError, ConnectionError):
                self.stopping.wait(PEBBLE_POLL_S)  # a pod going away or restarting
                continue
            except Exception:  # never let one bad answer stop the watcher
                logger.exception("waiting for notices of %s/%s", unit.name, container)
                self.stopping.wait(PEBBLE_POLL_S)
                continue
            if raw:
                after = raw[-1]["last-repeated"]  # Pebble orders them by last-repeated
            self._queue_notices(unit, container, [pebble.Notice.from_dict(n) for n in raw])

    def _queue_notices(self, unit: Unit, container: str, notices: list[pebble.Notice]) -> None:
        events: list[tuple[str, dict[str, str]]] = []
        for notice in notices:
            key = f"{container}/{notice.id}"
            stamp = notice.last_repeated.isoformat()
            if unit.seen_notices.get(key) != stamp:
                unit.seen_notices[key] = stamp
                events.append(
                    (
                        f"{container}-pebble-custom-notice",
                        {
                            "JUJU_WORKLOAD_NAME": container,
                            "JUJU_NOTICE_ID": notice.id,
                            "JUJU_NOTICE_TYPE": "custom",
                            "JUJU_NOTICE_KEY": notice.key,
                        },
                    )
                )
        self._queue_from_pebble(unit, events)

    def _poll_checks(self, unit: Unit, container: str) -> None:
        client = self.pods.client(unit.spec, container, timeout=2)
        events: list[tuple[str, dict[str, str]]] = []
        for check in client.get_checks():
            key = f"{container}/{check.name}"
            previous = unit.check_status.get(key, pebble.CheckStatus.UP.value)
            current = check.status.value
            unit.check_status[key] = current
            if kind := check_event(previous, current):
                env = {"JUJU_WORKLOAD_NAME": container, "JUJU_PEBBLE_CHECK_NAME": check.name}
                events.append((f"{container}-pebble-check-{kind}", env))
        self._queue_from_pebble(unit, events)

    def _queue_from_pebble(self, unit: Unit, events: list[tuple[str, dict[str, str]]]) -> None:
        if events:
            with self.wake:
                if unit.pod_up and not unit.leaving:
                    unit.queue.extend(events)
                    self.wake.notify_all()

    def _tick_update_status(self) -> None:
        while not self.stopping.wait(self.update_status_s):
            with self.wake:
                for unit in self.units.values():
                    if not unit.leaving:
                        self._queue_once(unit, "update-status", {})
                self.wake.notify_all()

    # ----------------------------------------------------------------- helpers

    def _unit(self, name: str) -> Unit:
        unit = self.units.get(name)
        if unit is None:
            raise KeyError(f"no unit {name}")
        return unit

    def _members(self) -> list[str]:
        return list(self.store.read()["relations"][PEER_RELATION_ID]["units"])

    def _relation_env(self, remote: str | None = None, departing: str | None = None):
        env = {
            "JUJU_RELATION": PEER,
            "JUJU_RELATION_ID": f"{PEER}:{PEER_RELATION_ID}",
            "JUJU_REMOTE_APP": self.app,
        }
        if remote is not None:
            env["JUJU_REMOTE_UNIT"] = remote
        if departing is not None:
            env["JUJU_DEPARTING_UNIT"] = departing
        return env

    def specs(self) -> Iterator[PodSpec]:
        """Every live unit's pod."""
        with self.lock:
            yield from [u.spec for u in self.units.values() if not u.removed]


def _remote_units(relation: dict) -> list[str]:
    """The units of the application at the other end of a client relation."""
    return [u for u in relation["units"] if u.split("/")[0] == relation["remote_app"]]


def _forget(relation: dict, unit: str) -> None:
    """A removed unit is no longer in the relation, nor in its databags."""
    if unit in relation["units"]:
        relation["units"].remove(unit)
    relation["unit_data"].pop(unit, None)
    if unit in relation.get("left", []):
        relation["left"].remove(unit)


def _unit_facts(databag: dict[str, str]) -> dict[str, str]:
    """The state and role a unit published (its journal's current facts), for status."""
    try:
        current = json.loads(databag.get("unit-journal", "{}")).get("current", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {"state": str(current.get("state", "")), "role": str(current.get("role", "unknown"))}


def check_event(previous: str, current: str) -> str | None:
    """The Juju event a check's status change makes: ``failed``, ``recovered`` or none.

    Juju follows the checks' changes: failed when a perform-check change errors
    (the check goes down, from up or from stopped), recovered when a
    recover-check change is done (down -> up). A stopped check started again
    (inactive -> up) and a check stopped (-> inactive) make none.
    """
    if current == "down" and previous != "down":
        return "failed"
    if (previous, current) == ("down", "up"):
        return "recovered"
    return None
