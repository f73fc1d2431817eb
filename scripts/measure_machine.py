"""Figures about the state machines, printed on demand (not a test: timings are noisy).

Usage: uv run --frozen python scripts/measure_machine.py [HISTORIES]

Prints the size of each machine, then runs random cluster histories on the
cluster model of tests/state (faults included, healed at the end) and prints
the cost of a hook's machine work and the largest serialised journals seen.
"""

import pathlib
import random
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from machine.cluster import CLUSTER_MACHINE  # noqa: E402
from machine.types import Event  # noqa: E402
from machine.unit import UNIT_MACHINE  # noqa: E402
from tests.state.cluster_model import World  # noqa: E402


def machine_sizes() -> None:
    """Print what each machine is made of."""
    print(f"inputs (Juju/Pebble events and actions): {len(Event)}")
    for engine in (UNIT_MACHINE, CLUSTER_MACHINE):
        moves = sum(1 for r in engine.rules if r.noop is None)
        noops = sum(1 for r in engine.rules if r.noop is not None)
        pairs = len(engine.states) * len(engine.triggers)
        print(
            f"{engine.name} machine: {len(engine.states)} states, {len(engine.triggers)} triggers,"
            f" {moves} transition rows, {noops} explicit no-op rows,"
            f" {pairs} (state, trigger) pairs all handled"
        )


def random_history(rng: random.Random, largest: dict[str, int]) -> tuple[int, float]:
    """Run one random history with faults; return the hooks run and the seconds taken."""
    world = World(persistent=rng.random() < 0.7)
    for _ in range(rng.randint(1, 7)):
        world.add_unit()
    started = time.perf_counter()
    for _ in range(60):
        action = rng.random()
        pods = [n for n, p in world.pods.items() if p.alive and p.queue]
        if action < 0.55 and pods:
            world.deliver(rng.choice(pods))
        elif action < 0.65:
            world.write()
        elif action < 0.70:
            world.pods[rng.choice(world.members)].redis.frozen ^= True
        elif action < 0.75:
            name = rng.choice(world.members)
            if world.pods[name].alive:
                world.delete_pod(name)
            else:
                world.restart_pod(name)
        elif action < 0.80:
            world.sentinel_failover()
        elif action < 0.85:
            world.update_status_everywhere()
        elif action < 0.88 and len(world.members) < 7:
            world.add_unit()
        largest["app"] = max(largest["app"], len(world.app_data))
        for pod in world.pods.values():
            largest["unit"] = max(largest["unit"], len(pod.unit_data))
    for name in world.members:
        world.pods[name].redis.frozen = False
        if not world.pods[name].alive:
            world.restart_pod(name)
    world.settle()
    return world.hooks_run, time.perf_counter() - started


def main() -> None:
    """Print the figures."""
    histories = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    machine_sizes()
    rng = random.Random(2026)
    largest = {"app": 0, "unit": 0}
    per_hook = []
    hooks_total = 0
    for _ in range(histories):
        hooks, seconds = random_history(rng, largest)
        hooks_total += hooks
        if hooks:
            per_hook.append(seconds / hooks * 1e6)
    print(f"random histories: {histories}, hooks run: {hooks_total}")
    print(
        "machine work per hook (unit step(s), leader's cluster step, journal load/dump), us:"
        f" median {statistics.median(per_hook):.0f}, max {max(per_hook):.0f}"
    )
    print(f"largest journal seen: app databag {largest['app']} B, unit {largest['unit']} B")


if __name__ == "__main__":
    main()
