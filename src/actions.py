"""The operator's actions: parameter models and the results they return.

Imported by the action handlers only: pydantic model classes cost milliseconds
to build, which every other hook would pay (each hook is a fresh process).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from machine import journal, rotation
from machine.types import ClusterFacts, ClusterInput, UnitFacts, UnitInput

HISTORY_MAX = 50


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(_Params):
    """An action without parameters."""


class SwitchoverParams(_Params):
    """The switchover action's parameters."""

    target: str | None = Field(default=None, max_length=64)


class RotateParams(_Params):
    """The rotate-passwords action's parameters."""

    users: str = Field(default="admin,replication,sentinel,client", pattern=r"^[a-z,]+$")

    @property
    def user_list(self) -> list[str]:
        """The users named, checked against those whose password rotates."""
        return sorted({u for u in self.users.split(",") if u})

    def model_post_init(self, _context: Any) -> None:
        """Refuse unknown users (a ValueError is a clear action error)."""
        unknown = [u for u in self.user_list if u not in rotation.ROTATABLE]
        if unknown or not self.user_list:
            raise ValueError(f"users must be among {', '.join(rotation.ROTATABLE)}")


class HistoryParams(_Params):
    """The history action's parameters."""

    limit: int = Field(default=10, ge=1, le=HISTORY_MAX)
    machine: str = Field(default="unit", pattern="^(unit|cluster)$")


def describe_cluster(cluster: ClusterFacts, units: dict[str, UnitFacts | None]) -> dict[str, Any]:
    """The describe-cluster result: primary, replicas with offset and lag, sentinels, states."""
    primary = units.get(cluster.primary) if cluster.primary else None
    primary_offset = primary.master_repl_offset if primary else None
    members: dict[str, Any] = {}
    for name in sorted(units, key=lambda n: int(n.rsplit("/", 1)[1])):
        facts = units[name]
        if facts is None:
            continue
        entry: dict[str, Any] = {
            "unit": name,
            "state": facts.state.value,
            "role": facts.role.value,
            "offset": facts.master_repl_offset,
            "following": facts.following or "",
            "sentinel-up": facts.sentinel_up,
            "sentinels-seen": facts.sentinels_seen,
            "sentinel-names": facts.sentinel_primary or "",
        }
        if name != cluster.primary and primary_offset is not None:
            entry["lag-bytes"] = max(primary_offset - facts.master_repl_offset, 0)
        members[name.replace("/", "-")] = entry
    return {
        "state": cluster.state.value,
        "primary": cluster.primary or "",
        "replicas": ",".join(m for m in cluster.members if m != cluster.primary),
        "epoch": cluster.epoch,
        "sentinel-epoch": cluster.sentinel_epoch,
        "generation": cluster.generation,
        "quorum": cluster.quorum,
        "sentinels": len([f for f in units.values() if f is not None and f.sentinel_up]),
        "note": cluster.note or "",
        "units": members,
        "source": "the facts each unit last persisted (peer data); offsets are as last seen",
    }


def history(loaded: journal.Journal, limit: int) -> dict[str, Any]:
    """The history result: the newest ``limit`` logged transitions, newest first."""
    entries = list(loaded.log)[-limit:][::-1]
    result: dict[str, Any] = {"count": len(entries), "current-state": loaded.current.state.value}
    for index, entry in enumerate(entries):
        result[f"entry-{index}"] = {
            "input": entry.input.event.value,
            "from-state": entry.before,
            "to-state": entry.after,
            "effects": ", ".join(entry.effects) or "none",
            "detail": json.dumps(input_detail(entry.input), sort_keys=True),
        }
    return result


def input_detail(machine_input: UnitInput | ClusterInput) -> dict[str, Any]:
    """What an input carried that explains a transition, in a few fields."""
    if isinstance(machine_input, UnitInput):
        observed = machine_input.observation.model_dump(mode="json", exclude_defaults=True)
        return {
            "observed": observed,
            "cluster-primary": machine_input.cluster.primary,
            "cluster-state": machine_input.cluster.state.value,
        }
    return {
        "subject": machine_input.subject,
        "members": {
            m.unit: f"{m.state.value} offset {m.master_repl_offset}"
            + (f" sentinel names {m.sentinel_primary}" if m.sentinel_primary else "")
            for m in machine_input.members
        },
    }
