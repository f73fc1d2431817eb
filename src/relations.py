"""Client relations glue: the legacy ``redis`` interface and ``valkey_client`` / ``redis_client``.

The charm calls ``ClientRelations`` twice per hook: ``users()`` before it builds
the workload (every unit renders every client user into its ACL file), and
``publish()`` at the end, when the cluster facts of the hook are known. What is
published and which users exist are decided in ``machine.clients``; this module
reads and writes Juju data only.

- ``redis`` (interface ``redis``, the legacy one): every unit publishes its stable
  ``hostname`` and ``port``; the leader publishes ``leader-host`` (the primary's
  stable host name). Legacy requirers send ``AUTH <password>`` only, which is
  redis' ``default`` user: the app and unit data carry that user's ``password``
  (the interface has no other way to pass it). That user has every key and no
  administration; it is not the admin user.
- ``valkey-client`` (interface ``valkey_client``) and ``redis-client`` (interface
  ``redis_client``): the data platform protocol of ``dpcharmlibs-interfaces``; its
  provider handler parses the requests and writes the responses, with the
  password in a Juju secret shared with the requirer only. The library (and the
  ``cryptography`` it pulls in) is imported only in hooks where something a
  requirer sees may change: the leader keeps a fingerprint of what it last
  published.
"""

from __future__ import annotations

import json
import logging
import secrets
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ops
from pydantic import ValidationError

from machine import records
from machine.clients import (
    Endpoints,
    client_rules,
    fingerprint,
    legacy_app_data,
    legacy_unit_data,
    plan_users,
    relation_of,
    user_name,
    users_digest,
)
from workload.config import acl_rule

if TYPE_CHECKING:
    from dpcharmlibs.interfaces import ResourceProviderEventHandler

logger = logging.getLogger(__name__)

LEGACY_ENDPOINT = "redis"
CLIENT_ENDPOINTS = ("valkey-client", "redis-client")
ALL_ENDPOINTS = (LEGACY_ENDPOINT, *CLIENT_ENDPOINTS)
CLIENTS_KEY = "clients"
"""Peer application data: the ``ClientsRecord``."""
USERS_LABEL = "client-users"
REDIS_VERSION = "7.0"
"""The Redis major.minor the image runs (``ubuntu/redis:7.0``), published as ``version``."""
_UNREADABLE = (ValidationError, ValueError, TypeError, KeyError, AttributeError)
"""What parsing a requirer's data can raise: garbage is reported, never raised."""


class ClientRelations:
    """Every client relation of this unit, for one hook."""

    def __init__(self, charm: ops.CharmBase, peers: ops.Relation) -> None:
        """Read-only until ``publish``."""
        self.charm = charm
        self.peers = peers
        self.model = charm.model
        self.problems: list[str] = []
        self._handlers: dict[str, ResourceProviderEventHandler] = {}
        self._users: dict[str, dict[str, str]] | None = None
        self.unreadable = False
        """The client users' secret could not be read: change nothing that depends on it."""

    # --------------------------------------------------------------- users

    def record(self) -> records.ClientsRecord:
        """The leader's record (secret id, digests, note)."""
        text = self.peers.data[self.charm.app].get(CLIENTS_KEY)
        record, problem = records.load(records.ClientsRecord, text)
        if problem:
            logger.warning("client record unreadable, starting afresh: %s", problem)
        return record

    def users(self) -> dict[str, dict[str, str]]:
        """Every client user: name -> ``{"password", "rules"}`` (from the application secret)."""
        if self._users is not None:
            return self._users
        self._users = {}
        secret_id = self.record().users_secret
        if secret_id is None:
            return self._users
        try:
            secret = self.model.get_secret(id=secret_id)
            content = secret.get_content(refresh=True)
            users = json.loads(content.get("users", "{}"))
        except (ops.SecretNotFoundError, ops.ModelError, ValueError) as error:
            logger.warning("client users not readable: %s", type(error).__name__)
            self.problems.append("client users not readable yet")
            self.unreadable = True
            return self._users
        self._users = {
            str(name): {"password": str(user["password"]), "rules": str(user["rules"])}
            for name, user in users.items()
            if isinstance(user, dict) and relation_of(str(name)) is not None
        }
        return self._users

    def acl_users(self) -> dict[str, str] | None:
        """The client users as ACL rule text (hashes only), for the ACL file.

        None when they cannot be read now: the ACL file is then left as it is,
        rather than rewritten without them (which would lock every client out).
        """
        users = self.users()
        if self.unreadable:
            return None
        return {name: acl_rule([user["password"]], user["rules"]) for name, user in users.items()}

    # ------------------------------------------------------------- publish

    def publish(
        self,
        where: Endpoints,
        own_host: str,
        client_password: str | None,
        ready: Callable[[str | None], bool] = lambda _: False,
    ) -> bool:
        """Publish the endpoints to every client relation; the leader also manages the users.

        Args:
            where: the endpoints, from the cluster facts.
            own_host: this unit's stable host name.
            client_password: the legacy (``default``) user's password in use.
            ready: whether every serving member holds the users of a digest
                (``machine.clients.credentials_ready``); until then requirers get
                the endpoints but not their credentials.

        Returns:
            True when the set of client users changed (the caller reloads the ACL).
        """
        self._publish_legacy(where, own_host, client_password)
        if not self.charm.unit.is_leader():
            return False
        self.users()
        if self.unreadable:
            return False  # never decide on users that could not be read
        return self._publish_clients(where, ready)

    def applied_digest(self) -> str:
        """The digest of the client users this unit holds (it reports it once loaded)."""
        return users_digest(self.users())

    def _publish_legacy(self, where: Endpoints, own_host: str, password: str | None) -> None:
        unit_data = legacy_unit_data(own_host, where.port)
        app_data = legacy_app_data(where)
        if password is not None:
            unit_data["password"] = password
            app_data = app_data | {"password": password} if app_data else {}
        for relation in self.model.relations[LEGACY_ENDPOINT]:
            _update(relation.data[self.charm.unit], unit_data)
            if self.charm.unit.is_leader() and app_data:
                _update(relation.data[self.charm.app], app_data)

    def _publish_clients(self, where: Endpoints, ready: Callable[[str | None], bool]) -> bool:
        relations = [(ep, rel) for ep in CLIENT_ENDPOINTS for rel in self.model.relations[ep]]
        record = self.record()
        existing = self.users()
        seen = [(ep, rel.id, dict(rel.data[rel.app])) for ep, rel in relations if rel.app]
        hand_out = ready(record.users_digest)
        published = fingerprint(where, seen, sorted(existing), hand_out)
        if published == record.published:
            return False  # nothing a requirer sees changed: the library is not even imported
        notes: list[str] = []
        wanted: dict[str, tuple[str, ops.Relation, Any, str]] = {}
        kept: list[str] = []
        for endpoint, relation in relations:
            try:
                requests = list(self._handler(endpoint).requests(relation))
            except _UNREADABLE as error:
                logger.warning(
                    "%s relation %d: unreadable request: %s", endpoint, relation.id, _brief(error)
                )
                name = relation.app.name if relation.app else endpoint
                notes.append(f"{name}: unreadable request (see the log)")
                kept += [u for u in existing if relation_of(u) == relation.id]  # lose nothing
                continue
            for index, request in enumerate(requests):
                rules, problem = client_rules(request.resource, request.extra_user_roles)
                name = relation.app.name if relation.app else endpoint
                if problem is not None or rules is None:
                    notes.append(f"{name}: {problem}")
                    refused = user_name(relation.id, index)
                    kept += [refused] if refused in existing else []  # lose nothing
                    continue
                wanted[user_name(relation.id, index)] = (endpoint, relation, request, rules)
        plan = plan_users([*wanted, *kept], existing)
        users = {name: user for name, user in existing.items() if name not in plan.remove}
        for name in plan.create:
            users[name] = {"password": secrets.token_urlsafe(24), "rules": wanted[name][3]}
        changed = users != existing
        if changed:
            record = self._save_users(record, users)
            hand_out = False  # the other units do not hold the new users yet
        for name, (endpoint, relation, request, _) in wanted.items():
            password = users[name]["password"] if hand_out else None
            self._respond(endpoint, relation, request, name, password, where)
        if plan.create or plan.remove:
            logger.info("client users: created %s, removed %s", plan.create, plan.remove)
        note = "; ".join(notes)[:300] or None
        seen_after = [(ep, rel.id, dict(rel.data[rel.app])) for ep, rel in relations if rel.app]
        published = fingerprint(where, seen_after, sorted(users), hand_out)
        record = record.model_copy(update={"published": published, "note": note})
        _update(self.peers.data[self.charm.app], {CLIENTS_KEY: records.dump(record)})
        return changed

    def _save_users(
        self, record: records.ClientsRecord, users: dict[str, dict[str, str]]
    ) -> records.ClientsRecord:
        content = {"users": json.dumps(users, sort_keys=True)}
        if record.users_secret is None:
            try:  # the record was lost but the secret is still ours: reuse it
                secret = self.model.get_secret(label=USERS_LABEL)
                secret.set_content(content)
            except ops.SecretNotFoundError:
                secret = self.charm.app.add_secret(content, label=USERS_LABEL)
            record = record.model_copy(update={"users_secret": secret.id})
        else:
            self.model.get_secret(id=record.users_secret).set_content(content)
        self._users = users
        # Not secret: only wakes the other units, whose ACL file must follow.
        return record.model_copy(update={"users_digest": users_digest(users)})

    def _respond(self, endpoint, relation, request, name, password, where: Endpoints) -> None:
        """Write the response; without ``password`` the credentials are left as they are."""
        from dpcharmlibs.interfaces import ValkeyResponseModel

        handler = self._handler(endpoint)
        fields: dict[str, Any] = {
            "request_id": request.request_id,
            "resource": request.resource,
            "endpoints": where.primary or "",
            "read_only_endpoints": ",".join(where.replicas),
            "sentinel_endpoints": ",".join(where.sentinels),
            "mode": "sentinel",
            "tls": False,
            "version": REDIS_VERSION,
        }
        if password is not None:
            fields |= {"username": name, "password": password}
        if where.master_name is not None:
            fields["master-name"] = where.master_name  # an extra field: the library keeps it
        handler.compute_diff(relation, request)  # what the requirer's handler diffs against
        handler.set_response(relation.id, ValkeyResponseModel(**fields))

    def _handler(self, endpoint: str) -> ResourceProviderEventHandler:
        """The library's provider handler of ``endpoint``, created the first time it is needed."""
        if endpoint not in self._handlers:
            with warnings.catch_warnings():
                # Its models trigger pydantic's UnsupportedFieldAttributeWarning (twice, at
                # import): noise in every such hook's log, nothing for an operator to do.
                warnings.simplefilter("ignore")
                import dpcharmlibs.interfaces  # noqa: F401
            from dpcharmlibs.interfaces import RequirerCommonModel, ResourceProviderEventHandler

            self._handlers[endpoint] = ResourceProviderEventHandler(
                self.charm, endpoint, RequirerCommonModel, unique_key=f"clients-{endpoint}"
            )
        return self._handlers[endpoint]


def _update(data: ops.RelationDataContent, values: dict[str, str]) -> None:
    """Write only what differs: an unchanged value wakes nobody."""
    for key, value in values.items():
        if data.get(key) != value:
            data[key] = value


def _brief(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return type(error).__name__
