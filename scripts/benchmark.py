#!/usr/bin/env python3
"""HA figures, on demand (root; not a test): failover, switchover, bootstrap, hook cost.

    uv run --frozen python scripts/benchmark.py [--trials N]

Prints min / median / max over N trials (default 10) of:

- the physical floor: bare redis-server + redis-sentinel processes (3 of each,
  rendered from the charm's own config code, same down-after), no charm: the
  primary is frozen, time until a write is acknowledged by the primary Sentinel
  names;
- the same unplanned failover on `redis-k8s-local` (3 units, the charm running):
  freeze to a write acknowledged by the new primary; and the time from
  Sentinel's switch to the charm's record of it (the leader's cluster journal
  in the peer app databag), from two moments: a sentinel first naming the new
  primary to clients, and the first ``+switch-master`` a sentinel announces;
- the planned switchover (the action, no target): the longest write pause a
  continuous writer sees;
- `up` of 3 units to settled, with the hook dispatches it took;
- one update-status dispatch in a steady cluster: wall time and peak memory,
  beside a yardstick measured in the same run (a fresh process importing only
  ops), because absolute times drift on these noisy machines and ratios hold.
  Peak memory is each process's own ``VmHWM``, reported at its exit
  (``redis_k8s_local.peakrss``; not ``wait4``'s ``ru_maxrss``, which includes the
  parent's RSS before ``exec``).

It leaves no cluster behind (`redis-k8s-local down` at the end).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in ("src", "lib", "local", "."):
    sys.path.insert(0, str(REPO / path))

import redis  # noqa: E402
from redis_k8s_local import cli, daemon, peakrss  # noqa: E402
from redis_k8s_local.store import Store  # noqa: E402

from tests.integration import cluster_support as support  # noqa: E402
from tests.integration.test_admin import MASTER_NAME, Cluster  # noqa: E402
from workload.admin import WorkloadUnreachable  # noqa: E402
from workload.config import ADMIN_USER, CharmConfig  # noqa: E402

DOWN_AFTER_MS = support.DOWN_AFTER_MS
PYTHON = str(REPO / ".venv" / "bin" / "python")
POLL_S = 0.01


def spread(values: list[float], unit: str, fmt: str = ".2f") -> str:
    """``min / median / max`` of ``values``."""
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"min {low:{fmt}} / median {middle:{fmt}} / max {high:{fmt}} {unit} (n={len(values)})"


def until(what: str, check: Callable[[], object], timeout: float = 120) -> float:
    """Poll ``check`` (errors count as not yet) until truthy; the monotonic time it became so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (
            redis.RedisError,
            WorkloadUnreachable,
            OSError,
            KeyError,
            ValueError,
            AssertionError,
        ):
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not within {timeout} s")


# ------------------------------------------------------------------ physical floor


def floor_failovers(trials: int) -> list[float]:
    """Bare processes: freeze the primary, time to a write acknowledged by the new one."""
    config = CharmConfig(sentinel_down_after_ms=DOWN_AFTER_MS)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), config)
        try:
            cluster.start_replicated()
            cluster.start_sentinels()
            for _ in range(trials):
                primary = cluster.unit(cluster.units[0].sentinel().primary_address(MASTER_NAME)[0])
                observer = next(u for u in cluster.units if u is not primary)
                cluster.signal(primary, "redis", signal.SIGSTOP)
                frozen_at = time.monotonic()

                def new_primary_writes(observer=observer, primary=primary) -> bool:
                    host, _ = observer.sentinel(timeout=0.5).primary_address(MASTER_NAME)
                    if host == primary.address:
                        return False
                    return bool(cluster.unit(host).client(timeout=0.5).set("floor", 1))

                times.append(until("a new primary", new_primary_writes) - frozen_at)
                cluster.signal(primary, "redis", signal.SIGCONT)
                until(
                    "the old primary to follow the new one",
                    lambda p=primary: p.admin().replication().master_link_up,
                )
                until("the sentinels to see two replicas again", lambda: _floor_settled(cluster))
                print(f"  floor failover {len(times)}: {times[-1]:.2f} s", flush=True)
        finally:
            cluster.kill_all()
    return times


def _floor_settled(cluster: Cluster) -> bool:
    for unit in cluster.units:
        watched = unit.sentinel(timeout=0.5).monitored()[MASTER_NAME]
        if watched.replicas != 2 or "s_down" in watched.flags or "o_down" in watched.flags:
            return False
    return True


# ------------------------------------------------------------------ the charm


def recorded_primary() -> str | None:
    """The primary in the leader's cluster journal (the peer app databag), as it is now."""
    doc = Store(cli.state_dir()).read()
    for relation in doc["relations"].values():
        text = relation.get("app_data", {}).get("cluster-journal")
        if text:
            return json.loads(text)["current"].get("primary")
    return None


class FirstTime:
    """``until(check)`` in a background thread: the moment ``check`` first held."""

    def __init__(self, what: str, check: Callable[[], object], timeout: float = 120) -> None:
        """Start watching at once."""
        self._outcome: dict[str, float | TimeoutError] = {}
        self._thread = threading.Thread(
            target=self._watch, args=(what, check, timeout), daemon=True
        )
        self._thread.start()

    def _watch(self, what: str, check: Callable[[], object], timeout: float) -> None:
        try:
            self._outcome["at"] = until(what, check, timeout)
        except TimeoutError as error:
            self._outcome["at"] = error

    def wait(self) -> float:
        """The moment (``time.monotonic``); TimeoutError if it never came."""
        self._thread.join()
        at = self._outcome["at"]
        if isinstance(at, TimeoutError):
            raise at
        return at


def switch_announced(observers: list[dict]) -> Callable[[], bool]:
    """A check that holds once any of the ``observers``' sentinels published ``+switch-master``.

    The sentinel running the failover announces it last (after re-pointing the
    replicas); the others as soon as they hear of the promotion.
    """
    subscriptions = []
    for observer in observers:
        pubsub = support.sentinel_of(observer).pubsub()
        pubsub.subscribe("+switch-master")
        subscriptions.append(pubsub)

    def announced() -> bool:
        for pubsub in subscriptions:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S / 4)
            if message is not None and message["type"] == "message":
                return True
        return False

    return announced


def named_primary(observer: dict, name: str) -> tuple[str, int]:
    """Where ``observer``'s sentinel says the primary is (what clients ask)."""
    host, port = support.sentinel_of(observer).execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name
    )
    return host, int(port)


def charm_failovers(trials: int) -> tuple[list[float], list[float], list[float]]:
    """Freeze the primary: time to a write on the new one; Sentinel's switch to the record.

    The switch is timed twice, on every surviving unit's sentinel: from the moment
    one first names the new primary to clients (``GET-MASTER-ADDR-BY-NAME``: the
    sentinel running the failover, once the promotion is confirmed), and from the
    first ``+switch-master`` one announces (the others', as they hear of the
    promotion; the one running the failover announces it only after re-pointing
    the replicas). Every sentinel runs the script raising the charm's notice at
    the first of those moments it sees. Each moment is watched in its own thread
    from the freeze on, so one wait does not delay another's clock.
    """
    failover_s, from_naming_s, from_announce_s = [], [], []
    for _ in range(trials):
        old = support.assert_converged(3)
        observer = next(u for u in support.status()["units"] if u["name"] != old["name"])
        admin = support.password()
        name = support.monitored(observer)[0]["name"]
        others = [u for u in support.status()["units"] if u["name"] != old["name"]]
        announced = FirstTime("+switch-master", switch_announced(others))
        support.local("freeze", old["name"])
        frozen_at = time.monotonic()

        def named_elsewhere(others=others, old=old, name=name) -> bool:
            return any(named_primary(o, name)[0] != old["hostname"] for o in others)

        def new_primary_writes(observer=observer, old=old, admin=admin, name=name) -> bool:
            host, port = named_primary(observer, name)
            client = redis.Redis(
                host, port, username=ADMIN_USER, password=admin, socket_timeout=0.5
            )
            return host != old["hostname"] and bool(client.set("benchmark", 1))

        named = FirstTime("a sentinel naming another primary", named_elsewhere)
        written = FirstTime("a write on the new primary", new_primary_writes)
        recorded = FirstTime("the charm's record", lambda o=old: recorded_primary() != o["name"])
        recorded_at = recorded.wait()
        failover_s.append(written.wait() - frozen_at)
        from_naming_s.append(recorded_at - named.wait())
        from_announce_s.append(recorded_at - announced.wait())
        support.local("thaw", old["name"])
        support.local("wait", "--timeout", "240")
        print(
            f"  charm failover {len(failover_s)}: {failover_s[-1]:.2f} s; recorded"
            f" {from_naming_s[-1]:.2f} s after a sentinel named the new primary,"
            f" {from_announce_s[-1]:.2f} s after +switch-master",
            flush=True,
        )
    return failover_s, from_naming_s, from_announce_s


def switchover_pauses(trials: int) -> list[float]:
    """The switchover action (best replica) under a continuous writer: its longest pause."""
    pauses = []
    for _ in range(trials):
        old = support.assert_converged(3)
        leader = next(u for u in support.status()["units"] if u["leader"])
        with support.Writer([u["address"] for u in support.status()["units"]]) as writer:
            support.local("run", leader["name"], "switchover")
            until("Sentinel to name another primary", lambda o=old: _moved_from(o))
            done_at = time.monotonic()
            until(
                "writes after the switch",
                lambda w=writer, t=done_at: max(w.acknowledged.values()) > t,
            )
        new = support.assert_converged(3)
        report = writer.report(new)
        if report.lost:
            raise AssertionError(f"a switchover lost acknowledged writes: {report}")
        pauses.append(report.longest_pause_s)
        print(f"  switchover {len(pauses)}: {report}", flush=True)
    return pauses


def _moved_from(old: dict) -> bool:
    return support.monitored(old)[0]["ip"] != old["hostname"]


def fresh_process(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one Python process.

    The peak is the process's own ``VmHWM``, which it reports at exit (``peakrss``),
    as the agent records each dispatch's: ``wait4``'s ``ru_maxrss`` would be at
    least this script's own peak RSS, which the child inherits at ``exec``.
    """
    exit_code, seconds, kib = peakrss.run(argv)
    if exit_code != 0 or not kib:
        raise RuntimeError(f"{argv}: exit code {exit_code}, peak RSS reported: {kib} KiB")
    return seconds, kib


def update_status_costs(rounds: int) -> tuple[list[float], list[int]]:
    """update-status on every unit of the steady cluster, ``rounds`` times."""
    state = cli.state_dir()
    seconds, kib = [], []
    for _ in range(rounds):
        before = len(daemon.request(state, "history"))
        daemon.request(state, "update-status")
        until(
            "update-status everywhere",
            lambda b=before: (
                len(daemon.request(state, "history")) >= b + 3
                and daemon.request(state, "status")["settled"]
            ),
        )
        for record in daemon.request(state, "history")[before:]:
            if record["hook"] == "update-status":
                seconds.append(record["seconds"])
                kib.append(record["max_rss_kib"])
    return seconds, kib


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    trials = parser.parse_args().trials
    if missing := cli.missing_prerequisites():
        sys.exit(f"cannot run a local cluster here: {missing}")

    print(f"physical floor: bare redis + sentinel, down-after {DOWN_AFTER_MS} ms", flush=True)
    floor = floor_failovers(trials)

    print("3-unit bootstrap (redis-k8s-local up) to settled", flush=True)
    bootstrap_s, dispatches = [], []
    tools = "unknown"
    try:
        for _ in range(trials):
            support.local("down", timeout=180)
            started = time.monotonic()
            support.up(down_after_ms=DOWN_AFTER_MS)
            bootstrap_s.append(time.monotonic() - started)
            hooks = daemon.request(cli.state_dir(), "status")["hooks"]
            dispatches.append(hooks["dispatched"])
            tools = hooks["tools"]
            print(f"  up {len(bootstrap_s)}: {bootstrap_s[-1]:.1f} s", flush=True)
        status_s, status_kib = update_status_costs(max(trials // 3, 1))
        print("unplanned failover with the charm", flush=True)
        failover_s, from_naming_s, from_announce_s = charm_failovers(trials)
        print("planned switchover with the charm", flush=True)
        pauses = switchover_pauses(trials)
    finally:
        support.local("down", timeout=180)
    ops_only = [fresh_process([PYTHON, "-c", "import ops"]) for _ in range(9)]
    yard_s = statistics.median(t for t, _ in ops_only)
    yard_kib = statistics.median(k for _, k in ops_only)

    print()
    print(
        f"unplanned failover, freeze to a write on the new primary (down-after {DOWN_AFTER_MS} ms)"
    )
    print(f"  physical floor, no charm:        {spread(floor, 's')}")
    print(f"  redis-k8s on redis-k8s-local:    {spread(failover_s, 's')}")
    print("Sentinel's switch to the charm's record (leader's cluster journal, peer app data)")
    print(f"  from a sentinel naming it:       {spread(from_naming_s, 's')}")
    print(f"  from +switch-master:             {spread(from_announce_s, 's')}")
    print(f"planned switchover, write pause:   {spread(pauses, 's')}")
    print(f"3-unit up to settled:              {spread(bootstrap_s, 's', '.1f')}")
    print(f"  hook tools:                      {tools} (local/jujuc; python: the fallback)")
    settle_dispatches = spread([float(d) for d in dispatches], "dispatches", ".0f")
    print(f"  hook dispatches to settle:       {settle_dispatches}")
    print(f"update-status dispatch, steady:    {spread(status_s, 's', '.3f')}")
    print(
        "  peak memory:                     "
        + spread([k / 1024 for k in status_kib], "MiB", ".1f")
    )
    print(
        f"yardstick, a process importing ops: {yard_s:.3f} s, {yard_kib / 1024:.1f} MiB"
        " (median of 9)"
    )
    print(
        f"update-status / yardstick:         time {statistics.median(status_s) / yard_s:.1f}x,"
        f" memory {statistics.median(status_kib) / yard_kib:.2f}x"
    )


if __name__ == "__main__":
    main()
