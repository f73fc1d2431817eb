"""The events the local agent queues, planned without running a unit.

The agent is built on a state directory but never started: no pod, no worker
thread, no dispatch. Its units are put in by hand, then the operations that plan
events (``relate``, ``remove_units``, ``unrelate``) fill their queues, which the
tests read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from redis_k8s_local import hooktool
from redis_k8s_local import store as st
from redis_k8s_local.agent import PEER, PEER_RELATION_ID, Agent, Unit, check_event
from redis_k8s_local.pods import pod_spec

APP = "redis-k8s"
OURS = [f"{APP}/0", f"{APP}/1"]
CLIENT = "client"
THEIRS = [f"{CLIENT}/0", f"{CLIENT}/1"]
ENDPOINT = "redis-client"


@dataclasses.dataclass
class Model:
    agent: Agent
    relation_id: str
    """The client relation's."""


@pytest.fixture
def model(tmp_path: Path) -> Model:
    """Two units in the peer relation, both related to ``client``'s two units."""
    agent = Agent(tmp_path / "state", Path(__file__).parents[2], tmp_path / "pebble", app=APP)
    with agent.store.transaction() as doc:
        doc.update(st.new_model("local", APP))
        st.add_relation(doc, PEER, "redis_peers", units=OURS, relation_id=int(PEER_RELATION_ID))
        for number, name in enumerate(OURS):
            spec = pod_spec(agent.state_dir, APP, number)
            st.add_unit(doc, name, spec.address, spec.hostname)
            agent.units[name] = Unit(name=name, spec=spec, charm_dir=tmp_path / name)
        doc["leader"] = OURS[0]
    relation_id = agent.relate(ENDPOINT, CLIENT, "redis_client", len(THEIRS))
    for unit in agent.units.values():
        unit.queue.clear()
    return Model(agent, str(relation_id))


def departed(agent: Agent, unit: str) -> dict[str, dict[str, str]]:
    """``JUJU_RELATION``/``JUJU_REMOTE_UNIT`` to the env of each relation-departed queued."""
    return {
        f"{env['JUJU_RELATION']} {env['JUJU_REMOTE_UNIT']}": env
        for hook, env in agent.units[unit].queue
        if hook.endswith("-relation-departed")
    }


def test_a_removed_unit_departs_its_client_relations_as_the_departing_unit(model: Model):
    leaving = OURS[1]

    model.agent.remove_units([leaving])

    events = departed(model.agent, leaving)
    assert sorted(events) == sorted(
        [f"{ENDPOINT} {remote}" for remote in THEIRS] + [f"{PEER} {OURS[0]}"]
    )
    for env in events.values():  # in the client relation as in the peer relation
        assert env["JUJU_DEPARTING_UNIT"] == leaving
    for remote in THEIRS:
        env = events[f"{ENDPOINT} {remote}"]
        assert env["JUJU_RELATION_ID"] == f"{ENDPOINT}:{model.relation_id}"
        assert env["JUJU_REMOTE_APP"] == CLIENT
    hooks = [hook for hook, _ in model.agent.units[leaving].queue]
    assert hooks[: len(THEIRS) + 1] == [f"{ENDPOINT}-relation-departed"] * len(THEIRS) + [
        f"{ENDPOINT}-relation-broken"
    ]
    assert departed(model.agent, OURS[0]) == {}  # the others see it go once it is removed


def test_a_removed_relation_departs_each_remote_unit(model: Model):
    model.agent.unrelate(model.relation_id)

    for ours in OURS:
        events = departed(model.agent, ours)
        assert sorted(events) == sorted(f"{ENDPOINT} {remote}" for remote in THEIRS)
        for remote in THEIRS:
            assert events[f"{ENDPOINT} {remote}"]["JUJU_DEPARTING_UNIT"] == remote


def test_units_removed_together_are_all_dying_in_goal_state_before_any_of_their_hooks(
    model: Model, capsys
):
    """As ``juju remove-unit a b``: a leaving primary must not hand over to the other one."""
    model.agent.remove_units(OURS)

    env = {hooktool.STATE_ENV: str(model.agent.state_dir), "JUJU_UNIT_NAME": OURS[0]}
    assert hooktool.main(["goal-state", "--format=json"], env) == 0
    goals = json.loads(capsys.readouterr().out)["units"]
    assert {unit: goal["status"] for unit, goal in goals.items()} == dict.fromkeys(OURS, "dying")


@pytest.mark.parametrize(
    ("previous", "current", "event"),
    [
        ("up", "down", "failed"),
        ("inactive", "down", "failed"),  # started, and failed before the agent looked
        ("down", "up", "recovered"),
        ("inactive", "up", None),  # a stopped check started again: no change errored
        ("up", "inactive", None),
        ("down", "inactive", None),
        ("down", "down", None),
        ("up", "up", None),
    ],
)
def test_check_status_changes_make_the_events_juju_makes(previous, current, event):
    assert check_event(previous, current) == event
