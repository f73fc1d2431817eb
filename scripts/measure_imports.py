"""What the imports of a hook cost, printed on demand (not a test: timings are noisy).

Usage: uv run --frozen python scripts/measure_imports.py [RUNS]

Each hook is a fresh Python process, so every hook pays its imports. For each
case this starts RUNS fresh interpreters (default 9), each importing the case's
modules once, and prints the median wall time of the import and the process'
peak RSS, and the ratio of the time to the yardstick of DESIGN.md: a process that
only imports ops 3.9, measured in the same run.

Cases: the yardstick; ``charm`` as every hook imports it (``dpcharmlibs`` is not
imported: ``relations`` imports it lazily); ``charm`` plus what a hook that
answers a ``valkey_client`` / ``redis_client`` requirer adds (the library, which
pulls in ``cryptography``); and the library alone on top of ops.
"""

import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

CASES = {
    "ops (yardstick)": "import ops",
    "charm (every hook)": "import charm",
    "charm + dpcharmlibs (client hooks)": "import charm; import dpcharmlibs.interfaces",
    "ops + dpcharmlibs": "import ops; import dpcharmlibs.interfaces",
    "ops + cryptography.fernet": "import ops; import cryptography.fernet",
}

PROBE = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
sys.path[:0] = {paths!r}
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(statement: str, runs: int) -> tuple[float, float]:
    """Median import seconds and median peak RSS (MiB) over ``runs`` fresh processes."""
    paths = [str(ROOT / "src"), str(ROOT / "lib")]
    code = PROBE.format(paths=paths, statement=statement)
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
        times.append(float(out[0]))
        rss.append(int(out[1]) / 1024)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    """Print one line per case."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    results = {name: measure(statement, runs) for name, statement in CASES.items()}
    yardstick = results["ops (yardstick)"][0]
    print(f"median of {runs} fresh processes ({sys.version.split()[0]})")
    for name, (seconds, mib) in results.items():
        print(f"{name:38s} {seconds:6.3f} s  {mib:5.1f} MiB  {seconds / yardstick:4.2f}x ops")


if __name__ == "__main__":
    main()
