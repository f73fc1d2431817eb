#!/usr/bin/env python3
"""Figures of the local cluster, on demand (root; not a test): bootstrap and hook costs.

    uv run --frozen python scripts/measure_local.py [TRIALS]

For each trial: `redis-k8s-local up` of 3 units, timed until settled, with the
number of hook dispatches it took; then, in the steady cluster, update-status on
every unit a few times, with each dispatch's wall time and peak memory (the
dispatch process's max RSS). In the same run, as a yardstick (absolute times
drift from day to day on these machines, ratios hold): a fresh process that only
imports ops 3.9.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = str(REPO / ".venv" / "bin" / "redis-k8s-local")
PYTHON = str(REPO / ".venv" / "bin" / "python")
sys.path.insert(0, str(REPO / "local"))

from redis_k8s_local import cli, daemon  # noqa: E402


def run(*args: str) -> None:
    """Run a redis-k8s-local command; raise if it fails."""
    subprocess.run([COMMAND, *args], check=True, capture_output=True, text=True, timeout=600)


def fresh_process(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and max RSS (KiB) of one process."""
    started = time.monotonic()
    process = subprocess.Popen(argv)
    _, _, usage = os.wait4(process.pid, 0)
    return time.monotonic() - started, usage.ru_maxrss


def main() -> None:
    """Measure and print."""
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    state = cli.state_dir()
    bootstrap_s, dispatches, status_s, status_kib = [], [], [], []
    for trial in range(trials):
        run("down")
        started = time.monotonic()
        run("up", "--units", "3", "--timeout", "300")
        bootstrap_s.append(time.monotonic() - started)
        dispatches.append(daemon.request(state, "status")["hooks"]["dispatched"])
        for _ in range(3):
            before = len(daemon.request(state, "history"))
            daemon.request(state, "update-status")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                history = daemon.request(state, "history")
                if len(history) >= before + 3 and daemon.request(state, "status")["settled"]:
                    break
                time.sleep(0.2)
            for record in history[before:]:
                if record["hook"] == "update-status":
                    status_s.append(record["seconds"])
                    status_kib.append(record["max_rss_kib"])
        print(
            f"trial {trial + 1}: up to settled {bootstrap_s[-1]:.1f} s, "
            f"{dispatches[-1]} dispatches",
            flush=True,
        )
    run("down")
    ops_only = [fresh_process([PYTHON, "-c", "import ops"]) for _ in range(9)]
    yard_s = statistics.median(t for t, _ in ops_only)
    yard_kib = statistics.median(k for _, k in ops_only)

    def spread(values: list[float], fmt: str) -> str:
        return "min {} / median {} / max {}".format(
            *(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
        )

    print(f"3 units, up to settled (s): {spread(bootstrap_s, '.1f')} over {trials} trials")
    print(f"hook dispatches to settle: {spread(dispatches, 'd')}")
    print(
        f"update-status dispatch in a steady cluster (s): {spread(status_s, '.3f')}"
        f" over {len(status_s)} dispatches"
    )
    print(
        f"update-status dispatch peak memory (MiB): "
        f"{spread([k / 1024 for k in status_kib], '.1f')}"
    )
    print(
        f"yardstick, fresh process importing only ops (median of 9): {yard_s:.3f} s, "
        f"{yard_kib / 1024:.1f} MiB"
    )
    print(
        f"ratio update-status / yardstick: time {statistics.median(status_s) / yard_s:.2f}x, "
        f"memory {statistics.median(status_kib) / yard_kib:.2f}x"
    )


if __name__ == "__main__":
    main()
