"""The charm loads its metadata from charmcraft.yaml and handles install."""

from ops import testing

from charm import RedisK8sCharm


def test_install_loads_metadata_from_charmcraft_yaml():
    # No meta= given: ops.testing reads charmcraft.yaml from the charm root
    # (the parent of src/), as Juju would from the packed charm.
    ctx = testing.Context(RedisK8sCharm)
    state_in = testing.State.from_context(ctx)

    with ctx(ctx.on.install(), state_in) as manager:
        meta = manager.charm.meta
        manager.run()

    assert meta.name == "redis-k8s"
    assert set(meta.containers) == {"redis", "sentinel"}
    assert set(meta.peers) == {"redis-peers"}
    assert meta.peers["redis-peers"].interface_name == "redis_peers"
    assert meta.containers["redis"].mounts["data"].location == "/var/lib/redis"
    assert {c.name for c in state_in.containers} == {"redis", "sentinel"}
    assert {r.endpoint for r in state_in.relations} == {
        "redis-peers",
        "redis",
        "valkey-client",
        "redis-client",
    }
    provides = {name: ep.interface_name for name, ep in meta.provides.items()}
    assert provides == {
        "redis": "redis",
        "valkey-client": "valkey_client",
        "redis-client": "redis_client",
    }
