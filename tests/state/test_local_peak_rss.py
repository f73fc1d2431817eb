"""The peak memory of a started Python process (``peakrss``): its own, not its parent's.

``wait4``'s ``ru_maxrss`` of a child includes its parent's RSS before ``exec``, so
this module's process first makes itself 200 MiB big: a measure that took the
parent's figure reports a tiny child as at least that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_k8s_local import peakrss
from redis_k8s_local.charmdir import dispatch_script

MIB = 1024  # KiB
BALLAST_MIB = 200
CHILD_MIB = 50
ALLOCATE = f"data = b'x' * ({CHILD_MIB} << 20)"


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1])


@pytest.fixture(scope="module")
def big_parent():
    """This process holds 200 MiB (written, so resident) while the test runs children."""
    ballast = b"x" * (BALLAST_MIB << 20)
    assert vm_kib("VmRSS") >= BALLAST_MIB * MIB
    yield
    del ballast


def test_wait4_counts_the_parents_rss(big_parent):
    """Why peakrss exists: ``ru_maxrss`` of ``python -c pass`` is this process's size."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    assert usage.ru_maxrss >= BALLAST_MIB * MIB


def test_a_child_allocating_50_mib_reports_at_least_that(big_parent):
    exit_code, _, kib = peakrss.run([sys.executable, "-c", ALLOCATE])
    assert exit_code == 0
    assert CHILD_MIB * MIB <= kib < BALLAST_MIB * MIB


def test_a_tiny_child_reports_far_less_than_its_parent(big_parent):
    exit_code, _, kib = peakrss.run([sys.executable, "-c", "pass"])
    assert exit_code == 0
    assert 0 < kib < 40 * MIB


def test_a_grandchild_does_not_overwrite_the_figure(big_parent):
    start_big_child = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {ALLOCATE!r}], check=True)"
    )
    exit_code, _, kib = peakrss.run([sys.executable, "-c", start_big_child])
    assert exit_code == 0
    assert 0 < kib < CHILD_MIB * MIB


def test_a_process_that_skips_its_shutdown_reports_nothing(big_parent):
    assert peakrss.run([sys.executable, "-c", "import os; os._exit(3)"])[::2] == (3, 0)


def test_a_charm_run_by_the_agents_dispatch_reports_its_peak(big_parent, tmp_path: Path):
    """``dispatch`` keeps the agent's PYTHONPATH after ``lib:src``: the charm reports too."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "charm.py").write_text(f"import sys\n{ALLOCATE}\nsys.exit(1)\n")
    (tmp_path / "dispatch").write_text(dispatch_script(sys.executable))
    (tmp_path / "dispatch").chmod(0o755)
    probe = peakrss.install(tmp_path / "peak-rss")
    report = probe / "one-hook.kib"
    env = peakrss.environ(probe, report, {"PATH": os.environ["PATH"]})

    done = subprocess.run([str(tmp_path / "dispatch")], cwd=tmp_path, env=env)

    assert done.returncode == 1  # a failed hook is measured too
    assert CHILD_MIB * MIB <= peakrss.read(report) < BALLAST_MIB * MIB
    assert not report.exists()
