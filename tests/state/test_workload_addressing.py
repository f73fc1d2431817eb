"""Units are named by stable host names, and those names map back to units."""

import pytest

from workload.addressing import Addressing
from workload.workload import generation_of, master_name

ADDRESSING = Addressing("redis-k8s")


def test_a_unit_is_named_by_its_pod_under_the_headless_service() -> None:
    assert ADDRESSING.host_of("redis-k8s/12") == "redis-k8s-12.redis-k8s-endpoints"


@pytest.mark.parametrize("unit", ["redis-k8s/0", "redis-k8s/7", "redis-k8s/123"])
def test_host_names_map_back_to_their_unit(unit: str) -> None:
    host = ADDRESSING.host_of(unit)
    assert ADDRESSING.unit_of(host) == unit
    assert ADDRESSING.unit_of(f"{host}.model.svc.cluster.local") == unit


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.255.255.254",
        "10.1.2.3",
        "other-0.other-endpoints",
        "redis-k8s-x.redis-k8s-endpoints",
        "redis-k8s-1.elsewhere",
        "redis-k8s",
    ],
)
def test_other_hosts_are_no_unit(host: str | None) -> None:
    assert ADDRESSING.unit_of(host) is None


def test_a_unit_of_another_application_has_no_host_here() -> None:
    with pytest.raises(ValueError, match="not a unit of redis-k8s"):
        ADDRESSING.host_of("other/0")


def test_sentinel_master_names_carry_the_generation() -> None:
    assert master_name("redis-k8s", 3) == "redis-k8s-g3"
    assert generation_of("redis-k8s", "redis-k8s-g3") == 3
    assert generation_of("redis-k8s", "other-g3") is None
    assert generation_of("redis-k8s", "primary") is None
