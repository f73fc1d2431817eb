"""Juju's hook tools over the local store, with exactly the command lines ops 3.9 runs.

One entry point, :func:`main`, dispatches on the tool's name (``argv[0]``'s basename);
:func:`install_tools` writes one small executable per name into a ``bin`` directory
for the agent to put first on a hook's ``PATH``. A tool reads its context from the
environment, as Juju's do: ``REDIS_K8S_LOCAL_STATE`` (the store's directory),
``JUJU_UNIT_NAME`` (the calling unit), ``JUJU_CHARM_DIR`` (``config.yaml`` and
``actions.yaml`` for the defaults), ``JUJU_RELATION_ID`` / ``JUJU_REMOTE_UNIT`` /
``JUJU_REMOTE_APP`` (relation hooks), ``JUJU_STORAGE_ID`` (storage hooks),
``JUJU_ACTION_UUID`` (actions) and ``JUJU_CONTEXT_ID`` (which hook's relation writes
to buffer, see :mod:`redis_k8s_local.store`).

Errors are Juju's: ``ERROR <message>`` on stderr, exit 1 (2 for a bad command line),
worded the way ops recognises them: ``relation not found`` (RelationNotFoundError),
``secret ... not found`` (SecretNotFoundError), ``permission denied`` (a follower
writing its application databag or touching a secret it may not manage).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from redis_k8s_local import store as st

# Every hook tool call is a process: the modules only some tools need (base64, datetime,
# ipaddress, yaml) are imported in those tools.
STATE_ENV = "REDIS_K8S_LOCAL_STATE"
SETTABLE_STATUSES = ("maintenance", "blocked", "waiting", "active")
RESERVED_ACTION_KEYS = ("stdout", "stdout-encoding", "stderr", "stderr-encoding")
_SECRET_KEY = re.compile(r"^([a-z](?:-?[a-z0-9]){2,})$")
_ACTION_KEY = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class HookError(Exception):
    """A hook tool failure: its message goes to stderr as ``ERROR <message>``."""

    def __init__(self, message: str, code: int = 1) -> None:
        """Fail with ``message`` and exit ``code`` (2 is a command-line error)."""
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ plumbing


class Context:
    """Who is calling, from where: the store, the unit, the hook's environment."""

    def __init__(self, tool: str, env: Mapping[str, str]) -> None:
        """Read the context of ``tool`` from ``env``."""
        self.tool = tool
        self.env = env
        if not env.get(STATE_ENV):
            raise HookError(f"{STATE_ENV} is not set: not running under redis-k8s-local")
        if not env.get("JUJU_UNIT_NAME"):
            raise HookError("JUJU_UNIT_NAME is not set")
        self.state_dir = Path(env[STATE_ENV])
        self.store = st.Store(self.state_dir)
        self.unit = env["JUJU_UNIT_NAME"]
        self.app = self.unit.split("/")[0]
        self.charm_dir = Path(env.get("JUJU_CHARM_DIR") or ".")
        self.context_id = env.get("JUJU_CONTEXT_ID") or None

    def is_leader(self, doc: Mapping[str, Any]) -> bool:
        """Whether the calling unit holds the leadership."""
        return doc.get("leader") == self.unit

    def record(self, doc: Mapping[str, Any]) -> dict:
        """The calling unit's entry in ``units``."""
        record = doc.get("units", {}).get(self.unit)
        if record is None:
            raise HookError(f'unit "{self.unit}" not found')
        return record


def parse(
    args: list[str],
    values: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Split a command line the way Juju's gnuflag does: ``(options, positionals)``.

    ``values`` and ``flags`` map each spelling (``-r``, ``--relation``) to the option's
    name; ``--x=v`` and ``--x v`` both work, ``--flag=False`` too, ``--`` ends options.
    ``--format`` is accepted everywhere.
    """
    values = {"--format": "format", **(values or {})}
    flags = flags or {}
    options: dict[str, Any] = {}
    positionals: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            positionals.extend(rest)
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name in values:
            if not has_value:
                value = next(rest, None)
                if value is None:
                    raise HookError(f"flag needs an argument: {name}", 2)
            options[values[name]] = value
        elif name in flags:
            if has_value and value not in _TRUE + _FALSE:
                raise HookError(f'invalid boolean value "{value}" for flag {name}', 2)
            options[flags[name]] = not has_value or value in _TRUE
        else:
            raise HookError(f"flag provided but not defined: {name}", 2)
    return options, positionals


def emit(value: Any, options: Mapping[str, Any]) -> None:
    """Print ``value``: JSON for ``--format=json``, else plain text for plain values."""
    if options.get("format") == "json" or not isinstance(value, str | bool | int | float):
        print(json.dumps(value))
    else:
        print(value)


def no_more(positionals: list[str]) -> None:
    """Refuse extra arguments, as Juju does."""
    if positionals:
        raise HookError(f"unrecognized args: {positionals}", 2)


# ----------------------------------------------------------------- relations

_RELATION = {"-r": "relation", "--relation": "relation"}


def sees(unit: str, relation: Mapping[str, Any]) -> bool:
    """A unit sees a relation it is in, until its ``relation-broken`` has run."""
    return unit in relation["units"] and unit not in relation.get("left", [])


def find_relation(ctx: Context, doc: Mapping[str, Any], ref: str | None) -> tuple[str, dict]:
    """The relation ``-r`` names (``endpoint:id`` or ``id``), or the hook's relation.

    A unit sees only the relations it is in (its name in their ``units``).
    """
    ref = ref or ctx.env.get("JUJU_RELATION_ID")
    if not ref:
        raise HookError("no relation id specified", 2)
    endpoint, _, number = ref.rpartition(":")
    relation = doc.get("relations", {}).get(number)
    if (
        relation is None
        or (endpoint and relation["endpoint"] != endpoint)
        or not sees(ctx.unit, relation)
    ):
        raise HookError(f'invalid value "{ref}" for option -r: relation not found')
    return number, relation


def remote_app(doc: Mapping[str, Any], relation: Mapping[str, Any]) -> str:
    """The application at the other end: ours for a peer relation."""
    return relation.get("remote_app") or doc["app"]


def pending_writes(ctx: Context, doc: Mapping[str, Any], relation_id: str, kind: str) -> dict:
    """This hook's not yet committed writes to its own ``app`` or ``unit`` databag."""
    if ctx.context_id is None:
        return {}
    hook = doc.get("pending", {}).get(ctx.context_id, {})
    return hook.get("relations", {}).get(relation_id, {}).get(kind, {})


def relation_ids(ctx: Context, args: list[str]) -> int:
    """``relation-ids <endpoint> --format=json``: ``["endpoint:id", ...]`` the unit is in."""
    options, positionals = parse(args)
    endpoint = positionals[0] if positionals else ctx.env.get("JUJU_RELATION")
    if not endpoint:
        raise HookError("no endpoint name specified", 2)
    no_more(positionals[1:])
    relations = ctx.store.read().get("relations", {})
    ids = sorted(
        int(i) for i, r in relations.items() if r["endpoint"] == endpoint and sees(ctx.unit, r)
    )
    emit([f"{endpoint}:{i}" for i in ids], options)
    return 0


def relation_list(ctx: Context, args: list[str]) -> int:
    """``relation-list --format=json [--app] [-r endpoint:id]``: the other side's units."""
    options, positionals = parse(args, _RELATION, {"--app": "app"})
    no_more(positionals)
    doc = ctx.store.read()
    _, relation = find_relation(ctx, doc, options.get("relation"))
    remote = remote_app(doc, relation)
    if options.get("app"):
        emit(remote, options)
        return 0
    units = [u for u in relation["units"] if u.split("/")[0] == remote and u != ctx.unit]
    emit(sorted(units, key=lambda u: int(u.split("/")[1])), options)
    return 0


def relation_get(ctx: Context, args: list[str]) -> int:
    """``relation-get --format=json [-r ref] [--app] [key|-] [unit or app]``."""
    options, positionals = parse(args, _RELATION, {"--app": "app"})
    key = positionals[0] if positionals else "-"
    is_app = bool(options.get("app"))
    member = positionals[1] if len(positionals) > 1 else None
    member = member or ctx.env.get("JUJU_REMOTE_APP" if is_app else "JUJU_REMOTE_UNIT")
    no_more(positionals[2:])
    if not member:
        raise HookError("no unit id specified", 2)
    doc = ctx.store.read()
    relation_id, relation = find_relation(ctx, doc, options.get("relation"))
    remote = remote_app(doc, relation)
    if is_app:
        if member not in (ctx.app, remote):
            raise HookError(f'cannot read application settings of "{member}": permission denied')
        if member == ctx.app and remote != ctx.app and not ctx.is_leader(doc):
            raise HookError("permission denied")  # a follower's own app bag, but for peers
        bag = dict(relation.get("app_data" if member == ctx.app else "remote_app_data", {}))
    else:
        departing = (ctx.env.get("JUJU_REMOTE_UNIT"), ctx.env.get("JUJU_DEPARTING_UNIT"))
        members = (ctx.unit, *relation["units"], *relation["unit_data"], *departing)
        if member not in members:
            raise HookError(
                f'cannot read settings for unit "{member}" in relation '
                f'"{relation["endpoint"]}:{relation_id}": unit "{member}": settings not found'
            )
        bag = dict(relation["unit_data"].get(member, {}))
    if member in (ctx.unit, ctx.app):
        st.apply_writes(bag, pending_writes(ctx, doc, relation_id, "app" if is_app else "unit"))
    emit(bag if key == "-" else bag.get(key), options)
    return 0


def relation_set(ctx: Context, args: list[str]) -> int:
    """``relation-set [-r ref] [--app] --file -`` (JSON or YAML on stdin) ``[key=value...]``.

    An empty value deletes the key. Only the leader writes the application databag.
    """
    options, positionals = parse(args, {**_RELATION, "--file": "file"}, {"--app": "app"})
    data: dict[str, str] = {}
    if "file" in options:
        source = options["file"]
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        data.update(load_mapping(text, "relation settings"))
    for pair in positionals:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise HookError(f'expected "key=value", got "{pair}"', 2)
        data[key] = value
    is_app = bool(options.get("app"))
    kind = "app" if is_app else "unit"
    with ctx.store.transaction() as doc:
        relation_id, relation = find_relation(ctx, doc, options.get("relation"))
        if is_app and not ctx.is_leader(doc):
            raise HookError("cannot write relation settings: permission denied")
        if ctx.context_id is not None:
            hook = doc.setdefault("pending", {}).setdefault(
                ctx.context_id, {"unit": ctx.unit, "relations": {}}
            )
            hook["relations"].setdefault(relation_id, {}).setdefault(kind, {}).update(data)
        elif is_app:
            st.apply_writes(relation.setdefault("app_data", {}), data)
        else:
            st.apply_writes(relation["unit_data"].setdefault(ctx.unit, {}), data)
    return 0


def load_mapping(text: str, what: str) -> dict[str, str]:
    """A ``{key: value}`` mapping from JSON or YAML text; values become strings."""
    try:
        loaded = json.loads(text) if text.strip() else {}
    except ValueError:
        import yaml  # JSON is what ops sends; YAML only for hand-run tools

        loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise HookError(f"{what} must be a mapping")
    return {str(k): "" if v is None else str(v) for k, v in loaded.items()}


def relation_model_get(ctx: Context, args: list[str]) -> int:
    """``relation-model-get --format=json [-r ref]``: ``{"uuid": <model uuid>}``."""
    options, positionals = parse(args, _RELATION)
    no_more(positionals)
    doc = ctx.store.read()
    find_relation(ctx, doc, options.get("relation"))
    emit({"uuid": doc["model_uuid"]}, options)
    return 0


# ------------------------------------------------------ leadership, config, status


def is_leader(ctx: Context, args: list[str]) -> int:
    """``is-leader --format=json``: ``true`` or ``false``."""
    options, positionals = parse(args)
    no_more(positionals)
    emit(ctx.is_leader(ctx.store.read()), options)
    return 0


def config_get(ctx: Context, args: list[str]) -> int:
    """``config-get --format=json [key]``: the operator's values over the defaults."""
    options, positionals = parse(args, flags={"--all": "all", "-a": "all"})
    no_more(positionals[1:])
    config = st.effective_config(ctx.store.read(), ctx.charm_dir)
    emit(config.get(positionals[0]) if positionals else config, options)
    return 0


def status_dict(status: Mapping[str, str]) -> dict[str, Any]:
    """A status as ``status-get --include-data`` prints it."""
    return {"message": status["message"], "status": status["status"], "status-data": {}}


def status_get(ctx: Context, args: list[str]) -> int:
    """``status-get --include-data --format=json --application=true|false``."""
    flags = {"--include-data": "include_data", "--application": "application"}
    options, positionals = parse(args, flags=flags)
    no_more(positionals)
    doc = ctx.store.read()
    unit_status = ctx.record(doc)["status"]
    if not options.get("application"):
        emit(status_dict(unit_status) if options.get("include_data") else unit_status, options)
        return 0
    if not ctx.is_leader(doc):
        raise HookError("finding application status: this unit is not the leader")
    units = {u: status_dict(info["status"]) for u, info in sorted(doc["units"].items())}
    emit({"application-status": status_dict(doc["app_status"]), "units": units}, options)
    return 0


def status_set(ctx: Context, args: list[str]) -> int:
    """``status-set --application=True|False <status> [-- <message>]``."""
    options, positionals = parse(args, flags={"--application": "application"})
    if not positionals or len(positionals) > 2:
        raise HookError("invalid args, require <status> [message] [data]", 2)
    status, message = positionals[0], positionals[1] if len(positionals) > 1 else ""
    if status not in SETTABLE_STATUSES:
        expected = " ".join(SETTABLE_STATUSES)
        raise HookError(f'invalid status "{status}", expected one of [{expected}]', 2)
    with ctx.store.transaction() as doc:
        if options.get("application"):
            if not ctx.is_leader(doc):
                raise HookError("setting application status: this unit is not the leader")
            doc["app_status"] = {"status": status, "message": message}
        else:
            ctx.record(doc)["status"] = {"status": status, "message": message}
    return 0


def application_version_set(ctx: Context, args: list[str]) -> int:
    """``application-version-set -- <version>``."""
    _, positionals = parse(args)
    if len(positionals) != 1:
        raise HookError("no version specified" if not positionals else "too many args", 2)
    with ctx.store.transaction() as doc:
        ctx.record(doc)["workload_version"] = positionals[0]
    return 0


def juju_log(ctx: Context, args: list[str]) -> int:
    """``juju-log --log-level <LEVEL> -- <message>``: a line in ``logs/<app>-<n>.log``."""
    options, positionals = parse(
        args, {"--log-level": "level", "-l": "level"}, {"--debug": "debug"}
    )
    if not positionals:
        raise HookError("no message specified", 2)
    level = "DEBUG" if options.get("debug") else options.get("level", "INFO")
    logs = ctx.state_dir / "logs"
    logs.mkdir(exist_ok=True)
    line = f"{level} {' '.join(positionals)}\n".encode()
    path = logs / f"{ctx.unit.replace('/', '-')}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write: lines of concurrent hooks don't interleave
    finally:
        os.close(fd)
    return 0


def goal_state(ctx: Context, args: list[str]) -> int:
    """``goal-state --format=json``: this application's units and relations, all active."""
    options, positionals = parse(args)
    no_more(positionals)
    doc = ctx.store.read()
    import datetime

    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def goal(alive: bool = True) -> dict[str, str]:
        return {"status": "active" if alive else "dying", "since": since}

    units = {u: goal(info.get("life", "alive") == "alive") for u, info in doc["units"].items()}
    relations: dict[str, dict[str, dict[str, str]]] = {}
    for relation in doc["relations"].values():
        goals = relations.setdefault(relation["endpoint"], {})
        remote = goals[remote_app(doc, relation)] = goal()
        for unit in relation["units"]:
            if unit.split("/")[0] == remote and unit != ctx.unit:
                goals[unit] = units.get(unit, goal())
    emit({"units": units, "relations": relations}, options)
    return 0


# ---------------------------------------------------------- network and storage


def network_get(ctx: Context, args: list[str]) -> int:
    """``network-get --format=json [-r id] <binding>``: the unit's address, as Juju gives it."""
    only = {
        "--bind-address": "bind-address",
        "--ingress-address": "ingress-address",
        "--egress-subnets": "egress-subnets",
        "--primary-address": "bind-address",
    }
    options, positionals = parse(args, _RELATION, only)
    if len(positionals) != 1:
        raise HookError("no arguments specified" if not positionals else "too many args", 2)
    doc = ctx.store.read()
    if "relation" in options:
        find_relation(ctx, doc, options["relation"])
    address = ctx.record(doc).get("address", "")
    import ipaddress

    try:
        cidr = str(ipaddress.ip_network(address))
    except ValueError:
        cidr = ""
    addresses = [{"hostname": "", "value": address, "cidr": cidr}] if address else []
    info = {
        "bind-addresses": [
            {
                "mac-address": "",
                "interface-name": "eth0",
                "addresses": addresses,
                "macaddress": "",
                "interfacename": "eth0",
            }
        ],
        "egress-subnets": [cidr] if cidr else [],
        "ingress-addresses": [address] if address else [],
    }
    single = {"bind-address": address, "ingress-address": address}
    single["egress-subnets"] = info["egress-subnets"]
    wanted = {name for name in only.values() if options.get(name)}
    emit(single[wanted.pop()] if len(wanted) == 1 else info, options)
    return 0


def storage_get(ctx: Context, args: list[str]) -> int:
    """``storage-get --format=json [-s name/n] [key]``: ``{"kind", "location"}``."""
    options, positionals = parse(args, {"-s": "storage"})
    no_more(positionals[1:])
    storage_id = options.get("storage") or ctx.env.get("JUJU_STORAGE_ID")
    if not storage_id:
        raise HookError("no storage instance specified", 2)
    location = ctx.store.read().get("storage", {}).get(ctx.unit, {}).get(storage_id)
    if location is None:
        raise HookError(
            f'invalid value "{storage_id}" for option -s: storage instance "{storage_id}" '
            "not found"
        )
    info = {"kind": "filesystem", "location": location}
    emit(info.get(positionals[0]) if positionals else info, options)
    return 0


def storage_list(ctx: Context, args: list[str]) -> int:
    """``storage-list --format=json [name]``: ``["name/n", ...]`` attached to the unit."""
    options, positionals = parse(args)
    no_more(positionals[1:])
    attached = ctx.store.read().get("storage", {}).get(ctx.unit, {})
    name = positionals[0] if positionals else None
    ids = [i for i in attached if name is None or i.split("/")[0] == name]
    emit(sorted(ids, key=lambda i: (i.split("/")[0], int(i.split("/")[1]))), options)
    return 0


# ------------------------------------------------------------------------ ports


def port_spec(positionals: list[str]) -> str:
    """``6379``, ``6379/tcp``, ``8000-8999/udp`` or ``icmp``, as opened-ports prints it."""
    if len(positionals) != 1:
        raise HookError("expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp", 2)
    spec = positionals[0].lower()
    if spec == "icmp":
        return spec
    ports, _, protocol = spec.partition("/")
    if protocol not in ("", "tcp", "udp") or not re.fullmatch(r"\d+(-\d+)?", ports):
        raise HookError(f'invalid port "{positionals[0]}"', 2)
    return f"{ports}/{protocol or 'tcp'}"


def open_port(ctx: Context, args: list[str]) -> int:
    """``open-port [--endpoints e,f] <port>[/<protocol>] | icmp``."""
    _, positionals = parse(args, {"--endpoints": "endpoints"})
    spec = port_spec(positionals)
    with ctx.store.transaction() as doc:
        ports = ctx.record(doc).setdefault("ports", [])
        if spec not in ports:
            ports.append(spec)
    return 0


def close_port(ctx: Context, args: list[str]) -> int:
    """``close-port [--endpoints e,f] <port>[/<protocol>] | icmp``."""
    _, positionals = parse(args, {"--endpoints": "endpoints"})
    spec = port_spec(positionals)
    with ctx.store.transaction() as doc:
        ports = ctx.record(doc).setdefault("ports", [])
        if spec in ports:
            ports.remove(spec)
    return 0


def opened_ports(ctx: Context, args: list[str]) -> int:
    """``opened-ports [--endpoints] --format=json``: ``["6379/tcp", ...]``."""
    options, positionals = parse(args, flags={"--endpoints": "endpoints"})
    no_more(positionals)
    ports = ctx.record(ctx.store.read()).get("ports", [])
    emit([f"{p} (*)" if options.get("endpoints") else p for p in ports], options)
    return 0


# ---------------------------------------------------------------------- secrets

_SECRET_OPTIONS = {
    "--label": "label",
    "--description": "description",
    "--expire": "expire",
    "--rotate": "rotate",
    "--owner": "owner",
}


def secret_content(args: list[str]) -> dict[str, str]:
    """Secret content from ``key=value``, ``key#base64=...`` and ``key#file=path`` args."""
    content: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise HookError(f'expected "key=value", got "{arg}"', 2)
        key, _, encoding = key.partition("#")
        if encoding == "file":
            value = Path(value).read_text()
        elif encoding == "base64":
            import base64

            value = base64.b64decode(value).decode()
        elif encoding:
            raise HookError(f'unknown secret value encoding "{encoding}"', 2)
        if not _SECRET_KEY.match(key):
            raise HookError(f'invalid secret key "{key}"', 2)
        content[key] = value
    return content


def may_manage(ctx: Context, doc: Mapping[str, Any], secret: Mapping[str, Any]) -> bool:
    """The owner unit, or the owner application's leader: sees the latest, may change it."""
    if secret["owner"] == "unit":
        return secret["owner_name"] == ctx.unit
    return secret["owner_name"] == ctx.app and ctx.is_leader(doc)


def owner_side(ctx: Context, secret: Mapping[str, Any]) -> bool:
    """The owner unit, or any unit of the owner application."""
    owner = ctx.app if secret["owner"] == "application" else ctx.unit
    return secret["owner_name"] == owner


def may_read(ctx: Context, secret: Mapping[str, Any]) -> bool:
    """The owner's units (every unit of an owner application) and grantees read."""
    if owner_side(ctx, secret):
        return True
    grants = secret.get("grants", {}).values()
    return any(ctx.unit in who or ctx.app in who for who in grants)


def find_secret(
    ctx: Context,
    doc: Mapping[str, Any],
    ref: str | None,
    label: str | None,
    managed: bool = False,
) -> tuple[str, dict]:
    """The secret named by ID, or else by label (the owner's or this unit's own).

    ``managed``: only secrets this unit may manage count (Juju says "not found").
    """
    secrets = doc.get("secrets", {})
    if ref:
        key = st.secret_key(ref)
        secret = secrets.get(key)
        if secret is None or (managed and not may_manage(ctx, doc, secret)):
            raise HookError(f'secret "{key.removeprefix("secret:")}" not found')
        return key, secret
    if not label:
        raise HookError("require either a secret URI or label", 2)
    for key, secret in secrets.items():
        named = owner_side(ctx, secret) and secret["label"] == label
        named = named or secret["labels"].get(ctx.unit) == label
        if named and (not managed or may_manage(ctx, doc, secret)):
            return key, secret
    raise HookError(f'secret with label "{label}" not found')


def label_taken(doc: Mapping[str, Any], owner_name: str, label: str, but: str = "") -> bool:
    """Whether another secret of ``owner_name`` already has owner label ``label``."""
    return any(
        s["owner_name"] == owner_name and s["label"] == label and key != but
        for key, s in doc["secrets"].items()
    )


def secret_add(ctx: Context, args: list[str]) -> int:
    """``secret-add [--label l] [--description d] [--expire t] [--rotate p] --owner o k#file=p``.

    Only the leader adds application secrets; owner labels are unique per owner.
    """
    options, positionals = parse(args, _SECRET_OPTIONS)
    content = secret_content(positionals)
    if not content:
        raise HookError("missing secret value or filename", 2)
    owner = options.get("owner", "application")
    if owner not in ("application", "unit"):
        raise HookError(f'secret owner "{owner}" not valid', 2)
    with ctx.store.transaction() as doc:
        if owner == "application" and not ctx.is_leader(doc):
            raise HookError("permission denied: only the leader adds application secrets")
        owner_name = ctx.app if owner == "application" else ctx.unit
        label = options.get("label")
        if label is not None and label_taken(doc, owner_name, label):
            raise HookError(f'secret with label "{label}" already exists')
        secret_id = st.new_secret_id()
        doc.setdefault("secrets", {})[secret_id] = {
            "owner": owner,
            "owner_name": owner_name,
            "label": label,
            "description": options.get("description"),
            "expire": options.get("expire"),
            "rotate": options.get("rotate"),
            "revision": 1,
            "contents": {"1": content},
            "tracked": {},
            "labels": {},
            "grants": {},
            "notified": {},
        }
    print(secret_id)
    return 0


def secret_get(ctx: Context, args: list[str]) -> int:
    """``secret-get --format=json [<id>] [--label l] [--refresh | --peek]``.

    The owner sees the latest revision; an observer sees the revision it tracks
    (the latest at its first get), the latest with ``--peek``, and with ``--refresh``
    the latest, tracked from then on. With an ID, ``--label`` (re)labels the secret.
    """
    flags = {"--refresh": "refresh", "--peek": "peek"}
    options, positionals = parse(args, {"--label": "label"}, flags)
    no_more(positionals[1:])
    if options.get("refresh") and options.get("peek"):
        raise HookError("specify one of --peek or --refresh but not both", 2)
    ref, label = (positionals[0] if positionals else None), options.get("label")
    with ctx.store.transaction() as doc:
        key, secret = find_secret(ctx, doc, ref, label)
        if not may_read(ctx, secret):
            raise HookError(f'cannot read secret "{key}": permission denied')
        manager = may_manage(ctx, doc, secret)
        if ref and label:
            if manager:
                if label_taken(doc, secret["owner_name"], label, but=key):
                    raise HookError(f'secret with label "{label}" already exists')
                secret["label"] = label
            else:
                secret["labels"][ctx.unit] = label
        revision = secret["revision"]
        if not manager:
            tracked = secret["tracked"].get(ctx.unit)
            if tracked is None or options.get("refresh"):
                secret["tracked"][ctx.unit] = revision
            elif not options.get("peek") and str(tracked) in secret["contents"]:
                revision = tracked
        content = secret["contents"][str(revision)]
    emit(content, options)
    return 0


def secret_set(ctx: Context, args: list[str]) -> int:
    """``secret-set [--label l] [--description d] ... --owner o <id> [k#file=p ...]``.

    New content makes a new revision (none if it equals the latest, as Juju 3.6).
    ``--owner`` is ignored: ops always passes ``application``.
    """
    options, positionals = parse(args, _SECRET_OPTIONS)
    if not positionals:
        raise HookError("missing secret URI", 2)
    content = secret_content(positionals[1:])
    with ctx.store.transaction() as doc:
        key, secret = find_secret(ctx, doc, positionals[0], None)
        if not may_manage(ctx, doc, secret):
            raise HookError(f'cannot update secret "{key}": permission denied')
        label = options.get("label")
        if label is not None:
            if label_taken(doc, secret["owner_name"], label, but=key):
                raise HookError(f'secret with label "{label}" already exists')
            secret["label"] = label
        for name in ("description", "expire", "rotate"):
            if name in options:
                secret[name] = options[name]
        if content and content != secret["contents"][str(secret["revision"])]:
            secret["revision"] += 1
            secret["contents"][str(secret["revision"])] = content
    return 0


def secret_info_get(ctx: Context, args: list[str]) -> int:
    """``secret-info-get --format=json <id> | --label l``: ``{<xid>: {revision, ...}}``."""
    options, positionals = parse(args, {"--label": "label"})
    no_more(positionals[1:])
    if positionals and options.get("label"):
        raise HookError("specify either a secret URI or label but not both", 2)
    doc = ctx.store.read()
    ref = positionals[0] if positionals else None
    key, secret = find_secret(ctx, doc, ref, options.get("label"), managed=True)
    info = {
        "revision": secret["revision"],
        "label": secret["label"],
        "owner": secret["owner"],
        "description": secret["description"],
        "expiry": secret["expire"],
        "rotation": secret["rotate"],
    }
    emit({key.removeprefix("secret:"): {k: v for k, v in info.items() if v}}, options)
    return 0


def secret_ids(ctx: Context, args: list[str]) -> int:
    """``secret-ids --format=json``: the secrets this unit owns or, as leader, its app."""
    options, positionals = parse(args)
    no_more(positionals)
    doc = ctx.store.read()
    emit(sorted(k for k, s in doc["secrets"].items() if may_manage(ctx, doc, s)), options)
    return 0


def secret_grant(ctx: Context, args: list[str]) -> int:
    """``secret-grant --relation <id> [--unit u] <id>``."""
    options, positionals = parse(args, {**_RELATION, "--unit": "unit"})
    if len(positionals) != 1:
        raise HookError("missing secret URI" if not positionals else "too many args", 2)
    with ctx.store.transaction() as doc:
        key, secret = find_secret(ctx, doc, positionals[0], None)
        if not may_manage(ctx, doc, secret):
            raise HookError(f'cannot grant secret "{key}": permission denied')
        relation_id, relation = find_relation(ctx, doc, options.get("relation"))
        grantees = secret.setdefault("grants", {}).setdefault(relation_id, [])
        grantee = options.get("unit") or remote_app(doc, relation)
        if grantee not in grantees:
            grantees.append(grantee)
    return 0


def secret_revoke(ctx: Context, args: list[str]) -> int:
    """``secret-revoke --relation <id> [--app a] [--unit u] <id>``."""
    options, positionals = parse(args, {**_RELATION, "--app": "app", "--unit": "unit"})
    if len(positionals) != 1:
        raise HookError("missing secret URI" if not positionals else "too many args", 2)
    with ctx.store.transaction() as doc:
        key, secret = find_secret(ctx, doc, positionals[0], None)
        if not may_manage(ctx, doc, secret):
            raise HookError(f'cannot revoke secret "{key}": permission denied')
        relation_id = options.get("relation")
        for rid, grantees in list(secret.setdefault("grants", {}).items()):
            if relation_id is not None and rid != relation_id.rpartition(":")[2]:
                continue
            who = options.get("unit") or options.get("app")
            secret["grants"][rid] = [g for g in grantees if who is not None and g != who]
            if not secret["grants"][rid]:
                del secret["grants"][rid]
    return 0


def secret_remove(ctx: Context, args: list[str]) -> int:
    """``secret-remove <id> [--revision n]``: one revision, or the whole secret."""
    options, positionals = parse(args, {"--revision": "revision"})
    if len(positionals) != 1:
        raise HookError("missing secret URI" if not positionals else "too many args", 2)
    with ctx.store.transaction() as doc:
        key, secret = find_secret(ctx, doc, positionals[0], None)
        if not may_manage(ctx, doc, secret):
            raise HookError(f'cannot remove secret "{key}": permission denied')
        revision = options.get("revision")
        if revision is None:
            del doc["secrets"][key]
        elif secret["contents"].pop(revision, None) is None:
            raise HookError(f'secret revision "{key}/{revision}" not found')
        elif not secret["contents"]:
            del doc["secrets"][key]
    return 0


# ---------------------------------------------------------------------- actions


def running_action(ctx: Context, doc: Mapping[str, Any]) -> dict:
    """The action this hook runs (``JUJU_ACTION_UUID``)."""
    action_id = ctx.env.get("JUJU_ACTION_UUID")
    action = doc.get("actions", {}).get(action_id or "")
    if action is None:
        raise HookError(f'"{ctx.tool}" is only available while running an action')
    return action


def action_get(ctx: Context, args: list[str]) -> int:
    """``action-get --format=json [key.sub]``: the parameters, defaults filled in."""
    options, positionals = parse(args)
    no_more(positionals[1:])
    action = running_action(ctx, ctx.store.read())
    value: Any = {**st.action_defaults(ctx.charm_dir, action["name"]), **action["params"]}
    for part in positionals[0].split(".") if positionals else []:
        value = value.get(part) if isinstance(value, dict) else None
    emit(value, options)
    return 0


def action_set(ctx: Context, args: list[str]) -> int:
    """``action-set key=value ...``; dotted keys nest: ``a.b=c`` sets ``{"a": {"b": "c"}}``."""
    _, positionals = parse(args)
    if not positionals:
        raise HookError("no key=value pairs specified", 2)
    pairs = []
    for arg in positionals:
        key, eq, value = arg.partition("=")
        parts = key.split(".")
        if not eq or not all(_ACTION_KEY.match(p) for p in parts):
            raise HookError(f'key "{key}" must start and end with lowercase alphanumeric', 2)
        if parts[0] in RESERVED_ACTION_KEYS:
            raise HookError(f'cannot set reserved action key "{parts[0]}"', 2)
        pairs.append((parts, value))
    with ctx.store.transaction() as doc:
        results = running_action(ctx, doc)["results"]
        for parts, value in pairs:
            node = results
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = value
    return 0


def action_fail(ctx: Context, args: list[str]) -> int:
    """``action-fail [-- message]``."""
    _, positionals = parse(args)
    with ctx.store.transaction() as doc:
        action = running_action(ctx, doc)
        action["status"] = "failed"
        action["message"] = " ".join(positionals) or "action failed without reason given"
    return 0


def action_log(ctx: Context, args: list[str]) -> int:
    """``action-log -- <message>``."""
    _, positionals = parse(args)
    if not positionals:
        raise HookError("no message specified", 2)
    with ctx.store.transaction() as doc:
        running_action(ctx, doc)["log"].append(" ".join(positionals))
    return 0


# ------------------------------------------------------------------ entry points

TOOLS: dict[str, Callable[[Context, list[str]], int]] = {
    "relation-ids": relation_ids,
    "relation-list": relation_list,
    "relation-get": relation_get,
    "relation-set": relation_set,
    "relation-model-get": relation_model_get,
    "is-leader": is_leader,
    "config-get": config_get,
    "status-get": status_get,
    "status-set": status_set,
    "application-version-set": application_version_set,
    "juju-log": juju_log,
    "goal-state": goal_state,
    "network-get": network_get,
    "storage-get": storage_get,
    "storage-list": storage_list,
    "open-port": open_port,
    "close-port": close_port,
    "opened-ports": opened_ports,
    "secret-add": secret_add,
    "secret-get": secret_get,
    "secret-set": secret_set,
    "secret-info-get": secret_info_get,
    "secret-ids": secret_ids,
    "secret-grant": secret_grant,
    "secret-revoke": secret_revoke,
    "secret-remove": secret_remove,
    "action-get": action_get,
    "action-set": action_set,
    "action-fail": action_fail,
    "action-log": action_log,
}


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    """Run the tool ``argv[0]`` names with ``argv[1:]``; its exit code."""
    tool = os.path.basename(argv[0])
    try:
        if tool not in TOOLS:
            raise HookError(f'unknown hook tool "{tool}"', 2)
        return TOOLS[tool](Context(tool, os.environ if env is None else env), argv[1:])
    except HookError as error:
        print(f"ERROR {error}", file=sys.stderr)
        return error.code
    except BrokenPipeError:
        return 1


_IN_PROCESS = threading.Lock()
"""One in-process call at a time: a call has the process's standard streams to itself."""


def run_captured(
    tool: str, args: list[str], env: Mapping[str, str], stdin: str = ""
) -> dict[str, object]:
    """Run one tool in this process (the agent, for ``jujuc``): its output and exit code.

    The tools print to ``sys.stdout`` and ``sys.stderr`` and ``relation-set --file -``
    reads ``sys.stdin``: those are buffers during the call. A bug in a tool is its
    caller's error (exit 1), never the agent's.
    """
    out, err = io.StringIO(), io.StringIO()
    with _IN_PROCESS:
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
        try:
            code = main([tool, *args], env)
        except Exception as error:
            print(f"ERROR {type(error).__name__}: {error}", file=err)
            code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
    return {"stdout": out.getvalue(), "stderr": err.getvalue(), "code": code}


_WRAPPER = """#!{python} -I
import sys
sys.path.insert(0, {local!r})
from redis_k8s_local.hooktool import main
sys.exit(main(sys.argv))
"""


def install_tools(bin_dir: Path, jujuc: Path | None = None) -> None:
    """Put one executable per hook tool into ``bin_dir``.

    With ``jujuc`` (``local/jujuc``, built by ``.ci/setup``), each is a link to it,
    as Juju's hook tools are links to its jujuc: a small binary that has the agent
    run the tool (``run_captured``). Without, each is a script run by this Python
    (a process of its own, several times slower than Juju's).
    """
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    local = str(Path(__file__).resolve().parent.parent)
    script = _WRAPPER.format(python=sys.executable, local=local)
    for tool in TOOLS:
        path = bin_dir / tool
        path.unlink(missing_ok=True)
        if jujuc is not None:
            path.symlink_to(Path(jujuc).resolve())
        else:
            path.write_text(script)
            path.chmod(0o755)


if __name__ == "__main__":  # python -m redis_k8s_local.hooktool <tool> [args...]
    sys.exit(main(sys.argv[1:]))
