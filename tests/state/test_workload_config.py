"""The charm config model and the rendered redis.conf / sentinel.conf, without processes.

tests/integration/test_rendered_config.py loads the same text into real
redis-server and redis-sentinel.
"""

from typing import Any

import ops
import pytest
from ops import testing
from pydantic import ValidationError

from workload.config import (
    FENCE_PRIMARY,
    SENTINEL_CLIENT_RULES,
    CharmConfig,
    acl_rule,
    password_hash,
    read_sentinel_auth,
    render_acl_file,
    render_redis_conf,
    render_redis_secrets,
    render_sentinel_conf,
    render_sentinel_secrets,
    rewrite_sentinel_auth,
    rule_hashes,
    sentinel_client_rule,
    sentinel_file_text,
    sentinel_user_changes,
)

ADMIN_PASSWORD = "admin-Pa55word!"
REPLICATION_PASSWORD = "repl Pa55 word"
SENTINEL_PASSWORD = "sentinel-Pa55word"
PASSWORDS = (ADMIN_PASSWORD, REPLICATION_PASSWORD, SENTINEL_PASSWORD)


def redis_conf(config: CharmConfig | None = None, **kwargs) -> str:
    args: dict[str, Any] = {"hostname": "redis-k8s-0.redis-k8s-endpoints"}
    args["data_dir"] = "/var/lib/redis"
    args["secrets_path"] = "/var/lib/redis/secrets.conf"
    args["aclfile"] = "/var/lib/redis/users.acl"
    return render_redis_conf(config or CharmConfig(), **(args | kwargs))


def sentinel_conf(config: CharmConfig | None = None, **kwargs) -> str:
    args: dict[str, Any] = {"hostname": "redis-k8s-1.redis-k8s-endpoints"}
    args["data_dir"] = "/var/lib/redis"
    args |= {"primary_host": "redis-k8s-0.redis-k8s-endpoints", "primary_port": 6379}
    args["quorum"] = 2
    return render_sentinel_conf(config or CharmConfig(), **(args | kwargs))


def directives(text: str) -> list[str]:
    return text.splitlines()


# The model


def test_defaults():
    config = CharmConfig()
    assert config.sentinel_down_after_ms == 3000
    assert config.sentinel_failover_timeout_ms == 30_000
    assert config.min_replicas_to_write == 1
    assert config.min_replicas_max_lag_s == 10
    assert config.persistence == "aof"
    assert config.maxmemory == "0"
    assert config.maxmemory_policy == "noeviction"


def test_is_frozen():
    with pytest.raises(ValidationError):
        CharmConfig().persistence = "none"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sentinel_down_after_ms", 499),
        ("sentinel_down_after_ms", 600_001),
        ("sentinel_down_after_ms", "soon"),
        ("sentinel_failover_timeout_ms", 999),
        ("min_replicas_to_write", -1),
        ("min_replicas_to_write", 7),
        ("min_replicas_max_lag_s", 0),
        ("min_replicas_max_lag_s", 3601),
        ("persistence", "always"),
        ("persistence", "AOF"),
        ("maxmemory", "lots"),
        ("maxmemory", "-1"),
        ("maxmemory", "512 mb"),
        ("maxmemory", "1tb"),
        ("maxmemory", "0512mb"),
        ("maxmemory", ""),
        ("maxmemory_policy", "lru"),
        ("maxmemory_policy", "allkeys_lru"),
    ],
)
def test_bad_value_names_the_juju_option(option, value):
    with pytest.raises(ValidationError) as caught:
        CharmConfig(**{option: value})
    (error,) = caught.value.errors()
    assert error["loc"] == (option.replace("_", "-"),)
    assert option.replace("_", "-") in str(caught.value)


def test_unknown_option_is_refused():
    with pytest.raises(ValidationError, match="bogus-option"):
        CharmConfig(bogus_option=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("size", "in_bytes"),
    [("0", 0), ("1000", 1000), ("1k", 1000), ("1kb", 1024), ("512mb", 512 * 1024**2)]
    + [("64MB", 64 * 1024**2), ("2g", 2 * 1000**3), ("2gb", 2 * 1024**3)],
)
def test_maxmemory_in_bytes_as_redis_reads_it(size, in_bytes):
    assert CharmConfig(maxmemory=size).maxmemory_bytes == in_bytes


class ConfiguredCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on.config_changed, self._on_config_changed)

    def _on_config_changed(self, _: ops.ConfigChangedEvent):
        self.loaded = self.load_config(CharmConfig)


JUJU_OPTIONS = {
    "sentinel-down-after-ms": ("int", 1500),
    "sentinel-failover-timeout-ms": ("int", 9000),
    "min-replicas-to-write": ("int", 0),
    "min-replicas-max-lag-s": ("int", 5),
    "persistence": ("string", "none"),
    "maxmemory": ("string", "64mb"),
    "maxmemory-policy": ("string", "allkeys-lru"),
}


def test_ops_load_config_passes_every_juju_option():
    options = {name: {"type": kind} for name, (kind, _) in JUJU_OPTIONS.items()}
    ctx = testing.Context(ConfiguredCharm, meta={"name": "c"}, config={"options": options})
    values = {name: value for name, (_, value) in JUJU_OPTIONS.items()}
    with ctx(ctx.on.config_changed(), testing.State(config=values)) as manager:
        manager.run()
        loaded = manager.charm.loaded
    assert loaded == CharmConfig(
        sentinel_down_after_ms=1500,
        sentinel_failover_timeout_ms=9000,
        min_replicas_to_write=0,
        min_replicas_max_lag_s=5,
        persistence="none",
        maxmemory="64mb",
        maxmemory_policy="allkeys-lru",
    )


# redis.conf


def test_redis_conf_defaults():
    lines = directives(redis_conf())
    assert lines[:5] == ["bind 0.0.0.0", "port 6379", "protected-mode no"] + [
        "daemonize no",
        'logfile ""',
    ]
    for expected in [
        'dir "/var/lib/redis"',
        "replica-announce-ip redis-k8s-0.redis-k8s-endpoints",
        "replica-announce-port 6379",
        "replica-read-only yes",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "min-replicas-to-write 1",
        "min-replicas-max-lag 10",
        "maxmemory 0",
        "maxmemory-policy noeviction",
        'aclfile "/var/lib/redis/users.acl"',
    ]:
        assert expected in lines
    assert not [line for line in lines if line.startswith("replicaof")]
    assert lines[-1] == 'include "/var/lib/redis/secrets.conf"'


@pytest.mark.parametrize(
    ("persistence", "appendonly", "save"),
    [
        ("aof", "yes", '""'),
        ("rdb", "no", '"3600 1 300 100 60 10000"'),
        ("aof+rdb", "yes", '"3600 1 300 100 60 10000"'),
        ("none", "no", '""'),
    ],
)
def test_redis_conf_persistence(persistence, appendonly, save):
    lines = directives(redis_conf(CharmConfig(persistence=persistence)))
    assert f"appendonly {appendonly}" in lines
    assert f"save {save}" in lines


def test_redis_conf_memory_and_write_safety_options():
    config = CharmConfig(
        maxmemory="64mb",
        maxmemory_policy="allkeys-lru",
        min_replicas_to_write=2,
        min_replicas_max_lag_s=30,
    )
    lines = directives(redis_conf(config))
    assert "maxmemory 67108864" in lines
    assert "maxmemory-policy allkeys-lru" in lines
    assert "min-replicas-to-write 2" in lines
    assert "min-replicas-max-lag 30" in lines


def test_redis_conf_replica_and_address():
    text = redis_conf(bind="127.0.0.3", port=6380, replica_of=("redis-k8s-0.x", 6379))
    lines = directives(text)
    assert "bind 127.0.0.3" in lines
    assert "port 6380" in lines
    assert "replica-announce-port 6380" in lines
    assert "replicaof redis-k8s-0.x 6379" in lines


def test_fenced_redis_replicates_from_nowhere():
    host, port = FENCE_PRIMARY
    assert f"replicaof {host} {port}" in directives(redis_conf(fenced=True))


def test_fenced_redis_cannot_also_be_a_replica():
    with pytest.raises(ValueError, match="fenced"):
        redis_conf(fenced=True, replica_of=("redis-k8s-0", 6379))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hostname": "evil\nreplicaof attacker 6379"},
        {"hostname": "two words"},
        {"hostname": ""},
        {"bind": "0.0.0.0 ::"},
        {"port": 0},
        {"port": 65536},
        {"replica_of": ("host\nsave 1 1", 6379)},
    ],
)
def test_redis_conf_refuses_what_would_break_the_file(kwargs):
    with pytest.raises(ValueError):
        redis_conf(**kwargs)


def test_paths_are_quoted():
    text = redis_conf(data_dir='/data/my "dir"', secrets_path="/s p/x\n")
    assert 'dir "/data/my \\"dir\\""' in directives(text)
    assert directives(text)[-1] == 'include "/s p/x\\x0a"'


# Secrets


def test_redis_secrets_hold_how_a_replica_authenticates_only():
    lines = directives(render_redis_secrets(REPLICATION_PASSWORD))
    assert lines == ["masteruser replication", f'masterauth "{REPLICATION_PASSWORD}"']


def test_a_password_cannot_inject_directives():
    text = render_redis_secrets('x"\nrequirepass ""')
    assert len(directives(text)) == 2
    assert 'masterauth "x\\"\\x0arequirepass \\"\\""' in directives(text)


# ACL file


def test_acl_file_holds_hashes_only_and_every_accepted_password():
    users = {
        "charm-admin": acl_rule([ADMIN_PASSWORD], "~* &* +@all"),
        "relation-7": acl_rule(["new-pw", "old-pw", "new-pw"], "resetchannels ~app:* -@all +get"),
    }
    text = render_acl_file(users)
    assert text.splitlines() == [
        "user default off resetpass -@all",  # never left open when not given
        f"user charm-admin on #{password_hash(ADMIN_PASSWORD)} ~* &* +@all",
        f"user relation-7 on #{password_hash('new-pw')} #{password_hash('old-pw')}"
        " resetchannels ~app:* -@all +get",
    ]
    assert ADMIN_PASSWORD not in text


@pytest.mark.parametrize("name", ["Admin", "x y", "", "a" * 70, "on #"])
def test_acl_file_refuses_odd_user_names(name):
    with pytest.raises(ValueError, match="not an ACL user name"):
        render_acl_file({name: acl_rule(["pw"], "+@all")})


def test_an_acl_user_needs_a_password():
    with pytest.raises(ValueError, match="at least one password"):
        acl_rule([], "+@all")


def test_sentinel_secrets_with_an_acl_user():
    text = render_sentinel_secrets(
        redis_password="pw", sentinel_password="spw", redis_user="sentinel"
    )
    assert directives(text)[2:] == [
        "sentinel auth-user primary sentinel",
        'sentinel auth-pass primary "pw"',
    ]


def test_sentinel_secrets():
    text = render_sentinel_secrets(
        redis_password=ADMIN_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    assert directives(text) == [
        f"user default on #{password_hash(SENTINEL_PASSWORD)} ~* &* +@all",
        f'sentinel sentinel-pass "{SENTINEL_PASSWORD}"',
        f'sentinel auth-pass primary "{ADMIN_PASSWORD}"',
    ]
    assert "requirepass" not in text  # sentinel would keep it, stale, after a rotation


def test_sentinel_secrets_need_a_default_user():
    users = {"relation-3": acl_rule(["pw"], SENTINEL_CLIENT_RULES)}
    with pytest.raises(ValueError, match="must define default"):
        render_sentinel_secrets(redis_password="a", sentinel_password="b", users=users)


def test_a_client_user_on_sentinel_has_its_redis_passwords_and_discovery_only():
    redis_rule = acl_rule(["one", "two"], "resetkeys ~app:* -@all +@read")
    rule = sentinel_client_rule(redis_rule)
    assert rule_hashes(rule) == {password_hash("one"), password_hash("two")}
    assert rule.startswith("on #") and rule.endswith(SENTINEL_CLIENT_RULES)
    assert "~" not in rule and "+@" not in rule


SENTINEL_FILE_AS_REWRITTEN = """port 26379
requirepass "old-own"
user default on sanitize-payload #aaaa #bbbb ~* &* +@all
user relation-4 on #cccc resetchannels &* -@all +ping
sentinel sentinel-pass "old-own"
sentinel monitor redis-k8s-g2 redis-k8s-0.x 6379 2
sentinel auth-user redis-k8s-g2 sentinel
sentinel auth-pass redis-k8s-g2 old-redis
sentinel auth-pass other-g1 theirs
sentinel known-sentinel redis-k8s-g2 redis-k8s-1.x 26379 abc
"""


def test_reading_sentinels_file_finds_its_users_and_passwords():
    auth = read_sentinel_auth(SENTINEL_FILE_AS_REWRITTEN)
    assert auth.users == {"default": {"aaaa", "bbbb"}, "relation-4": {"cccc"}}
    assert auth.sentinel_pass == "old-own"
    assert auth.auth_pass == {"redis-k8s-g2": "old-redis", "other-g1": "theirs"}
    assert auth.requirepass
    assert "old" not in repr(auth)


def test_user_changes_compare_password_hashes_and_spare_default():
    auth = read_sentinel_auth(SENTINEL_FILE_AS_REWRITTEN)
    same_default = "on #bbbb #aaaa ~* &* +@all"
    to_set, to_delete = sentinel_user_changes(auth, {"default": same_default})
    assert (to_set, to_delete) == ({}, ["relation-4"])
    new_default = acl_rule(["new"], "~* &* +@all")
    to_set, to_delete = sentinel_user_changes(auth, {"default": new_default}, only=["default"])
    assert (to_set, to_delete) == ({"default": new_default}, [])  # relation-4 left alone
    to_set, _ = sentinel_user_changes(auth, {"default": same_default, "relation-9": new_default})
    assert to_set == {"relation-9": new_default}


def test_a_stopped_sentinels_file_rewritten_with_new_passwords_keeps_everything_else():
    users = {"default": acl_rule(["new-own"], "~* &* +@all")}
    text = rewrite_sentinel_auth(
        SENTINEL_FILE_AS_REWRITTEN,
        users=users,
        sentinel_password="new-own",
        auth_passwords={"redis-k8s-g2": "new-redis"},
    )
    auth = read_sentinel_auth(text)
    assert auth.users == {"default": {password_hash("new-own")}}
    assert auth.sentinel_pass == "new-own" and not auth.requirepass
    assert auth.auth_pass == {"redis-k8s-g2": "new-redis", "other-g1": "theirs"}
    assert "old-own" not in text and "old-redis" not in text
    kept = [line for line in SENTINEL_FILE_AS_REWRITTEN.splitlines() if "pass" not in line]
    kept = [line for line in kept if not line.startswith("user ")]
    assert [line for line in text.splitlines() if line in kept] == kept
    with pytest.raises(ValueError, match="unquoted"):
        rewrite_sentinel_auth(text, users=users, sentinel_password="a b", auth_passwords={})


@pytest.mark.parametrize("fenced", [True, False])
def test_no_password_in_rendered_main_files(fenced):
    configs = [CharmConfig(), CharmConfig(persistence="none", maxmemory="1gb")]
    for config in configs:
        texts = [redis_conf(config, fenced=fenced), sentinel_conf(config)]
        for text in texts:
            assert not [word for word in PASSWORDS if word in text]
            assert "pass" not in text
            assert "masterauth" not in text


@pytest.mark.parametrize("password", ["two words", 'a"quote', "it's", "back\\slash", "", "é"])
@pytest.mark.parametrize("which", ["redis_password", "sentinel_password"])
def test_sentinel_secrets_refuse_what_sentinel_would_corrupt(which, password):
    passwords = {"redis_password": "ok", "sentinel_password": "ok"} | {which: password}
    with pytest.raises(ValueError, match="unquoted"):
        render_sentinel_secrets(**passwords)


def test_sentinel_secrets_take_any_other_printable_password():
    printable = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"'\\")
    text = render_sentinel_secrets(redis_password=printable, sentinel_password=printable)
    assert f'sentinel auth-pass primary "{printable}"' in directives(text)


def test_sentinel_file_is_the_conf_then_its_secrets():
    conf = sentinel_conf()
    secrets = render_sentinel_secrets(redis_password="a", sentinel_password="b")
    assert sentinel_file_text(conf, secrets) == conf + secrets


# sentinel.conf


def test_sentinel_conf_defaults():
    lines = directives(sentinel_conf())
    assert lines[:2] == ["bind 0.0.0.0", "port 26379"]
    for expected in [
        'dir "/var/lib/redis"',
        "sentinel announce-ip redis-k8s-1.redis-k8s-endpoints",
        "sentinel announce-hostnames yes",
        "sentinel resolve-hostnames yes",
        "sentinel monitor primary redis-k8s-0.redis-k8s-endpoints 6379 2",
        "sentinel down-after-milliseconds primary 3000",
        "sentinel failover-timeout primary 30000",
        "sentinel parallel-syncs primary 1",
    ]:
        assert expected in lines
    assert not [line for line in lines if "client-reconfig-script" in line]


def test_sentinel_resolves_hostnames_before_it_monitors_one():
    lines = directives(sentinel_conf())
    monitor = next(i for i, line in enumerate(lines) if line.startswith("sentinel monitor"))
    assert lines.index("sentinel resolve-hostnames yes") < monitor
    assert lines.index("sentinel announce-hostnames yes") < monitor


def test_sentinel_conf_options():
    config = CharmConfig(sentinel_down_after_ms=1500, sentinel_failover_timeout_ms=9000)
    text = sentinel_conf(
        config,
        bind="127.0.0.2",
        port=26380,
        master_name="cache",
        quorum=3,
        client_reconfig_script="/usr/local/bin/on-failover",
    )
    lines = directives(text)
    assert lines[:3] == ["bind 127.0.0.2", "bind-source-addr 127.0.0.2", "port 26380"]
    assert "sentinel monitor cache redis-k8s-0.redis-k8s-endpoints 6379 3" in lines
    assert "sentinel down-after-milliseconds cache 1500" in lines
    assert "sentinel failover-timeout cache 9000" in lines
    assert "sentinel parallel-syncs cache 1" in lines
    assert 'sentinel client-reconfig-script cache "/usr/local/bin/on-failover"' in lines


@pytest.mark.parametrize(
    "kwargs",
    [{"quorum": 0}, {"master_name": "my primary"}, {"primary_host": "a\nb"}]
    + [{"primary_port": 70000}, {"hostname": "x y"}],
)
def test_sentinel_conf_refuses_what_would_break_the_file(kwargs):
    with pytest.raises(ValueError):
        sentinel_conf(**kwargs)
