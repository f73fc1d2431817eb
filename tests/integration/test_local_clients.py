"""Client relations on `redis-k8s-local`: the real provider, real redis, relation-data clients.

The client applications are played by the test (`redis-k8s-local relate`,
`remote-set`): their databags are written as Juju would, and our units run the
real hooks. What our application publishes is read from the model (the store the
hook tools write); a client reaches redis at the published host names, which
resolve on this machine (/etc/hosts).

- `valkey_client`: the requirer charm of `tests/charms` (built only on
  `dpcharmlibs-interfaces`' requirer handler) is run with ops.testing on what
  the cluster really published (databag and the secret granted to it): it gets
  endpoints, sentinel endpoints and credentials that work on every unit and on
  the sentinels (redis-py's `Sentinel` finds the primary with them, before and
  after a failover), and an endpoints-changed event after a failover. Breaking
  the relation removes its user from every unit.
- legacy `redis`: a client that only reads `leader-host` and `password` keeps
  writing through a failover and a switchover; the `client` password rotated
  under that writer loses nothing and the old password is refused at the end;
  the admin and sentinel passwords rotated, Sentinel still authenticates (it
  fails over) and refuses its old password.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.sentinel
import yaml
from ops import testing
from redis_k8s_local import cli
from redis_k8s_local.store import Store

from tests.charms.valkey_requirer import charm as requirer
from tests.integration.cluster_support import (
    SETTLE_TIMEOUT_S,
    Writer,
    assert_converged,
    deployed,
    local,
    monitored,
    password,
    record_figure,
    sentinel_of,
    skip_without_local_cluster,
    status,
    wait_for,
)
from workload.config import ADMIN_USER

pytestmark = pytest.mark.integration

skip_without_local_cluster()

APP = "redis-k8s"
REQUIRER_META = yaml.safe_load((Path(requirer.__file__).parent / "charmcraft.yaml").read_text())


@pytest.fixture
def cluster() -> Iterator[None]:
    yield from deployed()


def model() -> dict:
    return Store(cli.state_dir()).read()


def published(relation_id: str) -> dict[str, str]:
    """Our application's databag in the relation, as the client reads it."""
    relation = model()["relations"].get(relation_id)
    return {} if relation is None else dict(relation["app_data"])


def secret_content(secret_id: str) -> dict[str, str]:
    """The latest content of one of our secrets (a client granted it reads this)."""
    secret = model()["secrets"][secret_id]
    return dict(secret["contents"][str(secret["revision"])])


def freeze_primary_until_failover() -> dict:
    """Freeze the primary's redis until another unit's sentinel names a new one; thaw it."""
    old = assert_converged(3)
    local("freeze", old["name"])
    try:
        wait_for(
            "Sentinel to fail over",
            lambda: any(
                monitored(u)[0]["ip"] != old["hostname"]
                for u in status()["units"]
                if u["name"] != old["name"]
            ),
            timeout=30,
        )
    finally:
        local("thaw", old["name"])
    return old


# ------------------------------------------------------------------ valkey_client


def requirer_context() -> testing.Context:
    requirer.RECEIVED.clear()
    return testing.Context(
        requirer.ValkeyRequirerCharm, meta=REQUIRER_META, app_name="requirer", unit_id=0
    )


def requirer_asks(rctx: testing.Context) -> dict[str, str]:
    """The requirer's relation-created: what its handler writes in its application data."""
    rel = testing.Relation("valkey", remote_app_name=APP)
    out = rctx.run(rctx.on.relation_created(rel), testing.State(leader=True, relations={rel}))
    return dict(next(iter(out.relations)).local_app_data)


def requirer_hears(
    rctx: testing.Context, asked: dict[str, str], ours: dict[str, str], remembered: dict
) -> dict[str, str]:
    """Run the requirer's relation-changed on what we published; its unit data after."""
    secrets = []
    for field in ("secret-user", "secret-tls"):
        for request in json.loads(ours.get("requests", "[]")):
            if request.get(field):
                secrets.append(
                    testing.Secret(
                        id=request[field],
                        tracked_content=secret_content(request[field]),
                        latest_content=secret_content(request[field]),
                    )
                )
    rel = testing.Relation(
        "valkey",
        remote_app_name=APP,
        local_app_data=asked,
        local_unit_data=remembered,
        remote_app_data=ours,
        remote_units_data={0: {}},
    )
    out = rctx.run(
        rctx.on.relation_changed(rel, remote_unit=0),
        testing.State(leader=True, relations={rel}, secrets=secrets),
    )
    return dict(next(iter(out.relations)).local_unit_data)


def test_a_valkey_client_requirer_gets_working_credentials_and_follows_a_failover(cluster):
    rctx = requirer_context()
    asked = requirer_asks(rctx)
    relation_id = local("relate", "valkey-client", "requirer", "--interface", "valkey_client")
    relation_id = relation_id.strip()
    local("remote-set", relation_id, *(f"{k}={v}" for k, v in asked.items()))

    def credentials_published() -> dict[str, str] | None:
        ours = published(relation_id)
        requests = json.loads(ours.get("requests", "[]"))
        return ours if requests and requests[0].get("secret-user") else None

    before = wait_for("credentials in the relation", credentials_published, timeout=60)
    remembered = requirer_hears(rctx, asked, before, {})
    (event, seen), *_ = requirer.RECEIVED
    assert event == "ResourceCreatedEvent", requirer.RECEIVED
    record_figure(
        "valkey_client before: " + json.dumps({k: v for k, v in seen.items() if k != "password"})
    )
    units = status()["units"]
    primary = assert_converged(3)
    assert seen["endpoints"] == f"{primary['hostname']}:6379"
    assert seen["sentinel-endpoints"] == ",".join(f"{u['hostname']}:26379" for u in units)

    # The credentials work: on the primary (keys under the prefix only), read on replicas.
    user, password = seen["username"], seen["password"]
    host, port = seen["endpoints"].split(":")
    client = redis.Redis(host, int(port), username=user, password=password, socket_timeout=2)
    client.set("app:before-failover", "kept")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("other:key", 1)
    for endpoint in seen["read-only-endpoints"].split(","):
        replica_host, replica_port = endpoint.split(":")
        replica = redis.Redis(
            replica_host, int(replica_port), username=user, password=password, socket_timeout=2
        )
        wait_for("the key on the replica", lambda r=replica: r.get("app:before-failover"))
    # A Sentinel-aware client finds the primary with the same credentials.
    discovery = sentinel_discovery(seen)
    assert discovery.discover_master(seen["master-name"]) == (primary["hostname"], 6379)

    old = freeze_primary_until_failover()
    new = assert_converged(3)
    after = wait_for(
        "the new primary in the relation",
        lambda: (
            (o := published(relation_id))
            and json.loads(o["requests"])[0]["endpoints"] == f"{new['hostname']}:6379"
            and o
        ),
        timeout=30,
    )
    requirer.RECEIVED.clear()
    requirer_hears(rctx, asked, after, remembered)
    events = dict(requirer.RECEIVED)
    changed = events.get("ResourceEndpointsChangedEvent", {})
    record_figure(
        "valkey_client after: "
        + json.dumps({k: v for k, v in changed.items() if k != "password"}, default=str)
    )
    assert "ResourceEndpointsChangedEvent" in events, requirer.RECEIVED
    assert events["ResourceEndpointsChangedEvent"]["endpoints"] == f"{new['hostname']}:6379"
    moved = redis.Redis(new["hostname"], 6379, username=user, password=password, socket_timeout=2)
    assert moved.get("app:before-failover") == b"kept"
    moved.set("app:after-failover", 1)
    assert old["name"] != new["name"]
    assert discovery.discover_master(seen["master-name"]) == (new["hostname"], 6379)
    assert discovery.master_for(seen["master-name"]).get("app:after-failover") == b"1"

    # Breaking the relation removes the user from every unit.
    local("unrelate", relation_id)
    wait_for("the relation to go", lambda: relation_id not in model()["relations"], timeout=60)

    def refused_everywhere() -> bool:
        for unit in status()["units"]:
            gone = redis.Redis(
                unit["hostname"], 6379, username=user, password=password, socket_timeout=2
            )
            try:
                gone.ping()
                return False
            except redis.exceptions.AuthenticationError:
                continue
        return True

    wait_for("the user to be refused on every unit", refused_everywhere, timeout=60)


def sentinel_discovery(seen: dict) -> redis.sentinel.Sentinel:
    """redis-py's Sentinel client on the relation's sentinel endpoints and credentials."""
    credentials = {"username": seen["username"], "password": seen["password"]}
    credentials["socket_timeout"] = 2
    endpoints = [e.split(":") for e in seen["sentinel-endpoints"].split(",")]
    return redis.sentinel.Sentinel(
        [(host, int(port)) for host, port in endpoints], sentinel_kwargs=credentials, **credentials
    )


# ------------------------------------------------------------------ legacy redis


class RelationWriter(Writer):
    """A legacy client: writes through `leader-host` with `password`, both from relation data.

    After any error it reads the relation data again, as a client restarted by
    its charm's `redis_relation_updated` handler would.
    """

    def __init__(self, relation_id: str) -> None:
        super().__init__(sentinel_addresses=[])
        self.relation_id = relation_id

    def _discover(self) -> redis.Redis | None:
        data = published(self.relation_id)
        if "leader-host" not in data:
            return None
        return redis.Redis(
            data["leader-host"],
            int(data.get("port", 6379)),
            password=data.get("password"),
            socket_timeout=1,
            socket_connect_timeout=1,
        )


def test_a_legacy_client_follows_failover_switchover_and_password_rotation(cluster):
    """Through a failover, a switchover, a rotation of every password and a failover after it.

    Writes lost may only be those acknowledged just before a primary froze (the
    asynchronous replication window); the switchover and the rotation lose none.
    After the rotation the old passwords are refused everywhere, while replication
    (the replication user) and Sentinel (its failover) go on working.
    """
    relation_id = local("relate", "redis", "legacy-client", "--interface", "redis").strip()
    wait_for("leader-host and password", lambda: "password" in published(relation_id), 60)
    first_password, first_admin = published(relation_id)["password"], password()
    first_sentinel = password("sentinel")
    leader = next(u for u in status()["units"] if u["leader"])
    frozen_at: list[float] = []

    def fail_over() -> dict:
        frozen_at.append(time.monotonic())
        freeze_primary_until_failover()
        new = assert_converged(3)
        wait_for(
            "leader-host to follow the failover",
            lambda: published(relation_id)["leader-host"] == new["hostname"],
            30,
        )
        return new

    with RelationWriter(relation_id) as writer:
        failed_over = fail_over()
        local("run", leader["name"], "switchover")
        wait_for(
            "Sentinel to name another primary",
            lambda: monitored(failed_over)[0]["ip"] != failed_over["hostname"],
            timeout=60,
        )
        switched = assert_converged(3)
        wait_for(
            "leader-host to follow the switchover",
            lambda: published(relation_id)["leader-host"] == switched["hostname"],
            timeout=30,
        )
        rotate_at = time.monotonic()
        local("run", leader["name"], "rotate-passwords")
        wait_for(
            "the new password in the relation",
            lambda: published(relation_id)["password"] != first_password,
            timeout=120,
        )
        local("wait", "--timeout", str(SETTLE_TIMEOUT_S))
        wait_for(
            "writes with the new password", lambda: max(writer.acknowledged.values()) > rotate_at
        )
        assert password() != first_admin
        final = fail_over()  # Sentinel still authenticates, replicas still sync
        after = time.monotonic()
        wait_for(
            "writes after the last failover", lambda: max(writer.acknowledged.values()) > after
        )
    outcome = writer.report(final)
    lost = outcome.lost
    record_figure(f"legacy client: {outcome}")
    window_s = 0.5
    unexplained = [
        i
        for i in lost
        if not any(at - window_s <= writer.acknowledged[i] <= at for at in frozen_at)
    ]
    assert unexplained == [], f"lost writes outside the replication window: {unexplained[:10]}"
    for unit in status()["units"]:
        for user, old in ((None, first_password), (ADMIN_USER, first_admin)):
            client = redis.Redis(unit["hostname"], 6379, username=user, password=old,
                                 socket_timeout=2)  # fmt: skip
            with pytest.raises(redis.exceptions.AuthenticationError):
                client.ping()
        sentinel = redis.Redis(unit["address"], 26379, password=first_sentinel, socket_timeout=2)
        with pytest.raises(redis.exceptions.AuthenticationError):
            sentinel.ping()
        assert sentinel_of(unit).ping()  # the new one
