"""The peak memory of a Python process we start, as the process itself reports it at exit.

``wait4`` / ``getrusage(RUSAGE_CHILDREN)`` cannot give it: Linux carries
``ru_maxrss`` across ``exec``. At ``exec`` the kernel keeps the high-water mark of
the address space being replaced in the process's ``maxrss`` (``exec_mmap`` in
``fs/exec.c``), and a child started by ``subprocess`` (vfork or fork) execs out of
the parent's address space. So the child's ``ru_maxrss`` is at least the parent's
own peak: a bare ``import ops`` showed 64 MiB, every hook dispatch the agent's
57.7 MiB. (``RUSAGE_SELF`` in the child is no better: same counter.) Nor can the
parent read the figure after the child exits: a zombie has no address space left,
and ``/proc/<pid>/status`` then has no ``VmHWM``; polling it while the child runs
misses the child's last moments.

``VmHWM`` in ``/proc/self/status`` is the high-water mark of the address space the
process got at its ``exec``: its own peak RSS, nobody else's. So the process
reports it: ``install`` writes a ``sitecustomize`` module, which Python imports at
start-up from ``PYTHONPATH``; when ``REDIS_K8S_LOCAL_PEAK_RSS`` names a file, it
registers an ``atexit`` hook (the first registered, so the last to run) that writes
``VmHWM`` in KiB there, and removes the variable from the environment, so that a
Python process it starts does not overwrite the figure. A process that does not
exit through the interpreter's shutdown (killed by a signal, ``os._exit``) writes
nothing: ``read`` gives 0. Processes run with ``-I`` or ``-S`` (the hook tools)
import no ``sitecustomize``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

ENV = "REDIS_K8S_LOCAL_PEAK_RSS"

SITECUSTOMIZE = f'''"""Written by redis-k8s-local (peakrss): this process's peak RSS, at exit."""

import os

_report = os.environ.pop("{ENV}", None)
if _report:
    import atexit

    def _write_peak_rss(path=_report):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    with open(path, "w") as out:
                        out.write(line.split()[1])
                    return

    atexit.register(_write_peak_rss)
'''


def install(directory: Path) -> Path:
    """Write the ``sitecustomize`` module into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return directory


def environ(directory: Path, report: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process that reports its peak RSS into ``report`` at exit.

    ``directory`` is where ``install`` wrote the module; it goes first on ``PYTHONPATH``.
    """
    paths = [str(directory), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths), ENV: str(report)}


def read(report: Path) -> int:
    """The peak RSS (KiB) a process reported into ``report`` (then removed); 0 if none."""
    try:
        text = Path(report).read_text()
    except FileNotFoundError:
        return 0
    Path(report).unlink(missing_ok=True)
    try:
        return int(text)
    except ValueError:
        return 0


def run(argv: list[str], env: Mapping[str, str] | None = None) -> tuple[int, float, int]:
    """Run the Python command ``argv`` to its end: exit code, wall seconds, peak RSS (KiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = install(Path(tmp))
        report = Path(tmp) / "peak-rss"
        full_env = environ(directory, report, os.environ if env is None else env)
        started = time.monotonic()
        exit_code = subprocess.call(argv, env=full_env)
        seconds = time.monotonic() - started
        return exit_code, seconds, read(report)
