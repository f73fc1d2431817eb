"""Password rotation: the pure protocol (hypothesis) and the charm driving it (ops.testing)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ops import testing

from charm import ROTATION_KEY, SECRET_ID_KEY, passwords_in_use, promoted
from machine import records, rotation
from tests.state.test_charm import APP, OWN, containers, lone_primary, peers_of
from workload.config import ADMIN_USER, SENTINEL_USER, password_hash, read_sentinel_auth
from workload.workload import ACL_FILE, SENTINEL_CONF

UNITS = (f"{APP}/0", f"{APP}/1", f"{APP}/2")
OLD = {
    "admin-password": "admin-old",
    "replication-password": "repl-old",
    "sentinel-password": "sentinel",
    "client-password": "client-old",
}
NEW = {
    "admin-password-next": "admin-new",
    "sentinel-password-next": "sentinel-new",
    "client-password-next": "client-new",
}


# ---------------------------------------------------------------- the protocol


@dataclasses.dataclass
class World:
    """The leader's record and secret, and what each unit last applied."""

    record: records.RotationRecord
    content: dict[str, str]
    seen: dict[str, tuple[records.RotationRecord, dict[str, str]]]
    reports: dict[str, records.UnitRotation]

    def unit_runs(self, unit: str) -> None:
        self.seen[unit] = (self.record, dict(self.content))
        if self.record.phase != "idle":
            self.reports[unit] = records.UnitRotation(
                phase=self.record.phase, revision=self.record.revision
            )

    def leader_advances(self) -> None:
        self.record, promote = rotation.advance(self.record, UNITS, self.reports)
        if promote:
            self.content = promoted(self.content)

    def check_every_password_in_use_is_accepted_everywhere(self) -> None:
        views = {u: passwords_in_use(c, r) for u, (r, c) in self.seen.items()}
        for a in views.values():
            for b in views.values():
                assert a.admin in b.accepted(ADMIN_USER, b.admin)
                assert a.client in b.accepted("default", b.client)
                # Sentinel's own password and the sentinel user's on redis: one password.
                assert a.sentinel in b.accepted(SENTINEL_USER, b.sentinel)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*UNITS, "leader"]), max_size=60))
def test_every_password_in_use_is_accepted_by_every_unit_at_every_step(steps) -> None:
    record, refusal = rotation.begin(records.RotationRecord())
    assert refusal is None
    world = World(record, OLD | NEW, {}, {})
    for unit in UNITS:  # before the rotation began, every unit used the old passwords
        world.seen[unit] = (records.RotationRecord(), dict(OLD))
    for step in steps:
        if step == "leader":
            world.leader_advances()
        else:
            world.unit_runs(step)
        world.check_every_password_in_use_is_accepted_everywhere()
    # Fair delivery from here: every unit runs, the leader advances, three times over.
    for _ in range(4):
        for unit in UNITS:
            world.unit_runs(unit)
            world.check_every_password_in_use_is_accepted_everywhere()
        world.leader_advances()
    for unit in UNITS:
        world.unit_runs(unit)
    assert world.record.phase == "idle"
    for record, content in world.seen.values():
        final = passwords_in_use(content, record)
        assert (final.admin, final.sentinel, final.client) == (
            "admin-new",
            "sentinel-new",
            "client-new",
        )
        assert final.also_accepted == ()  # the old ones are rejected


def test_one_rotation_at_a_time() -> None:
    record, _ = rotation.begin(records.RotationRecord())
    again, refusal = rotation.begin(record)
    assert again == record and refusal == "a rotation is already in progress (phase adding)"


def test_a_unit_that_has_not_confirmed_holds_the_phase() -> None:
    record, _ = rotation.begin(records.RotationRecord())
    confirmed = records.UnitRotation(phase="adding", revision=1)
    after, promote = rotation.advance(record, UNITS, {UNITS[0]: confirmed, UNITS[1]: confirmed})
    assert (after.phase, after.confirmed, promote) == ("adding", UNITS[:2], False)
    stale = records.UnitRotation(phase="adding", revision=0)  # an older rotation's report
    after, _ = rotation.advance(
        record, UNITS, dict.fromkeys(UNITS[:2], confirmed) | {UNITS[2]: stale}
    )
    assert after.phase == "adding"


# ------------------------------------------------------------------ the charm


def admin_hashes(tmp_path) -> list[str]:
    acl = (tmp_path / "redis" / ACL_FILE.lstrip("/")).read_text()
    line = next(x for x in acl.splitlines() if x.startswith(f"user {ADMIN_USER} "))
    return [word[1:] for word in line.split() if word.startswith("#")]


def internal_secret(state: testing.State) -> testing.Secret:
    secret_id = peers_of(state).local_app_data[SECRET_ID_KEY]
    return next(s for s in state.secrets if s.id == secret_id)


def content_of(secret: testing.Secret) -> dict[str, str]:
    return dict(secret.latest_content or secret.tracked_content)


def phase(state: testing.State) -> str:
    text = peers_of(state).local_app_data.get(ROTATION_KEY)
    return records.load(records.RotationRecord, text)[0].phase


def test_rotate_passwords_rolls_through_the_phases_and_rejects_the_old_one(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    old = content_of(internal_secret(state))
    state = ctx.run(ctx.on.action("rotate-passwords", params={"users": "admin"}), state)
    # A lone unit applied "adding" in the action's own hook: the leader moved on.
    assert ctx.action_results is not None and ctx.action_results["phase"] == "switching"
    new = content_of(internal_secret(state))["admin-password-next"]
    # Both accepted, the old one still used.
    assert admin_hashes(tmp_path) == [password_hash(old["admin-password"]), password_hash(new)]
    assert (OWN, "ACL LOAD") in net.commands

    phases = []
    for _ in range(4):
        state = ctx.run(ctx.on.update_status(), state)
        phases.append(phase(state))
    assert phases == ["removing", "idle", "idle", "idle"]
    final = content_of(internal_secret(state))
    assert final["admin-password"] == new and "admin-password-next" not in final
    assert final["replication-password"] == old["replication-password"]  # not asked for
    assert admin_hashes(tmp_path) == [password_hash(new)]
    assert net.passwords_seen[-1] == new or new in net.passwords_seen


def sentinel_view(tmp_path) -> tuple[list[str], list[str], str | None, dict[str, str]]:
    """(redis' sentinel user hashes, sentinel's default user hashes, sentinel-pass, auth-pass)."""
    acl = (tmp_path / "redis" / ACL_FILE.lstrip("/")).read_text()
    line = next(x for x in acl.splitlines() if x.startswith(f"user {SENTINEL_USER} "))
    on_redis = sorted(word[1:] for word in line.split() if word.startswith("#"))
    auth = read_sentinel_auth((tmp_path / "sentinel" / SENTINEL_CONF.lstrip("/")).read_text())
    return on_redis, sorted(auth.users["default"]), auth.sentinel_pass, dict(auth.auth_pass)


def test_rotating_the_sentinel_password_goes_through_sentinel_and_its_file(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    old = content_of(internal_secret(state))["sentinel-password"]
    _, _, _, auth_pass = sentinel_view(tmp_path)
    name = next(iter(auth_pass))
    state = ctx.run(ctx.on.action("rotate-passwords", params={"users": "sentinel"}), state)
    new = content_of(internal_secret(state))["sentinel-password-next"]
    both = sorted([password_hash(old), password_hash(new)])
    # adding: redis and sentinel accept both; sentinel still sends the old one.
    assert sentinel_view(tmp_path) == (both, both, old, {name: old})
    assert (OWN, "SENTINEL FLUSHCONFIG") in net.commands  # written back, not only run
    state = ctx.run(ctx.on.update_status(), state)
    # switching: sentinel sends the new one to redis and to the other sentinels.
    assert sentinel_view(tmp_path) == (both, both, new, {name: new})
    assert net.passwords_seen[-1] == new  # the charm uses it on sentinel
    for _ in range(2):
        state = ctx.run(ctx.on.update_status(), state)
    assert phase(state) == "idle"
    only_new = [password_hash(new)]
    assert sentinel_view(tmp_path) == (only_new, only_new, new, {name: new})
    final = content_of(internal_secret(state))
    assert final["sentinel-password"] == new and "sentinel-password-next" not in final


@pytest.mark.parametrize("users", ["root", "admin,root", ",", "ADMIN"])
def test_rotate_passwords_with_bad_users_fails_with_a_message(ctx, net, tmp_path, users):
    state = lone_primary(ctx, net, tmp_path)
    with pytest.raises(testing.ActionFailed, match="Error in action parameters"):
        ctx.run(ctx.on.action("rotate-passwords", params={"users": users}), state)


def test_rotate_passwords_on_a_non_leader_fails_with_a_message(ctx, net, tmp_path):
    state = dataclasses.replace(lone_primary(ctx, net, tmp_path), leader=False)
    with pytest.raises(testing.ActionFailed, match="on the leader"):
        ctx.run(ctx.on.action("rotate-passwords"), state)


def test_a_second_rotation_during_one_is_refused(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    state = ctx.run(ctx.on.action("rotate-passwords"), state)
    with pytest.raises(testing.ActionFailed, match="already in progress"):
        ctx.run(ctx.on.action("rotate-passwords"), state)


def test_the_system_users_secret_starts_a_rotation_to_the_operators_passwords(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    operator = testing.Secret({"admin-password": "operator-chosen-1"}, owner=None)
    state = dataclasses.replace(
        state, secrets={*state.secrets, operator}, config={"system-users": operator.id}
    )
    for _ in range(5):
        state = ctx.run(ctx.on.config_changed(), state)
    assert content_of(internal_secret(state))["admin-password"] == "operator-chosen-1"
    assert admin_hashes(tmp_path) == [password_hash("operator-chosen-1")]
    assert phase(state) == "idle"


def test_a_bad_system_users_secret_blocks_with_the_reason(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    operator = testing.Secret({"root-password": "x"}, owner=None)
    state = dataclasses.replace(
        state, secrets={*state.secrets, operator}, config={"system-users": operator.id}
    )
    state = ctx.run(ctx.on.config_changed(), state)
    assert state.unit_status.name == "blocked"
    assert state.unit_status.message.startswith("system-users: keys must be")
    assert json.dumps(dict(peers_of(state).local_app_data)).count("root-password") == 0


def test_an_old_revision_of_our_secrets_is_pruned_when_nobody_tracks_it(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    state = ctx.run(ctx.on.action("rotate-passwords"), state)  # new revisions of the secret
    secret = internal_secret(state)
    ctx.run(ctx.on.secret_remove(secret, revision=1), state)
    assert ctx.removed_secret_revisions == [1]


def test_a_foreign_secret_revision_is_left_alone(ctx, net, tmp_path):
    state = lone_primary(ctx, net, tmp_path)
    other = testing.Secret({"x": "y"}, owner="app", label="someone-else")
    ctx.run(
        ctx.on.secret_remove(other, revision=1),
        dataclasses.replace(state, secrets={*state.secrets, other}),
    )
    assert ctx.removed_secret_revisions == []


def test_a_sentinel_restarted_mid_rotation_comes_back_with_the_phases_passwords(
    ctx, net, tmp_path
):
    """Its pod restarted while the rotation moved on: its file is brought to the phase first."""
    state = lone_primary(ctx, net, tmp_path)
    old = content_of(internal_secret(state))["sentinel-password"]
    state = ctx.run(ctx.on.action("rotate-passwords", params={"users": "sentinel"}), state)
    new = content_of(internal_secret(state))["sentinel-password-next"]
    assert phase(state) == "switching"
    _, _, sent_before, _ = sentinel_view(tmp_path)
    assert sent_before == old  # this unit has not switched yet
    # The sentinel container restarts: its file (on the storage) stays, nothing runs.
    restarted = next(c for c in containers(tmp_path) if c.name == "sentinel")
    others = {c for c in state.containers if c.name != "sentinel"}
    state = dataclasses.replace(state, containers=others | {restarted})
    del net.sentinels[OWN]
    state = ctx.run(ctx.on.update_status(), state)
    both = sorted([password_hash(old), password_hash(new)])
    on_redis, on_sentinel, sent, auth_pass = sentinel_view(tmp_path)
    assert (on_redis, on_sentinel, sent) == (both, both, new)
    assert set(auth_pass.values()) == {new}
    plan = state.get_container("sentinel").plan
    assert plan.services, "sentinel started again"
