"""The agent's daemon: one process per local cluster, driven over a Unix socket.

``redis-k8s-local up`` starts it in the background (its own session, its output
in ``<state>/logs/agent.log``); every other command is a request on
``<state>/agent.sock``: one JSON line in, one JSON line out
(``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis_k8s_local import hooktool
from redis_k8s_local.agent import Agent

logger = logging.getLogger(__name__)

SOCKET_NAME = "agent.sock"
PID_NAME = "agent.pid"


def request(state_dir: Path, op: str, timeout: float = 600, **args: Any) -> Any:
    """Send one request to the daemon and return its result; raises on an error reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(state_dir / SOCKET_NAME))
        client.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            reply += chunk
    answer = json.loads(reply or b'{"ok": false, "error": "no answer from the agent"}')
    if not answer.get("ok"):
        raise RuntimeError(answer.get("error", "the agent refused the request"))
    return answer.get("result")


def agent_running(state_dir: Path) -> bool:
    """Whether a daemon answers on this state directory's socket."""
    try:
        request(state_dir, "ping", timeout=5)
    except (OSError, RuntimeError, json.JSONDecodeError):
        return False
    return True


class Handlers:
    """The operations the daemon serves, by name."""

    def __init__(self, agent: Agent, stop: Callable[[], None]) -> None:
        """Serve ``agent``; ``stop`` ends the server after a shutdown request."""
        self.agent = agent
        self.stop = stop

    def ping(self) -> str:
        return "pong"

    def hook_tool(
        self, tool: str, args: list[str], env: dict[str, str], stdin: str = ""
    ) -> dict[str, object]:
        """One hook tool call from ``jujuc`` (a hook's process), run here."""
        return hooktool.run_captured(tool, args, env, stdin)

    def deploy(self, units: int, config: dict[str, str]) -> list[str]:
        if self.agent.units:
            raise RuntimeError(f"already deployed: {len(self.agent.units)} units")
        with self.agent.store.transaction() as doc:
            doc["config"].update(config)
        return self.agent.add_units(units)

    def add_unit(self, count: int = 1) -> list[str]:
        return self.agent.add_units(count)

    def remove_unit(self, units: list[str]) -> None:
        self.agent.remove_units(units)

    def config(self, values: dict[str, str]) -> None:
        self.agent.set_config(values)

    def action(self, unit: str, name: str, params: dict[str, Any]) -> str:
        return self.agent.run_action(unit, name, params)

    def action_result(self, action_id: str) -> dict | None:
        return self.agent.action_result(action_id)

    def status(self) -> dict:
        return self.agent.status()

    def history(self) -> list[dict]:
        with self.agent.lock:
            return [vars(record) for record in self.agent.history]

    def update_status(self) -> None:
        self.agent.queue_everywhere("update-status")

    def kill(self, unit: str, service: str = "redis") -> None:
        self.agent.pods.kill(self.agent.units[unit].spec, service)

    def delete_pod(self, unit: str, down_for: float = 5.0) -> None:
        self.agent.delete_pod(unit, down_for)

    def freeze(self, unit: str, service: str = "redis") -> None:
        self.agent.pods.freeze(self.agent.units[unit].spec, service)

    def thaw(self, unit: str, service: str = "redis") -> None:
        self.agent.pods.thaw(self.agent.units[unit].spec, service)

    def partition(self, unit: str) -> None:
        spec = self.agent.units[unit].spec
        others = [s for s in self.agent.specs() if s.unit != unit]
        self.agent.pods.partition(spec, others)

    def relate(self, endpoint: str, remote_app: str, interface: str, remote_units: int = 1) -> int:
        return self.agent.relate(endpoint, remote_app, interface, remote_units)

    def remote_set(
        self,
        relation_id: str,
        app_data: dict[str, str] | None = None,
        unit: str | None = None,
        unit_data: dict[str, str] | None = None,
    ) -> None:
        self.agent.remote_set(str(relation_id), app_data, unit, unit_data)

    def unrelate(self, relation_id: str) -> None:
        self.agent.unrelate(str(relation_id))

    def relation(self, relation_id: str) -> dict | None:
        return self.agent.store.read()["relations"].get(str(relation_id))

    def heal(self) -> None:
        self.agent.pods.heal()

    def shutdown(self) -> None:
        self.agent.shutdown()
        threading.Thread(target=self.stop, daemon=True).start()


def make_server(
    socket_path: Path, handlers_for: Callable[[Callable[[], None]], Handlers]
) -> socketserver.ThreadingUnixStreamServer:
    """A server of one JSON request per connection on ``socket_path``, a thread each.

    ``handlers_for`` gets the server's ``shutdown`` and returns the ``Handlers``.
    """

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                message = json.loads(self.rfile.readline())
                op = message.pop("op").replace("-", "_")
                method = getattr(handlers, op, None)
                if method is None or op.startswith("_"):
                    raise RuntimeError(f"unknown request {op!r}")
                reply = {"ok": True, "result": method(**message)}
            except Exception as error:  # every failure is the caller's answer
                logger.exception("request failed")
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")

    class Server(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True
        request_queue_size = 128  # every unit's hook tools may connect at once

    server = Server(str(socket_path), Handler)
    handlers = handlers_for(server.shutdown)
    return server


def serve(
    state_dir: Path,
    repo: Path,
    pebble_binary: Path,
    update_status_s: float,
    jujuc: Path | None = None,
) -> None:
    """Run the agent until a ``shutdown`` request or SIGTERM."""
    state_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(state_dir, repo, pebble_binary, update_status_s=update_status_s, jujuc=jujuc)
    agent.start()
    socket_path = state_dir / SOCKET_NAME
    socket_path.unlink(missing_ok=True)

    server = make_server(socket_path, lambda stop: Handlers(agent, stop))
    (state_dir / PID_NAME).write_text(str(os.getpid()))

    def terminate(signum: int, frame: object) -> None:
        agent.shutdown()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        socket_path.unlink(missing_ok=True)
        (state_dir / PID_NAME).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m redis_k8s_local.daemon --state-dir ... --repo ... --pebble ...``."""
    parser = argparse.ArgumentParser(prog="redis-k8s-local-daemon")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--pebble", type=Path, required=True)
    parser.add_argument("--update-status-interval", type=float, default=60.0)
    parser.add_argument("--jujuc", type=Path, default=None, help="the hook tools' binary")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    serve(args.state_dir, args.repo, args.pebble, args.update_status_interval, args.jujuc)


if __name__ == "__main__":
    main()
