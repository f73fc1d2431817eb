"""The local hook tools, driven by real ops 3.9 code: ops runs them as Juju's.

Each test installs the tools into ``tmp_path/bin``, builds a store with one
application, two units and the peer relation ``redis-peers:1``, puts the tools first
on ``PATH`` with a unit's ``JUJU_*`` environment, and uses ``ops.model.Model`` (built
as ``ops._main`` builds it) or a real ``dispatch`` of a small charm.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import ops
import ops.log
import pytest
from ops.model import Model, _ModelBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "local"))

from redis_k8s_local import cli, daemon, hooktool  # noqa: E402
from redis_k8s_local import store as st  # noqa: E402

APP = "redis-k8s"
U0, U1 = f"{APP}/0", f"{APP}/1"
ADDRESSES = {U0: "10.1.0.10", U1: "10.1.0.11"}

METADATA = """
name: redis-k8s
containers:
  redis: {resource: redis-image}
storage:
  data: {type: filesystem, location: /var/lib/redis}
peers:
  redis-peers: {interface: redis_peers}
"""
CONFIG = """
options:
  persistence: {type: string, default: aof}
  min-replicas-to-write: {type: int, default: 1}
  maxmemory: {type: string}
"""
ACTIONS = """
switchover:
  params:
    target: {type: string}
    timeout: {type: int, default: 30}
"""
CHARM = """
import ops

class Charm(ops.CharmBase):
    def __init__(self, framework):
        super().__init__(framework)
        framework.observe(self.on.config_changed, self._on_config_changed)
        framework.observe(self.on.switchover_action, self._on_switchover)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)

    def _on_config_changed(self, event):
        peers = self.model.get_relation("redis-peers")
        peers.data[self.unit]["persistence"] = self.config["persistence"]
        if self.unit.is_leader():
            peers.data[self.app]["leader"] = self.unit.name
        self.unit.set_workload_version("7.0.15")

    def _on_switchover(self, event):
        event.log("switching")
        event.set_results({"target": event.params["target"], "a": {"b": "c"}})
        if event.params["target"] == "nowhere":
            event.fail("no such unit")

    def _on_collect_unit_status(self, event):
        event.add_status(ops.ActiveStatus("ready"))

    def _on_collect_app_status(self, event):
        if self.unit.is_leader():
            event.add_status(ops.ActiveStatus("all ready"))

ops.main(Charm)
"""

pytestmark = pytest.mark.filterwarnings("ignore:JujuLogHandler is not set up")


@pytest.fixture(autouse=True)
def _isolate_ops_logging():
    """Ops caches the juju-log of security events and hooks the root logger: undo both."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = (sys.excepthook, warnings.showwarning)
    ops.log._get_juju_log_and_app_id.cache_clear()
    yield
    ops.log._get_juju_log_and_app_id.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, warnings.showwarning = hooks


class World:
    """The store, the charm directory and the tools of one test."""

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jujuc: Path | None = None
    ) -> None:
        self.monkeypatch = monkeypatch
        self.bin = tmp_path / "bin"
        hooktool.install_tools(self.bin, jujuc)
        self.charm = tmp_path / "charm"
        self.charm.mkdir()
        for name, text in (
            ("metadata.yaml", METADATA),
            ("config.yaml", CONFIG),
            ("actions.yaml", ACTIONS),
        ):
            (self.charm / name).write_text(text)
        self.state = tmp_path / "state"
        self.store = st.Store(self.state)
        with self.store.transaction() as doc:
            doc.update(st.new_model("test-model", APP))
            for unit, address in ADDRESSES.items():
                st.add_unit(doc, unit, address)
            st.add_relation(doc, "redis-peers", "redis_peers", units=[U0, U1], relation_id=1)
            doc["leader"] = U0
            doc["storage"][U0] = {"data/0": "/var/lib/redis"}
        self.model_uuid = self.store.read()["model_uuid"]

    def env(self, unit: str, hook: str = "config-changed", **extra: str) -> dict[str, str]:
        """A hook's environment, as the agent sets it."""
        return {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "JUJU_UNIT_NAME": unit,
            "JUJU_MODEL_NAME": "test-model",
            "JUJU_MODEL_UUID": self.model_uuid,
            "JUJU_VERSION": "3.6.8",
            "JUJU_CHARM_DIR": str(self.charm),
            "JUJU_DISPATCH_PATH": f"hooks/{hook}" if hook else f"actions/{extra['name']}",
            "JUJU_HOOK_NAME": hook,
            "REDIS_K8S_LOCAL_STATE": str(self.state),
            **{k: v for k, v in extra.items() if k != "name"},
        }

    def model(self, unit: str, hook: str = "config-changed", **extra: str) -> Model:
        """``unit``'s model in a fresh hook, built the way ``ops._main`` builds it."""
        for name in [n for n in os.environ if n.startswith("JUJU_")]:
            self.monkeypatch.delenv(name)
        for name, value in self.env(unit, hook, **extra).items():
            self.monkeypatch.setenv(name, value)
        context = ops.JujuContext.from_environ(os.environ)
        backend = _ModelBackend(juju_context=context)
        meta = ops.CharmMeta.from_charm_root(context.charm_dir)
        backend._peer_endpoints = frozenset(meta.peers)
        return Model(meta, backend)

    def log(self, unit: str) -> str:
        path = self.state / "logs" / f"{unit.replace('/', '-')}.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture(params=["python", "jujuc"])
def world(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Every test twice: each tool a Python process, and each a link to ``jujuc``.

    With ``jujuc``, the tools run in a server of the agent's protocol (``daemon``),
    as they run in the agent of a local cluster.
    """
    if request.param == "python":
        yield World(tmp_path, monkeypatch)
        return
    jujuc = cli.jujuc_binary()
    if jujuc is None:
        pytest.skip("local/jujuc is not built: bash .ci/setup builds it")
    built = World(tmp_path, monkeypatch, jujuc)
    server = daemon.make_server(
        built.state / daemon.SOCKET_NAME,
        lambda stop: daemon.Handlers(None, stop),  # type: ignore[arg-type]  # tools need no agent
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield built
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ------------------------------------------------------------------- relations


def test_peer_relation_lists_the_other_units(world: World):
    model = world.model(U0)
    relation = model.get_relation("redis-peers")
    assert relation is not None and relation.id == 1
    assert {u.name for u in relation.units} == {U1}
    assert relation.app is model.app
    assert [r.id for r in model.relations["redis-peers"]] == [1]
    assert relation.remote_model.uuid == world.model_uuid


def test_units_write_their_own_databag_and_the_leader_the_app_databag(world: World):
    model = world.model(U0)
    relation = model.get_relation("redis-peers")
    relation.data[model.unit].update({"role": "primary", "epoch": "1"})
    relation.data[model.app]["cluster"] = "journal"

    model = world.model(U1)
    relation = model.get_relation("redis-peers")
    assert dict(relation.data[model.get_unit(U0)]) == {"role": "primary", "epoch": "1"}
    assert relation.data[model.app]["cluster"] == "journal"  # peers: followers read it
    relation.data[model.unit]["role"] = "replica"
    with pytest.raises(ops.ModelError, match="permission denied") as refused:
        relation.data[model.app]["cluster"] = "mine"
    assert not isinstance(refused.value, ops.RelationNotFoundError)

    model = world.model(U0)
    relation = model.get_relation("redis-peers")
    assert relation.data[model.get_unit(U1)]["role"] == "replica"
    assert relation.data[model.app]["cluster"] == "journal"
    del relation.data[model.unit]["epoch"]  # relation-set with an empty value
    assert world.store.read()["relations"]["1"]["unit_data"][U0] == {"role": "primary"}


def test_a_unit_sees_a_relation_only_once_it_is_in_it(world: World):
    with world.store.transaction() as doc:
        st.add_unit(doc, f"{APP}/2", "10.1.0.12")
    assert world.model(f"{APP}/2").get_relation("redis-peers") is None  # before created
    with pytest.raises(ops.RelationNotFoundError):
        world.model(f"{APP}/2")._backend.relation_list(1, relation_name="redis-peers")
    with world.store.transaction() as doc:
        doc["relations"]["1"]["units"].append(f"{APP}/2")
    relation = world.model(f"{APP}/2").get_relation("redis-peers")
    assert relation is not None and {u.name for u in relation.units} == {U0, U1}


def test_a_missing_relation_is_relation_not_found(world: World):
    backend = world.model(U0)._backend
    with pytest.raises(ops.RelationNotFoundError):
        backend.relation_get(7, U0, False, relation_name="redis-peers")
    with pytest.raises(ops.RelationNotFoundError):
        backend.relation_set(7, {"k": "v"}, False, relation_name="redis-peers")
    with pytest.raises(ops.RelationNotFoundError):
        backend.relation_list(1, relation_name="other-endpoint")
    dead = world.model(U0).get_relation("redis-peers", 7)
    assert dead is not None and not dead.active


def test_relation_writes_of_a_hook_wait_for_its_commit(world: World):
    model = world.model(U0, JUJU_CONTEXT_ID="ctx-1")
    relation = model.get_relation("redis-peers")
    relation.data[model.unit]["role"] = "primary"
    relation.data[model.app]["cluster"] = "journal"
    reread = world.model(U0, JUJU_CONTEXT_ID="ctx-1").get_relation("redis-peers")
    assert reread.data[reread.app]["cluster"] == "journal"  # the hook reads its writes

    other = world.model(U1).get_relation("redis-peers")
    assert "role" not in other.data[other.units.pop()]
    with world.store.transaction() as doc:
        changed = st.commit_context(doc, "ctx-1")
    assert sorted(changed) == [("1", APP), ("1", U0)]
    model = world.model(U1)
    other = model.get_relation("redis-peers")
    assert other.data[model.get_unit(U0)]["role"] == "primary"
    assert other.data[other.app]["cluster"] == "journal"

    model = world.model(U0, JUJU_CONTEXT_ID="ctx-2")
    model.get_relation("redis-peers").data[model.unit]["role"] = "failed"
    with world.store.transaction() as doc:
        st.discard_context(doc, "ctx-2")
    assert world.store.read()["relations"]["1"]["unit_data"][U0]["role"] == "primary"


def test_twenty_concurrent_relation_sets_all_land(world: World):
    backend = world.model(U0)._backend
    start = threading.Barrier(20)

    def write(n: int) -> None:
        start.wait()
        backend.relation_set(1, {f"key-{n}": str(n)}, False, relation_name="redis-peers")

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        list(pool.map(write, range(20)))  # 20 relation-set processes at once
    data = world.store.read()["relations"]["1"]["unit_data"][U0]
    assert data == {f"key-{n}": str(n) for n in range(20)}


# ------------------------------------------------------ leadership, config, status


def test_leadership_and_config(world: World):
    with world.store.transaction() as doc:
        doc["config"]["persistence"] = "rdb"
    model = world.model(U0)
    assert model.unit.is_leader()
    assert dict(model.config) == {"persistence": "rdb", "min-replicas-to-write": 1}
    assert not world.model(U1).unit.is_leader()


def test_unit_and_app_status(world: World):
    model = world.model(U0)
    model.unit.status = ops.MaintenanceStatus("configuring")
    model.app.status = ops.BlockedStatus("needs three units")
    model.unit.set_workload_version("7.0.15")

    model = world.model(U0)
    assert model.unit.status == ops.MaintenanceStatus("configuring")
    assert model.app.status == ops.BlockedStatus("needs three units")
    doc = world.store.read()
    assert doc["units"][U0]["workload_version"] == "7.0.15"
    assert doc["app_status"] == {"status": "blocked", "message": "needs three units"}

    model = world.model(U1)
    assert model.unit.status == ops.UnknownStatus()
    with pytest.raises(RuntimeError):  # ops asks is-leader first
        model.app.status = ops.ActiveStatus()
    with pytest.raises(ops.ModelError, match="not the leader"):  # and the tool refuses too
        model._backend.status_set("active", "", is_app=True)
    with pytest.raises(ops.ModelError, match="not the leader"):
        model._backend.status_get(is_app=True)


def test_planned_units_and_ports(world: World):
    model = world.model(U0)
    assert model.app.planned_units() == 2
    model.unit.open_port("tcp", 6379)
    model.unit.open_port("tcp", 26379)
    assert model.unit.opened_ports() == {ops.Port("tcp", 6379), ops.Port("tcp", 26379)}
    model.unit.set_ports(6379)
    assert world.model(U0).unit.opened_ports() == {ops.Port("tcp", 6379)}


# ---------------------------------------------------------------------- secrets


def test_app_secret_owner_and_observers(world: World):
    model = world.model(U0)
    secret = model.app.add_secret({"password": "one"}, label="internal")
    secret_id = secret.id
    assert secret_id is not None and secret_id.startswith("secret:")
    assert len(secret.unique_identifier or "") == 20

    observer = world.model(U1).get_secret(id=secret_id)  # the first get tracks revision 1
    assert observer.get_content() == {"password": "one"}

    owner = world.model(U0).get_secret(label="internal")
    owner.set_content({"password": "two"})
    assert world.model(U0).get_secret(id=secret_id).get_content() == {"password": "two"}
    info = world.model(U0).get_secret(id=secret_id).get_info()
    assert (info.revision, info.label) == (2, "internal")
    assert info.id == f"secret://{world.model_uuid}/{secret.unique_identifier}"

    with world.store.transaction() as doc:
        assert st.secret_changes(doc) == [(U1, secret_id, None, 2)]
        assert st.secret_changes(doc) == []  # once per revision
    model = world.model(U1)
    bare = secret.unique_identifier or ""  # ops turns a bare xid into secret://<uuid>/<xid>
    assert model.get_secret(id=bare).get_content() == {"password": "one"}
    assert model.get_secret(id=secret_id).peek_content() == {"password": "two"}
    assert model.get_secret(id=secret_id).get_content() == {"password": "one"}
    assert model.get_secret(id=secret_id).get_content(refresh=True) == {"password": "two"}
    assert world.model(U1).get_secret(id=secret_id).get_content() == {"password": "two"}

    with pytest.raises(ops.SecretNotFoundError):  # only the owner sees the metadata
        world.model(U1).get_secret(id=secret_id).get_info()
    with pytest.raises(ops.ModelError, match="permission denied"):
        world.model(U1).get_secret(id=secret_id).set_content({"password": "three"})
    with pytest.raises(ops.ModelError, match="permission denied"):
        world.model(U1).app.add_secret({"password": "x"})

    world.model(U0).get_secret(id=secret_id).remove_all_revisions()
    with pytest.raises(ops.SecretNotFoundError):
        world.model(U1).get_secret(id=secret_id)


def test_observer_labels_and_unit_secrets(world: World):
    secret_id = world.model(U0).app.add_secret({"token": "abc"}).id
    labelled = world.model(U1).get_secret(id=secret_id, label="mine")
    assert labelled.get_content() == {"token": "abc"}
    assert world.model(U1).get_secret(label="mine").get_content() == {"token": "abc"}
    with pytest.raises(ops.SecretNotFoundError):
        world.model(U0).get_secret(label="mine")  # another unit's label
    with pytest.raises(ops.SecretNotFoundError):
        world.model(U0).get_secret(id="secret:" + "a" * 20)

    unit_secret = world.model(U1).unit.add_secret({"token": "private"}, label="own")
    assert world.model(U1).get_secret(label="own").get_content() == {"token": "private"}
    with pytest.raises(ops.ModelError, match="permission denied"):
        world.model(U0).get_secret(id=unit_secret.id)


# ------------------------------------------------------- network, storage, logging


def test_network_get_gives_the_unit_address(world: World):
    model = world.model(U1)
    network = model.get_binding("redis-peers").network
    assert network.bind_address == ipaddress.ip_address(ADDRESSES[U1])
    assert network.ingress_address == ipaddress.ip_address(ADDRESSES[U1])
    assert network.egress_subnets == [ipaddress.ip_network(f"{ADDRESSES[U1]}/32")]
    relation = model.get_relation("redis-peers")
    assert model.get_binding(relation).network.bind_address == network.bind_address


def test_storage(world: World):
    model = world.model(U0, hook="data-storage-attached", JUJU_STORAGE_ID="data/0")
    [storage] = model.storages["data"]
    assert (storage.full_id, storage.location) == ("data/0", Path("/var/lib/redis"))
    assert world.model(U1).storages["data"] == []
    with pytest.raises(ops.ModelError):
        model._backend.storage_get("data/5", "location")


def test_juju_log_through_python_logging(world: World):
    backend = world.model(U1)._backend
    ops.log.setup_root_logging(backend)
    logging.getLogger("charm").info("hello from %s", U1)
    logging.getLogger("charm").debug("-starts with a dash")
    with pytest.raises(ops.ModelError):  # a refused write is a security event, logged
        backend.relation_set(1, {"k": "v"}, True, relation_name="redis-peers")
    lines = world.log(U1).splitlines()
    assert lines[:2] == [f"INFO hello from {U1}", "DEBUG -starts with a dash"]
    assert lines[2].startswith("TRACE ") and "authz_fail:relation-set" in lines[2]


# ----------------------------------------------------------------------- actions


def test_action_params_results_log_and_fail(world: World):
    with world.store.transaction() as doc:
        action_id = st.add_action(doc, U0, "switchover", {"target": U1})
    backend = world.model(
        U0, hook="", name="switchover", JUJU_ACTION_NAME="switchover", JUJU_ACTION_UUID=action_id
    )._backend
    assert backend.action_get() == {"target": U1, "timeout": 30}
    backend.action_log("paused writes")
    backend.action_set({"target": U1, "replication": {"offset": "42", "lag-s": "0"}})
    backend.action_fail("replica not in sync")
    action = world.store.read()["actions"][action_id]
    assert action["results"] == {"target": U1, "replication": {"offset": "42", "lag-s": "0"}}
    assert action["log"] == ["paused writes"]
    assert (action["status"], action["message"]) == ("failed", "replica not in sync")


# ------------------------------------------------------------- a real dispatch


def dispatch(world: World, unit: str, hook: str, **extra: str) -> subprocess.CompletedProcess:
    """Run the small charm's ``dispatch`` for one event, as the agent does."""
    env = {"HOME": os.environ.get("HOME", "/root"), **world.env(unit, hook, **extra)}
    return subprocess.run(
        [str(world.charm / "dispatch")], cwd=world.charm, env=env, capture_output=True, text=True
    )


def test_a_dispatched_charm_runs_on_the_tools(world: World):
    (world.charm / "src").mkdir()
    (world.charm / "src" / "charm.py").write_text(CHARM)
    script = world.charm / "dispatch"
    script.write_text(
        '#!/bin/sh\nJUJU_DISPATCH_PATH="${JUJU_DISPATCH_PATH:-$0}" PYTHONPATH=lib:src '
        f'exec "{sys.executable}" ./src/charm.py\n'
    )
    script.chmod(0o755)

    done = dispatch(world, U0, "config-changed")
    assert done.returncode == 0, done.stderr
    doc = world.store.read()
    assert doc["relations"]["1"]["unit_data"][U0] == {"persistence": "aof"}
    assert doc["relations"]["1"]["app_data"] == {"leader": U0}
    assert doc["units"][U0]["status"] == {"status": "active", "message": "ready"}
    assert doc["app_status"] == {"status": "active", "message": "all ready"}
    assert "Emitting Juju event config_changed." in world.log(U0)

    with world.store.transaction() as doc:
        ok = st.add_action(doc, U0, "switchover", {"target": U1})
        bad = st.add_action(doc, U0, "switchover", {"target": "nowhere"})
    for action_id in (ok, bad):
        env = {"JUJU_ACTION_NAME": "switchover", "JUJU_ACTION_UUID": action_id}
        done = dispatch(world, U0, "", name="switchover", **env)
        assert done.returncode == 0, done.stderr
    actions = world.store.read()["actions"]
    assert actions[ok]["results"] == {"target": U1, "a": {"b": "c"}}
    assert actions[ok]["log"] == ["switching"]
    assert (actions[bad]["status"], actions[bad]["message"]) == ("failed", "no such unit")


def test_tool_errors_look_like_juju(world: World):
    env = world.env(U1)
    run = subprocess.run(
        [str(world.bin / "relation-get"), "--format=json", "-r", "redis-peers:9", "-", U0],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr == 'ERROR invalid value "redis-peers:9" for option -r: relation not found\n'
    run = subprocess.run(
        [str(world.bin / "relation-set"), "-r", "1", "--file", "-", "x=1"],
        input="role: replica\nepoch: 3\n",  # YAML too, as Juju takes it
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    data = world.store.read()["relations"]["1"]["unit_data"][U1]
    assert data == {"role": "replica", "epoch": "3", "x": "1"}
    run = subprocess.run([str(world.bin / "is-leader"), "--bogus"], env=env, capture_output=True)
    assert run.returncode == 2
    run = subprocess.run(
        [str(world.bin / "is-leader"), "--format=json"], env=env, capture_output=True
    )
    assert json.loads(run.stdout) is False
