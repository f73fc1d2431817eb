"""``redis-k8s-local``: run redis-k8s on this machine, several units, as Juju would.

Needs root (mount and PID namespaces per pod, /etc/hosts entries for the
units' host names, iptables rules for partitions). See ``--help`` of each
command; ``up`` deploys, ``status`` shows, ``down`` removes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis_k8s_local import daemon
from redis_k8s_local.pods import Pods

REPO = Path(__file__).resolve().parents[2]
PEBBLE_VERSION = "v1.26.0"


def state_dir() -> Path:
    """Where the cluster keeps its store, pods and logs (``REDIS_K8S_LOCAL_STATE_DIR``)."""
    return Path(os.environ.get("REDIS_K8S_LOCAL_STATE_DIR", "/var/lib/redis-k8s-local"))


def built_by_setup(name: str) -> Path:
    """Where .ci/setup puts the binary ``name`` it builds (it may not be there)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "redis-k8s-ci" / "bin" / name


def pebble_binary() -> Path | None:
    """The Pebble that .ci/setup builds (or ``REDIS_K8S_LOCAL_PEBBLE``, or one on PATH)."""
    explicit = os.environ.get("REDIS_K8S_LOCAL_PEBBLE")
    if explicit:
        return Path(explicit)
    built = built_by_setup("pebble")
    if built.exists():
        return built
    found = shutil.which("pebble")
    return Path(found) if found else None


def jujuc_binary() -> Path | None:
    """The hook tools' binary .ci/setup builds from ``local/jujuc`` (or ``REDIS_K8S_LOCAL_JUJUC``).

    None: the agent installs Python scripts as hook tools instead (slower).
    """
    explicit = os.environ.get("REDIS_K8S_LOCAL_JUJUC")
    if explicit:
        return Path(explicit)
    built = built_by_setup("redis-k8s-jujuc")
    return built if built.exists() else None


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a local cluster, in words that say how to fix it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, /etc/hosts and iptables need it): run as root")
    for program in ("redis-server", "redis-sentinel", "redis-cli", "iptables", "unshare"):
        if shutil.which(program) is None:
            missing.append(f"{program}: run `bash .ci/setup` (installs the Debian packages)")
    if pebble_binary() is None:
        missing.append(f"pebble {PEBBLE_VERSION}: run `bash .ci/setup` (builds it)")
    if not (REPO / ".venv" / "bin" / "python").exists():
        missing.append("the project environment (.venv): run `bash .ci/setup`")
    return missing


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict (the value may contain ``=``)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, not {pair!r}")
        values[key] = value
    return values


def call(op: str, **args: Any) -> Any:
    """One request to the running agent; a clear message when none runs."""
    if not daemon.agent_running(state_dir()):
        raise SystemExit("no local cluster is running: `redis-k8s-local up` starts one")
    try:
        return daemon.request(state_dir(), op, **args)
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None


# ------------------------------------------------------------------ commands


def cmd_up(args: argparse.Namespace) -> int:
    missing = missing_prerequisites()
    if missing:
        print("redis-k8s-local cannot start; missing:", file=sys.stderr)
        for line in missing:
            print(f"  - {line}", file=sys.stderr)
        return 1
    state = state_dir()
    if daemon.agent_running(state):
        units = daemon.request(state, "status")["units"]
        print(f"a local cluster is already running ({len(units)} units): see `status`, or `down`")
        return 1
    state.mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    pebble = pebble_binary()
    assert pebble is not None
    jujuc = jujuc_binary()
    log = (state / "logs" / "agent.log").open("ab")
    subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            "redis_k8s_local.daemon",
            "--state-dir",
            str(state),
            "--repo",
            str(REPO),
            "--pebble",
            str(pebble),
            "--update-status-interval",
            str(args.update_status_interval),
            *(["--jujuc", str(jujuc)] if jujuc is not None else []),
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "local")},
    )
    deadline = time.monotonic() + 30
    while not daemon.agent_running(state):
        if time.monotonic() > deadline:
            print(f"the agent did not start: see {state / 'logs' / 'agent.log'}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    units = daemon.request(state, "deploy", units=args.units, config=parse_pairs(args.config))
    print(f"deploying {len(units)} units: {', '.join(units)}")
    if not wait_settled(args.timeout, progress=True):
        print_status(call("status"))
        print(f"not settled after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    status = call("status")
    print_status(status)
    print_connect(status)
    return 0


def wait_settled(timeout: float, progress: bool = False) -> bool:
    """Wait until no hook is queued or running and every unit is active or blocked."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status = call("status")
        if status["settled"]:
            return True
        if progress:
            line = "  ".join(
                f"{u['name']}: {u['workload_status']} {u['message']}".strip()
                for u in status["units"]
            )
            if line != last:
                print(f"  {line}", flush=True)
                last = line
        time.sleep(0.5)
    return False


def print_status(status: dict) -> None:
    app = status["app"]
    print(
        f"App        Status       Message\n{app['name']:<10} {app['status']:<12} {app['message']}"
    )
    print()
    header = ("Unit", "Workload", "Role", "State", "Address", "Message")
    rows = [header]
    for unit in status["units"]:
        name = unit["name"] + ("*" if unit["leader"] else "")
        rows.append(
            (
                name,
                str(unit["workload_status"]),
                unit["role"],
                unit["state"],
                unit["address"],
                unit["message"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), end=""
        )
        print(f"  {row[-1]}")


def print_connect(status: dict) -> None:
    primary = next((u for u in status["units"] if u["role"] == "master"), None)
    if primary is None:
        return
    print()
    print("Connect (the admin password is in the application's Juju secret):")
    print(f'  REDISCLI_AUTH="$(redis-k8s-local password)" redis-cli -h {primary["hostname"]}')
    print("  Sentinel: redis-cli -h <any unit's host name> -p 26379 SENTINEL MASTERS")


def cmd_status(args: argparse.Namespace) -> int:
    status = call("status")
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print_status(status)
    return 0


def cmd_add_unit(args: argparse.Namespace) -> int:
    print("added", ", ".join(call("add-unit", count=args.n)))
    return 0


def cmd_remove_unit(args: argparse.Namespace) -> int:
    call("remove-unit", units=args.units)
    print("removing", ", ".join(args.units))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    call("config", values=parse_pairs(args.pairs))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    params: dict[str, Any] = dict(parse_pairs(args.params))
    action_id = call("action", unit=args.unit, name=args.action, params=params)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        result = call("action-result", action_id=action_id)
        if result is not None:
            for key, value in sorted(result["results"].items()):
                print(f"{key}: {value}")
            if result["status"] != "completed":
                print(f"action failed: {result['message']}", file=sys.stderr)
                return 1
            return 0
        time.sleep(0.2)
    print(f"action {action_id} did not finish within {args.timeout:.0f} s", file=sys.stderr)
    return 1


def cmd_wait(args: argparse.Namespace) -> int:
    if wait_settled(args.timeout):
        return 0
    print(f"not settled after {args.timeout:.0f} s", file=sys.stderr)
    return 1


def cmd_fault(args: argparse.Namespace) -> int:
    if args.command in ("kill", "freeze", "thaw"):
        call(args.command, unit=args.unit, service=args.service)
    elif args.command == "delete-pod":
        call("delete-pod", unit=args.unit, down_for=args.down_for)
    else:
        call(args.command, unit=args.unit)
    return 0


def cmd_relate(args: argparse.Namespace) -> int:
    relation_id = call(
        "relate",
        endpoint=args.endpoint,
        remote_app=args.remote_app,
        interface=args.interface or args.endpoint,
        remote_units=args.units,
    )
    print(relation_id)
    return 0


def cmd_remote_set(args: argparse.Namespace) -> int:
    values = dict(parse_pairs(args.pairs))
    if args.unit:
        call("remote-set", relation_id=args.relation_id, unit=args.unit, unit_data=values)
    else:
        call("remote-set", relation_id=args.relation_id, app_data=values)
    return 0


def cmd_unrelate(args: argparse.Namespace) -> int:
    call("unrelate", relation_id=args.relation_id)
    return 0


def cmd_show_relation(args: argparse.Namespace) -> int:
    relation = call("relation", relation_id=args.relation_id)
    if relation is None:
        print(f"no relation {args.relation_id}", file=sys.stderr)
        return 1
    print(json.dumps(relation, indent=2))
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    call("heal")
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    from redis_k8s_local.store import Store

    field = f"{args.which}-password"
    doc = Store(state_dir()).read()
    for secret in doc.get("secrets", {}).values():
        revision = str(secret["revision"])
        content = secret["contents"].get(revision, {})
        if field in content:
            print(content[field])
            return 0
    print(f"no {field} yet (the leader creates it in its first hook)", file=sys.stderr)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    state = state_dir()
    if daemon.agent_running(state):
        try:
            daemon.request(state, "shutdown", timeout=120)
        except (OSError, RuntimeError) as error:
            print(f"the agent did not shut down cleanly: {error}", file=sys.stderr)
        deadline = time.monotonic() + 30
        while daemon.agent_running(state) and time.monotonic() < deadline:
            time.sleep(0.2)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int((state / daemon.PID_NAME).read_text()), 9)  # did not stop by itself
    pebble = pebble_binary() or Path("pebble")
    pods = Pods(state, pebble)
    pods.cleanup()
    left = pods.leftovers()
    shutil.rmtree(state, ignore_errors=True)
    if left:
        print("could not remove:", *left, sep="\n  ", file=sys.stderr)
        return 1
    print("local cluster removed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="redis-k8s-local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="deploy a cluster and wait until it settles")
    up.add_argument("--units", type=int, default=3)
    up.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    up.add_argument("--timeout", type=float, default=300)
    up.add_argument("--update-status-interval", type=float, default=60)
    up.set_defaults(func=cmd_up)
    status = sub.add_parser("status", help="units, roles and statuses")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    add = sub.add_parser("add-unit", help="scale up")
    add.add_argument("-n", type=int, default=1)
    add.set_defaults(func=cmd_add_unit)
    remove = sub.add_parser("remove-unit", help="scale down")
    remove.add_argument("units", nargs="+")
    remove.set_defaults(func=cmd_remove_unit)
    config = sub.add_parser("config", help="set config options (KEY= resets one)")
    config.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    config.set_defaults(func=cmd_config)
    run = sub.add_parser("run", help="run an action and print its results")
    run.add_argument("unit")
    run.add_argument("action")
    run.add_argument("params", nargs="*", metavar="KEY=VALUE")
    run.add_argument("--timeout", type=float, default=120)
    run.set_defaults(func=cmd_run)
    wait = sub.add_parser("wait", help="wait until settled")
    wait.add_argument("--timeout", type=float, default=300)
    wait.set_defaults(func=cmd_wait)
    for name, text in (
        ("kill", "SIGKILL a unit's redis-server (or redis-sentinel); Pebble restarts it"),
        ("freeze", "SIGSTOP a unit's redis-server (or redis-sentinel): down until thawed"),
        ("thaw", "SIGCONT what freeze stopped"),
    ):
        signal_fault = sub.add_parser(name, help=text)
        signal_fault.add_argument("unit")
        signal_fault.add_argument("--service", choices=("redis", "sentinel"), default="redis")
        signal_fault.set_defaults(func=cmd_fault)
    for name, text in (
        ("delete-pod", "the unit's pod dies and comes back with its storage"),
        ("partition", "cut the unit's address off from every other unit"),
    ):
        fault = sub.add_parser(name, help=text)
        fault.add_argument("unit")
        fault.set_defaults(func=cmd_fault)
        if name == "delete-pod":
            fault.add_argument(
                "--down-for",
                type=float,
                default=5.0,
                help="seconds before the pod is back, as Kubernetes takes to reschedule it",
            )
    sub.add_parser("heal", help="remove every partition").set_defaults(func=cmd_heal)
    relate = sub.add_parser(
        "relate", help="relate an endpoint to a client application you play; prints its id"
    )
    relate.add_argument("endpoint")
    relate.add_argument("remote_app")
    relate.add_argument("--interface", help="default: the endpoint's name")
    relate.add_argument("--units", type=int, default=1, help="remote units (default 1)")
    relate.set_defaults(func=cmd_relate)
    remote_set = sub.add_parser(
        "remote-set", help="write the client application's (or --unit's) databag"
    )
    remote_set.add_argument("relation_id")
    remote_set.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    remote_set.add_argument("--unit", help="a remote unit, such as client/0")
    remote_set.set_defaults(func=cmd_remote_set)
    unrelate = sub.add_parser("unrelate", help="remove a client relation")
    unrelate.add_argument("relation_id")
    unrelate.set_defaults(func=cmd_unrelate)
    show = sub.add_parser("show-relation", help="a relation's databags, as JSON")
    show.add_argument("relation_id")
    show.set_defaults(func=cmd_show_relation)
    secret = sub.add_parser("password", help="print an internal password (default admin)")
    secret.add_argument("which", nargs="?", choices=("admin", "sentinel"), default="admin")
    secret.set_defaults(func=cmd_password)
    sub.add_parser("down", help="remove everything (safe twice)").set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``redis-k8s-local`` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
