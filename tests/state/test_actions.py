"""The operator's actions with ops.testing: describe-cluster, history, credentials, switchover.

Parameters are validated by ``ActionEvent.load_params``: a bad one fails the action
with a message, never a traceback.
"""

from __future__ import annotations

import json

import pytest
from ops import testing

from machine.types import Event
from tests.state.test_charm import APP, lone_primary
from tests.state.test_client_relations import HOST, internal_passwords, three_units
from workload.config import ADMIN_USER


def test_describe_cluster_names_the_primary_replicas_with_lag_sentinels_and_states(
    ctx, net, tmp_path
):
    state = three_units(ctx, net, tmp_path)
    ctx.run(ctx.on.action("describe-cluster"), state)
    result = ctx.action_results
    assert result is not None
    assert result["primary"] == f"{APP}/0"
    assert result["replicas"] == f"{APP}/1,{APP}/2"
    assert result["state"] == "ha" and result["quorum"] == 2 and result["sentinels"] == 3
    units = result["units"]
    assert set(units) == {"redis-k8s-0", "redis-k8s-1", "redis-k8s-2"}
    assert units["redis-k8s-1"]["state"] == "replica"
    assert units["redis-k8s-1"]["offset"] == 100
    assert units["redis-k8s-1"]["lag-bytes"] == max(units["redis-k8s-0"]["offset"] - 100, 0)
    assert units["redis-k8s-0"]["state"] == "primary"
    assert "lag-bytes" not in units["redis-k8s-0"]


def test_history_lists_the_newest_transitions_with_input_states_and_effects(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    ctx.run(ctx.on.action("history", params={"limit": 3}), state)
    result = ctx.action_results
    assert result is not None
    assert result["count"] == 3 and result["current-state"] == "primary"
    newest = result["entry-0"]
    assert newest["to-state"] == "primary"
    assert newest["input"] in {e.value for e in Event}
    assert set(newest) == {"input", "from-state", "to-state", "effects", "detail"}
    json.loads(newest["detail"])


def test_history_of_the_cluster_machine(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    ctx.run(ctx.on.action("history", params={"machine": "cluster", "limit": 50}), state)
    result = ctx.action_results
    assert result is not None
    assert result["current-state"] == "not_ha"
    transitions = [result[f"entry-{n}"] for n in range(result["count"])]
    assert any(t["from-state"] == "bootstrapping" for t in transitions)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "Error in action parameters"),
        ({"limit": 51}, "Error in action parameters"),
        ({"machine": "everything"}, "Error in action parameters"),
    ],
)
def test_history_with_bad_parameters_fails_with_a_message(ctx, net, tmp_path, params, message):
    state = lone_primary(ctx, net, tmp_path)
    with pytest.raises(testing.ActionFailed, match=message):
        ctx.run(ctx.on.action("history", params=params), state)


def test_credentials_give_the_admin_user_and_where_the_others_are(ctx, net, tmp_path):
    state = three_units(ctx, net, tmp_path)
    ctx.run(ctx.on.action("credentials"), state)
    result = ctx.action_results
    assert result is not None
    assert result["username"] == ADMIN_USER
    assert result["password"] == internal_passwords(state)["admin-password"]
    assert result["primary"] == f"{HOST.format(0)}:6379"
    assert "label internal-passwords" in result["where"]


def test_credentials_before_the_peer_relation_fail_with_a_message(ctx, net, tmp_path):
    with pytest.raises(testing.ActionFailed, match="not available yet"):
        ctx.run(ctx.on.action("credentials"), testing.State(leader=True))


def test_describe_cluster_before_the_peer_relation_fails_with_a_message(ctx):
    with pytest.raises(testing.ActionFailed, match="peer relation does not exist"):
        ctx.run(ctx.on.action("describe-cluster"), testing.State(leader=True))


def test_switchover_with_a_too_long_target_fails_with_a_message(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    with pytest.raises(testing.ActionFailed, match="Error in action parameters"):
        ctx.run(ctx.on.action("switchover", params={"target": "x" * 100}), state)


def test_switchover_without_a_synced_replica_is_refused_with_the_reason(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    with pytest.raises(testing.ActionFailed, match="replica"):
        ctx.run(ctx.on.action("switchover"), state)
