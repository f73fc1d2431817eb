"""Requirer side of the legacy ``redis`` interface, served by redis-k8s.

The provider (redis-k8s) publishes, in the relation:

- each of its units' data: ``hostname`` (the unit's stable host name), ``port``,
  and ``password``;
- its application data: ``leader-host``, the stable host name of the current
  primary (updated on every failover and switchover), ``port`` and ``password``.

Authentication is always on: ``password`` is the password of redis' ``default``
user (clients that send ``AUTH <password>`` only). A requirer that ignores it
cannot connect; it must read ``password`` (or use ``url``, which carries it).

Use it in a charm that declares ``requires: redis: interface: redis``::

    from charms.redis_k8s.v0.redis import RedisRelationCharmEvents, RedisRequires

    class MyCharm(CharmBase):
        on = RedisRelationCharmEvents()

        def __init__(self, *args):
            super().__init__(*args)
            self.redis = RedisRequires(self)  # relation_name="redis"
            self.framework.observe(self.on.redis_relation_updated, self._on_redis)
            self.framework.observe(self.redis.on.primary_changed, self._on_primary)

        def _on_redis(self, event):
            url = self.redis.url  # redis://:<password>@<primary host>:<port>

``redis_relation_updated`` is emitted on the charm (as before) whenever the
relation changes or breaks; ``primary_changed`` (on ``RedisRequires.on``) when
``leader-host`` names another host than the last time this unit saw it.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from ops import CharmBase, Object, RelationBrokenEvent, RelationChangedEvent
from ops.charm import CharmEvents
from ops.framework import EventBase, EventSource, ObjectEvents, StoredState

# The unique Charmhub library identifier, never change it.
LIBID = "fe18a608cec5465fa5153e419abcad7b"

# Increment this major API version when introducing breaking changes.
LIBAPI = 0

# Increment this PATCH version before using `charmcraft publish-lib` or reset
# to 0 if you are raising the major API version.
LIBPATCH = 8

logger = logging.getLogger(__name__)

DEFAULT_RELATION_NAME = "redis"
DEFAULT_PORT = 6379


class RedisRelationUpdatedEvent(EventBase):
    """The redis relation changed (data published, a unit came or went, or it broke)."""


class RedisPrimaryChangedEvent(EventBase):
    """``leader-host`` names a new primary (a failover or a switchover)."""

    def __init__(self, handle, previous: str | None, current: str | None):
        """The host ``leader-host`` named before (None at first) and now."""
        super().__init__(handle)
        self.previous = previous
        self.current = current

    def snapshot(self) -> dict:
        """Save the hosts (the event may be deferred)."""
        return {"previous": self.previous, "current": self.current}

    def restore(self, snapshot: dict) -> None:
        """Restore the hosts."""
        self.previous = snapshot.get("previous")
        self.current = snapshot.get("current")


class RedisRelationCharmEvents(CharmEvents):
    """Charm events with ``redis_relation_updated``: set ``on = RedisRelationCharmEvents()``."""

    redis_relation_updated = EventSource(RedisRelationUpdatedEvent)


class RedisRequiresEvents(ObjectEvents):
    """The events of ``RedisRequires`` itself."""

    primary_changed = EventSource(RedisPrimaryChangedEvent)


class RedisRequires(Object):
    """The requirer side of the ``redis`` interface."""

    on = RedisRequiresEvents()  # type: ignore[reportAssignmentType]
    _stored = StoredState()

    def __init__(self, charm: CharmBase, relation_name: str = DEFAULT_RELATION_NAME):
        """Observe the relation's changed and broken events."""
        super().__init__(charm, relation_name)
        self.charm = charm
        self.relation_name = relation_name
        self._stored.set_default(primary=None)
        self.framework.observe(charm.on[relation_name].relation_changed, self._on_changed)
        self.framework.observe(charm.on[relation_name].relation_broken, self._on_broken)

    def _on_changed(self, event: RelationChangedEvent) -> None:
        self._emit_updated()
        current = self.app_data.get("leader-host") if self.app_data else None
        if current and current != self._stored.primary:
            previous, self._stored.primary = self._stored.primary, current
            self.on.primary_changed.emit(previous, current)

    def _on_broken(self, event: RelationBrokenEvent) -> None:
        self._stored.primary = None
        self._emit_updated()

    def _emit_updated(self) -> None:
        updated = getattr(self.charm.on, "redis_relation_updated", None)
        if updated is not None:
            updated.emit()

    @property
    def _relation(self):
        return self.model.get_relation(self.relation_name)

    @property
    def relation_data(self) -> dict[str, str] | None:
        """The data of one unit of the redis application (``hostname``, ``port``...)."""
        relation = self._relation
        if relation is None:
            return None
        for unit in sorted(relation.units, key=lambda u: u.name):
            data = dict(relation.data[unit])
            if data.get("hostname"):
                return data
        return None

    @property
    def app_data(self) -> dict[str, str] | None:
        """The redis application's data (``leader-host``, ``port``, ``password``)."""
        relation = self._relation
        if relation is None or relation.app is None:
            return None
        return dict(relation.data[relation.app])

    @property
    def password(self) -> str | None:
        """The password of redis' ``default`` user (app data first, then unit data)."""
        for data in (self.app_data, self.relation_data):
            if data and data.get("password"):
                return data["password"]
        return None

    @property
    def url(self) -> str | None:
        """``redis://[:password@]host:port`` of the primary (``leader-host``), if known.

        Without ``leader-host`` (an older provider), a unit's ``hostname`` is used.
        """
        app_data, unit_data = self.app_data or {}, self.relation_data or {}
        host = app_data.get("leader-host") or unit_data.get("hostname")
        if not host:
            return None
        port = app_data.get("port") or unit_data.get("port") or str(DEFAULT_PORT)
        password = self.password
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{host}:{port}"
