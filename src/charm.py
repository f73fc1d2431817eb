#!/usr/bin/env python3
"""Charm entry point for redis-k8s: thin glue between Juju events and the machines.

Every observed event (``EVENTS``, documented in ``docs/events.md``) runs the same
hook: load both journals from the peer relation, observe the workload, step
the unit machine (and, on the leader, the cluster machine), execute the
effects through ``workload.Workload``, persist the journals, and reconcile the
operator's config. Status is set only by collect-status, from the persisted
facts. No decision is taken here: they are all in ``src/machine``.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import ops
from pydantic import ValidationError

from machine import journal, records, rotation
from machine.clients import credentials_ready, endpoints
from machine.hook import leader_can_decide, report, run_cluster, run_unit
from machine.types import (
    ClusterFacts,
    ClusterState,
    Effect,
    Event,
    MemberReport,
    RefuseRequest,
    UnitFacts,
    UnitInput,
    UnitState,
)
from relations import ALL_ENDPOINTS, USERS_LABEL, ClientRelations
from workload.addressing import Addressing
from workload.config import (
    ADMIN_USER,
    LEGACY_USER,
    REPLICATION_USER,
    SENTINEL_USER,
    CharmConfig,
    sentinel_safe,
)
from workload.layers import PRIMARY_SWITCH_NOTICE, PrimarySwitch
from workload.workload import REDIS_PORT, SENTINEL_PORT, Passwords, Workload, master_name

logger = logging.getLogger(__name__)
# Every log record of a hook becomes a juju-log call (a process); the engine's
# per-guard debug lines of transitions would be dozens per hook.
logging.getLogger("transitions").setLevel(logging.WARNING)

PEER = "redis-peers"
UNIT_JOURNAL_KEY = "unit-journal"
CLUSTER_JOURNAL_KEY = "cluster-journal"
SECRET_ID_KEY = "internal-secret-id"
SECRET_LABEL = "internal-passwords"
LEADER_ROUNDS = 3
"""Cluster steps in one leader hook at most: each one its own unit acted on (see ``run``)."""
PASSWORD_FIELDS = (
    "admin-password",
    "replication-password",
    "sentinel-password",
    "client-password",
)
APPLIED_KEY = "clients-applied"
"""Unit peer data: the digest of the client users this unit's redis holds."""
ROTATION_KEY = "rotation"
"""Peer data: the leader's ``RotationRecord`` (app), each unit's ``UnitRotation`` (unit)."""


def events(charm: ops.CharmBase) -> dict[str, tuple[ops.BoundEvent, Event]]:
    """Every event the charm observes, by kind, and the machine input it becomes."""
    on = charm.on
    table = {
        on.install: Event.INSTALL,
        on.leader_elected: Event.LEADER_ELECTED,
        on.config_changed: Event.CONFIG_CHANGED,
        on.upgrade_charm: Event.UPGRADE_CHARM,
        on.start: Event.START,
        on.stop: Event.STOP,
        on.remove: Event.REMOVE,
        on.update_status: Event.UPDATE_STATUS,
        on.secret_changed: Event.SECRET_CHANGED,
        on["redis"].pebble_ready: Event.REDIS_PEBBLE_READY,
        on["sentinel"].pebble_ready: Event.SENTINEL_PEBBLE_READY,
        on["redis"].pebble_check_failed: Event.PEBBLE_CHECK_FAILED,
        on["sentinel"].pebble_check_failed: Event.PEBBLE_CHECK_FAILED,
        on["redis"].pebble_check_recovered: Event.PEBBLE_CHECK_RECOVERED,
        on["sentinel"].pebble_check_recovered: Event.PEBBLE_CHECK_RECOVERED,
        on["redis"].pebble_custom_notice: Event.PEBBLE_CUSTOM_NOTICE,
        on["sentinel"].pebble_custom_notice: Event.PEBBLE_CUSTOM_NOTICE,
        on[PEER].relation_created: Event.PEER_RELATION_CREATED,
        on[PEER].relation_joined: Event.PEER_RELATION_JOINED,
        on[PEER].relation_changed: Event.PEER_RELATION_CHANGED,
        on[PEER].relation_departed: Event.PEER_RELATION_DEPARTED,
        on[PEER].relation_broken: Event.PEER_RELATION_BROKEN,
        on["data"].storage_attached: Event.STORAGE_ATTACHED,
        on["data"].storage_detaching: Event.STORAGE_DETACHING,
        on.switchover_action: Event.SWITCHOVER_ACTION,
        on.rotate_passwords_action: Event.ROTATE_PASSWORDS_ACTION,
    }
    for endpoint in ALL_ENDPOINTS:
        relation_events = on[endpoint]
        table[relation_events.relation_created] = Event.CLIENT_RELATION_CHANGED
        table[relation_events.relation_joined] = Event.CLIENT_RELATION_CHANGED
        table[relation_events.relation_changed] = Event.CLIENT_RELATION_CHANGED
        table[relation_events.relation_departed] = Event.CLIENT_RELATION_CHANGED
        table[relation_events.relation_broken] = Event.CLIENT_RELATION_BROKEN
    return {bound.event_kind: (bound, kind) for bound, kind in table.items()}


class RedisK8sCharm(ops.CharmBase):
    """Redis with Redis Sentinel on Kubernetes."""

    def __init__(self, framework: ops.Framework) -> None:
        """Observe every event of ``events`` with the one hook, and collect-status."""
        super().__init__(framework)
        self.inputs = events(self)
        for bound_event, _ in self.inputs.values():
            framework.observe(bound_event, self._on_event)
        framework.observe(self.on.collect_unit_status, self._on_collect_unit_status)
        framework.observe(self.on.collect_app_status, self._on_collect_app_status)
        framework.observe(self.on.describe_cluster_action, self._on_describe_cluster_action)
        framework.observe(self.on.history_action, self._on_history_action)
        framework.observe(self.on.credentials_action, self._on_credentials_action)
        framework.observe(self.on.secret_remove, self._on_secret_remove)
        self.problems: list[str] = []
        self.config_error: str | None = None
        self.refusal: str | None = None
        self.secret_content: dict[str, str] = {}
        self.switched_from: str | None = None
        """The host Sentinel moved the primary away from, in the hook of its notice."""

    # ---------------------------------------------------------------- the hook

    def _on_event(self, event: ops.EventBase) -> None:
        _, kind = self.inputs[event.handle.kind]
        if isinstance(event, ops.ActionEvent):
            if kind is Event.SWITCHOVER_ACTION:
                self._on_switchover_action(event)
            else:
                self._on_rotate_passwords_action(event)
            return
        departing = getattr(event, "departing_unit", None)
        if kind is Event.PEER_RELATION_DEPARTED and departing == self.unit:
            kind = Event.LEAVING  # Juju is removing this unit: hand over while peers are seen
        if isinstance(event, ops.PebbleCustomNoticeEvent):
            self.switched_from = switched_from(event)
        self.run(kind, subject_of(event))

    def run(self, kind: Event, subject: str | None = None) -> None:
        """Observe, step the machines, execute their effects, persist the journals."""
        peers = self.model.get_relation(PEER)
        if peers is None:
            return  # install, before the peer relation exists: nothing can be persisted
        config = self.charm_config()
        passwords = self.passwords(peers)
        addressing = Addressing(self.app.name, own_host=self.bind_address())
        clients = ClientRelations(self, peers)
        workload = Workload(
            self.unit,
            addressing,
            config,
            passwords,
            client_users=clients.acl_users(),
            leaving=self.dying_units,
            failed_over_from_here=self.switched_from == addressing.host_of(self.unit.name),
        )
        unit_journal = self.load(journal.load_unit, peers.data[self.unit].get(UNIT_JOURNAL_KEY))
        cluster_journal = self.load(
            journal.load_cluster, peers.data[self.app].get(CLUSTER_JOURNAL_KEY)
        )
        me = self.unit.name
        others = tuple(sorted(unit.name for unit in peers.units))

        def step_unit(unit_journal: journal.UnitJournal, cluster: ClusterFacts):
            return run_unit(
                unit_journal,
                lambda observed: UnitInput(
                    event=kind, unit=me, observation=observed, cluster=cluster, peers=others
                ),
                workload.observe,
                workload.execute,
            )

        seen = cluster_journal.current
        reports: list[MemberReport] = []
        unit_journal = step_unit(unit_journal, seen)
        if self.unit.is_leader() and leader_can_decide(kind, unit_journal.current):
            event, about = kind, subject
            for _ in range(LEADER_ROUNDS):
                reports = [report(me, unit_journal)]
                for unit in sorted(peers.units, key=lambda u: u.name):
                    loaded = self.load(journal.load_unit, peers.data[unit].get(UNIT_JOURNAL_KEY))
                    reports.append(report(unit.name, loaded))
                cluster_journal = run_cluster(
                    cluster_journal, event, me, reports, about, self.execute_cluster_effect
                )
                self.save(peers, self.app, CLUSTER_JOURNAL_KEY, journal.dump(cluster_journal))
                if cluster_journal.current == seen:
                    break
                seen = cluster_journal.current
                # The leader's own unit acts on the leader's decision in the same hook
                # (Juju sends the leader no relation-changed for its own app data).
                before = unit_journal.current
                unit_journal = step_unit(unit_journal, seen)
                if unit_journal.current == before:
                    break
                # Nor for its own unit data: had it done its turn of a sentinel reset,
                # the wave would wait for an unrelated event. It looks again now, as
                # a peer's relation-changed would make it look.
                event, about = Event.PEER_RELATION_CHANGED, me
        # Once: Juju commits a hook's relation data at its end, each write is a hook tool.
        self.save(peers, self.unit, UNIT_JOURNAL_KEY, journal.dump(unit_journal))
        workload.watch_sync(unit_journal.current.state is UnitState.SYNCING)
        if kind not in (Event.STOP, Event.REMOVE, Event.STORAGE_DETACHING):
            cluster = cluster_journal.current
            self.serve_clients(peers, clients, workload, cluster, addressing, passwords, reports)
            ok = passwords is not None and not workload.problems
            self.step_rotation(peers, cluster.members, ok=ok)
        self.problems.extend(workload.problems + clients.problems)

    def serve_clients(
        self,
        peers: ops.Relation,
        clients: ClientRelations,
        workload: Workload,
        cluster: ClusterFacts,
        addressing: Addressing,
        passwords: Passwords | None,
        reports: list[MemberReport],
    ) -> None:
        """Publish to the client relations, apply their users, report the users held.

        The endpoints are a projection of the cluster facts of this hook; the
        credentials of new users go out once every serving member holds them.
        """
        where = endpoints(
            cluster,
            addressing.host_of,
            functools.partial(master_name, self.app.name),
            port=REDIS_PORT,
            sentinel_port=SENTINEL_PORT,
        )
        own_host = addressing.host_of(self.unit.name)
        legacy_password = passwords.client if passwords else None

        def ready(digest: str | None) -> bool:
            applied = {u.name: peers.data[u].get(APPLIED_KEY) for u in (self.unit, *peers.units)}
            serving = [r.unit for r in reports if r.redis_up]
            return credentials_ready(digest, applied, serving, cluster.primary)

        if clients.publish(where, own_host, legacy_password, ready):
            workload.client_users = clients.acl_users()
        workload.reconcile_config()
        if passwords is not None and not workload.problems and not clients.unreadable:
            self.save(peers, self.unit, APPLIED_KEY, clients.applied_digest())
            # The leader may have been the last member to hold the new users.
            clients.publish(where, own_host, legacy_password, ready)

    def execute_cluster_effect(self, effect: Effect) -> None:
        """The leader's effects: only a refusal needs the charm (the action's answer)."""
        if isinstance(effect, RefuseRequest):
            self.refusal = effect.reason
        logger.info("cluster: %s", effect)

    def load(self, loader: Callable[[str | None], tuple[Any, str | None]], text: str | None):
        """Load a journal from peer data; unreadable data gives a fresh, safe journal."""
        loaded, problem = loader(text)
        if problem:
            logger.warning("peer data unreadable, starting from a safe state: %s", problem)
            self.problems.append("peer data was unreadable: restarted from a safe state")
        return loaded

    def save(self, peers: ops.Relation, owner: ops.Unit | ops.Application, key: str, text: str):
        """Write a journal to peer data when it changed (an unchanged one wakes nobody)."""
        try:
            if peers.data[owner].get(key) != text:
                peers.data[owner][key] = text
        except ops.ModelError as error:  # the relation is going away (remove, broken)
            logger.info("peer data not written: %s", error)

    def bind_address(self) -> str:
        """The pod's address, as Juju's network-get gives it: redis and sentinel listen there."""
        try:
            binding = self.model.get_binding(PEER)
            address = binding.network.bind_address if binding is not None else None
        except ops.ModelError as error:
            logger.warning("network-get failed, listening on loopback: %s", error)
            address = None
        return str(address) if address is not None else "127.0.0.1"

    # ------------------------------------------------------------- the action

    def _on_switchover_action(self, event: ops.ActionEvent) -> None:
        from actions import SwitchoverParams

        params = event.load_params(SwitchoverParams, errors="fail")
        target = params.target
        if not self.unit.is_leader():
            event.fail("run the switchover action on the leader unit")
            return
        if target is not None and not is_unit_of(self.app.name, target):
            event.fail(f"target must be a unit of {self.app.name}, such as {self.app.name}/1")
            return
        if self.model.get_relation(PEER) is None:
            event.fail("the peer relation does not exist yet")
            return
        self.run(Event.SWITCHOVER_ACTION, target)
        if self.refusal is not None:
            event.fail(self.refusal)
            return
        cluster = self.cluster_facts()
        event.set_results(
            {
                "from": cluster.primary or "",
                "to": cluster.switchover_target or "",
                "message": "switchover requested; juju status shows when it completes",
            }
        )

    def _on_describe_cluster_action(self, event: ops.ActionEvent) -> None:
        from actions import NoParams, describe_cluster

        event.load_params(NoParams, errors="fail")
        peers = self.model.get_relation(PEER)
        if peers is None:
            event.fail("the peer relation does not exist yet")
            return
        cluster = self.cluster_facts()
        units = {self.unit.name: self.unit_facts()}
        for unit in peers.units:
            units[unit.name] = journal.load_unit(peers.data[unit].get(UNIT_JOURNAL_KEY))[0].current
        result = describe_cluster(cluster, units)
        record = self.rotation_record(peers)
        result["password-rotation"] = {
            "phase": record.phase,
            "round": record.revision,
            "confirmed": ",".join(record.confirmed),
        }
        event.set_results(result)

    def _on_history_action(self, event: ops.ActionEvent) -> None:
        from actions import HistoryParams, history

        params = event.load_params(HistoryParams, errors="fail")
        peers = self.model.get_relation(PEER)
        if peers is None:
            event.fail("the peer relation does not exist yet")
            return
        if params.machine == "unit":
            text = peers.data[self.unit].get(UNIT_JOURNAL_KEY)
            loaded, problem = journal.load_unit(text)
        else:
            loaded, problem = journal.load_cluster(peers.data[self.app].get(CLUSTER_JOURNAL_KEY))
        if problem:
            event.fail(f"the persisted journal is unreadable: {problem}")
            return
        event.set_results(history(loaded, params.limit))

    def _on_credentials_action(self, event: ops.ActionEvent) -> None:
        from actions import NoParams

        event.load_params(NoParams, errors="fail")
        peers = self.model.get_relation(PEER)
        passwords = None if peers is None else self.passwords(peers)
        if peers is None or passwords is None:
            event.fail("the internal passwords are not available yet (no peer relation or secret)")
            return
        event.set_results(
            {
                "username": ADMIN_USER,
                "password": passwords.admin,
                "primary": self.primary_endpoint(),
                "where": (
                    f"internal users (admin, replication, sentinel, default): Juju secret"
                    f" {peers.data[self.app].get(SECRET_ID_KEY)} (label {SECRET_LABEL});"
                    " each client relation's user: the Juju secret shared with that"
                    " requirer; legacy redis relation: the password field of its data"
                ),
            }
        )

    def primary_endpoint(self) -> str:
        """``host:port`` of the recorded primary, or empty when none is established."""
        where = endpoints(
            self.cluster_facts(),
            Addressing(self.app.name).host_of,
            functools.partial(master_name, self.app.name),
            port=REDIS_PORT,
            sentinel_port=SENTINEL_PORT,
        )
        return where.primary or ""

    # --------------------------------------------------------- config, secrets

    def _on_secret_remove(self, event: ops.SecretRemoveEvent) -> None:
        """No unit tracks this revision of one of our secrets any more: prune it."""
        if event.secret.label in (SECRET_LABEL, USERS_LABEL):
            event.remove_revision()

    def charm_config(self) -> CharmConfig | None:
        """The operator's config, validated; None (and a problem noted) when invalid."""
        try:
            return self.load_config(CharmConfig)
        except ValidationError as error:
            self.config_error = config_problem(error)
            return None

    def passwords(self, peers: ops.Relation) -> Passwords | None:
        """The internal passwords; the leader creates the secret the first time."""
        secret_id = peers.data[self.app].get(SECRET_ID_KEY)
        if secret_id is None and self.unit.is_leader():
            content = {field: secrets.token_urlsafe(24) for field in PASSWORD_FIELDS}
            secret = self.app.add_secret(content, label=SECRET_LABEL)
            secret_id = secret.id
            assert secret_id is not None
            peers.data[self.app][SECRET_ID_KEY] = secret_id
        if secret_id is None:
            return None
        try:
            secret = self.model.get_secret(id=secret_id)
            # refresh: since Juju 3.1.7 / 3.3.1 an owner tracks a revision too.
            content = secret.get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError) as error:
            logger.warning("internal secret not readable: %s", type(error).__name__)
            return None
        missing = [field for field in PASSWORD_FIELDS if field not in content]
        if missing and self.unit.is_leader():
            # A field this revision of the charm added: the leader completes the secret.
            content |= {field: secrets.token_urlsafe(24) for field in missing}
            secret.set_content(content)
        elif missing:
            return None
        self.secret_content = content
        return passwords_in_use(content, self.rotation_record(peers))

    def dying_units(self) -> tuple[str, ...]:
        """The units of this application Juju is removing (``goal-state``: dying).

        Asked only when a primary hands over: two units removed at once must not hand
        the primary to each other. Unknown (no goal-state): none.
        """
        try:
            goals = ops.hookcmds.goal_state().units
        except (ops.hookcmds.Error, OSError, ValueError) as error:
            logger.warning("goal-state not available: %s", type(error).__name__)
            return ()
        return tuple(sorted(u for u, goal in goals.items() if goal.status == "dying"))

    # -------------------------------------------------------------- rotation

    def rotation_record(self, peers: ops.Relation) -> records.RotationRecord:
        """The leader's record of the rotation in progress (idle when none)."""
        record, problem = records.load(
            records.RotationRecord, peers.data[self.app].get(ROTATION_KEY)
        )
        if problem:
            logger.warning("rotation record unreadable, treated as idle: %s", problem)
        return record

    def operator_passwords(self) -> dict[str, str] | None:
        """The passwords the operator set in the ``system-users`` secret (None: not set)."""
        secret_id = self.config.get("system-users")
        if not secret_id:
            return None
        try:
            content = self.model.get_secret(id=str(secret_id)).get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError) as error:
            self.problems.append(
                f"system-users: secret not readable ({type(error).__name__}):"
                " grant it to the application"
            )
            return None
        wanted = {f"{user}-password" for user in rotation.ROTATABLE}
        unknown = sorted(set(content) - wanted)
        bad = sorted(k for k in set(content) & wanted if len(content[k]) < 8)
        if unknown or bad:
            self.problems.append(
                f"system-users: keys must be {', '.join(sorted(wanted))}"
                f" with at least 8 characters (unknown {unknown}, too short {bad})"
            )
            return None
        if not sentinel_safe(content.get("sentinel-password", "printable")):
            self.problems.append(
                "system-users: sentinel-password must be printable ASCII without spaces,"
                " quotes or backslashes (redis-sentinel writes it back unquoted)"
            )
            return None
        return {k: content[k] for k in wanted & set(content)}

    def start_rotation(self, peers: ops.Relation, new: dict[str, str]) -> str | None:
        """Write the new passwords beside the current ones and begin; why not, if refused."""
        record, refusal = rotation.begin(self.rotation_record(peers))
        if refusal is not None:
            return refusal
        secret = self.model.get_secret(id=peers.data[self.app][SECRET_ID_KEY])
        nexts = {f"{field}-next": value for field, value in new.items()}
        content = secret.get_content(refresh=True) | nexts
        secret.set_content(content)
        self.save(peers, self.app, ROTATION_KEY, records.dump(record))
        logger.info("password rotation %d started for %s", record.revision, sorted(new))
        return None

    def step_rotation(self, peers: ops.Relation, members: tuple[str, ...], ok: bool) -> None:
        """Report this unit's phase when its work is done; the leader advances the rotation."""
        record = self.rotation_record(peers)
        if record.phase != "idle" and ok:
            mine = records.UnitRotation(phase=record.phase, revision=record.revision)
            self.save(peers, self.unit, ROTATION_KEY, records.dump(mine))
        if not self.unit.is_leader():
            return
        if record.phase == "idle":
            new = self.operator_passwords()
            current = self.secret_content
            changed = {k: v for k, v in (new or {}).items() if current.get(k) != v}
            if changed:
                self.start_rotation(peers, changed)
            return
        reports = {}
        for unit in (self.unit, *peers.units):
            text = peers.data[unit].get(ROTATION_KEY)
            reports[unit.name] = records.load(records.UnitRotation, text)[0]
        after, promote = rotation.advance(record, members or (self.unit.name,), reports)
        if promote:
            secret = self.model.get_secret(id=peers.data[self.app][SECRET_ID_KEY])
            secret.set_content(promoted(secret.get_content(refresh=True)))
        if after != record:
            logger.info(
                "password rotation %d: %s -> %s", after.revision, record.phase, after.phase
            )
            self.save(peers, self.app, ROTATION_KEY, records.dump(after))

    def _on_rotate_passwords_action(self, event: ops.ActionEvent) -> None:
        from actions import RotateParams

        params = event.load_params(RotateParams, errors="fail")
        peers = self.model.get_relation(PEER)
        if not self.unit.is_leader():
            event.fail("run the rotate-passwords action on the leader unit")
            return
        if peers is None or self.passwords(peers) is None:
            event.fail("the internal passwords are not available yet")
            return
        if self.config.get("system-users"):
            event.fail("passwords come from the system-users secret: add a revision to it")
            return
        new = {f"{user}-password": secrets.token_urlsafe(24) for user in params.user_list}
        refusal = self.start_rotation(peers, new)
        if refusal is not None:
            event.fail(refusal)
            return
        self.run(Event.ROTATE_PASSWORDS_ACTION)
        record = self.rotation_record(peers)
        event.set_results(
            {
                "users": ",".join(params.user_list),
                "rotation": record.revision,
                "phase": record.phase,
                "message": "rolling out: every unit accepts both passwords, then uses the new"
                " ones, then the old ones are removed; describe-cluster shows the phase",
            }
        )

    # ------------------------------------------------------------------ status

    def unit_facts(self) -> UnitFacts | None:
        """This unit's persisted facts (None before the peer relation exists)."""
        peers = self.model.get_relation(PEER)
        if peers is None:
            return None
        return journal.load_unit(peers.data[self.unit].get(UNIT_JOURNAL_KEY))[0].current

    def cluster_facts(self) -> ClusterFacts:
        """The leader's persisted cluster facts (fresh ones when there are none)."""
        peers = self.model.get_relation(PEER)
        text = None if peers is None else peers.data[self.app].get(CLUSTER_JOURNAL_KEY)
        return journal.load_cluster(text)[0].current

    def _on_collect_unit_status(self, event: ops.CollectStatusEvent) -> None:
        if self.charm_config() is None and self.config_error is not None:
            event.add_status(ops.BlockedStatus(self.config_error))
        if self.unit.is_leader() and self.config.get("system-users"):
            self.operator_passwords()
            for problem in self.problems:
                if problem.startswith("system-users"):
                    event.add_status(ops.BlockedStatus(problem[:200]))
        facts = self.unit_facts()
        if facts is None:
            event.add_status(ops.WaitingStatus("waiting for the peer relation"))
            return
        event.add_status(unit_status(facts, self.cluster_facts()))

    def _on_collect_app_status(self, event: ops.CollectStatusEvent) -> None:
        if not self.unit.is_leader():
            return
        status = app_status(self.cluster_facts())
        peers = self.model.get_relation(PEER)
        note = None if peers is None else ClientRelations(self, peers).record().note
        if note and isinstance(status, ops.ActiveStatus):
            # A requirer's bad request is its operator's to fix: said, not blocking.
            status = ops.ActiveStatus(f"{status.message}; client relations: {note}"[:400])
        event.add_status(status)


def passwords_in_use(content: dict[str, str], record: records.RotationRecord) -> Passwords:
    """The passwords this unit uses and accepts, from the secret and the rotation phase."""
    use_next, accept_other = rotation.in_use(record)
    accepted: list[tuple[str, str]] = []

    def pick(field: str, user: str) -> str:
        current, new = content[field], content.get(f"{field}-next")
        if new is None:
            return current
        using, other = (new, current) if use_next else (current, new)
        if accept_other:
            accepted.append((user, other))
        return using

    admin = pick("admin-password", ADMIN_USER)
    replication = pick("replication-password", REPLICATION_USER)
    sentinel = pick("sentinel-password", SENTINEL_USER)
    client = pick("client-password", LEGACY_USER)
    return Passwords(
        admin=admin,
        replication=replication,
        sentinel=sentinel,
        client=client,
        also_accepted=tuple(accepted),
    )


def promoted(content: dict[str, str]) -> dict[str, str]:
    """The secret content once the new passwords are the current ones."""
    result = {k: v for k, v in content.items() if not k.endswith("-next")}
    for key, value in content.items():
        if key.endswith("-next"):
            result[key.removesuffix("-next")] = value
    return result


# ---------------------------------------------------------------------- helpers


def subject_of(event: ops.EventBase) -> str | None:
    """The unit an event is about: the departed or joining peer."""
    if isinstance(event, ops.RelationDepartedEvent) and event.departing_unit is not None:
        return event.departing_unit.name
    if isinstance(event, ops.RelationEvent) and event.unit is not None:
        return event.unit.name
    return None


def switched_from(event: ops.PebbleCustomNoticeEvent) -> str | None:
    """The host Sentinel moved the primary away from, if the notice is its switch script's."""
    if event.notice.key != PRIMARY_SWITCH_NOTICE:
        return None
    try:
        switch = PrimarySwitch.from_notice_data(event.notice.last_data)
    except (ops.pebble.Error, ops.ModelError) as error:  # the notice is gone (pod restarted)
        logger.info("switch notice not readable: %s", type(error).__name__)
        return None
    return None if switch is None else switch.from_host


def is_unit_of(app: str, name: str) -> bool:
    """``name`` is a unit name of application ``app``."""
    prefix, _, number = name.partition("/")
    return prefix == app and number.isdigit()


def config_problem(error: ValidationError) -> str:
    """One line naming the option and why, for a blocked status."""
    first = error.errors()[0]
    option = ".".join(str(part) for part in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid config: {option}: {message}{more}"


def unit_status(facts: UnitFacts, cluster: ClusterFacts) -> ops.StatusBase:
    """What this unit is doing, in words an operator can act on."""
    following = facts.following
    moving = facts.sentinel_primary is not None and facts.sentinel_primary != following
    if facts.state in (UnitState.PRIMARY, UnitState.SYNCING, UnitState.REPLICA) and moving:
        return ops.MaintenanceStatus(
            f"failover in progress: Sentinel names {facts.sentinel_primary}, following {following}"
        )
    match facts.state:
        case UnitState.WAITING_FOR_WORKLOAD:
            return ops.WaitingStatus("waiting for Pebble in the redis and sentinel containers")
        case UnitState.WAITING_FOR_PRIMARY:
            return ops.WaitingStatus(f"fenced until a primary is known (cluster {cluster.state})")
        case UnitState.STARTING_PRIMARY:
            return ops.MaintenanceStatus("starting as primary")
        case UnitState.PRIMARY:
            if not facts.sentinel_up:
                return ops.ActiveStatus("primary (this unit's sentinel is down)")
            return ops.ActiveStatus("primary")
        case UnitState.SYNCING:
            link = "link up" if facts.master_link_up else "link down"
            return ops.MaintenanceStatus(f"syncing from {following} ({link})")
        case UnitState.REPLICA:
            return ops.ActiveStatus(f"replica of {following}")
        case UnitState.FENCED:
            return ops.WaitingStatus("restarted empty: fenced until Sentinel promotes a replica")
        case UnitState.HANDING_OVER:
            return ops.MaintenanceStatus("handing over the primary role to a replica")
        case UnitState.STOPPED:
            return ops.MaintenanceStatus("stopped")
    return ops.UnknownStatus()


def app_status(cluster: ClusterFacts) -> ops.StatusBase:
    """The cluster's state as the leader recorded it."""
    n, primary = len(cluster.members), cluster.primary
    note = f"; {cluster.note}" if cluster.note else ""
    match cluster.state:
        case ClusterState.FORMING:
            return ops.WaitingStatus("forming: waiting for every unit to report")
        case ClusterState.BOOTSTRAPPING:
            return ops.MaintenanceStatus(f"bootstrapping {cluster.bootstrapped} as first primary")
        case ClusterState.RECOVERING:
            return ops.WaitingStatus("recovering: electing the most advanced unit as primary")
        case ClusterState.NOT_HA:
            return ops.ActiveStatus(
                f"primary {primary}; not HA: {n} unit{'s' if n != 1 else ''},"
                f" failover needs 3{note}"
            )
        case ClusterState.HA:
            return ops.ActiveStatus(
                f"primary {primary}; HA, sentinel quorum {cluster.quorum}/{n}{note}"
            )
        case ClusterState.NO_QUORUM:
            return ops.BlockedStatus(
                f"primary {primary}; fewer than {cluster.quorum} of {n} sentinels up:"
                " failover impossible"
            )
        case ClusterState.SWITCHING_OVER:
            target = cluster.switchover_target
            if primary == target:
                return ops.MaintenanceStatus(f"switched over to {target}, finishing")
            return ops.MaintenanceStatus(f"switching over from {primary} to {target}")
        case ClusterState.RESETTING_SENTINELS:
            return ops.MaintenanceStatus(
                f"resetting sentinels after {', '.join(cluster.departed) or 'a unit'} left"
            )
    return ops.UnknownStatus()


if __name__ == "__main__":  # pragma: nocover
    ops.main(RedisK8sCharm)
