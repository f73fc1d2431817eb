"""Stable names for units: the host names redis and sentinel announce and resolve.

Rule 5 of the design: identity is a stable host name, never a pod IP. On
Kubernetes, Juju runs each unit as the pod ``<app>-<n>`` of a StatefulSet whose
headless service is ``<app>-endpoints``, so ``<app>-<n>.<app>-endpoints`` resolves
to the pod from every pod of the model whatever its IP after a restart. Redis
announces it (``replica-announce-ip``), Sentinel announces and resolves it
(``announce-hostnames``, ``resolve-hostnames``), and ``INFO replication`` and
``SENTINEL MASTERS`` report it back: ``unit_of`` turns it into the unit name the
machine speaks.

redis and sentinel listen on the pod's address as Juju's ``network-get`` gives
it (``own_host``), and a unit talks to its own redis and sentinel there (the
charm container shares the pod's network), which works before the pod is ready
and DNS publishes it. On Kubernetes that is the pod IP; on the local cluster,
the unit's own loopback address.
"""

from __future__ import annotations

import dataclasses
import re

from workload.config import FENCE_PRIMARY

_UNIT = re.compile(r"^([a-z][a-z0-9-]*)/([0-9]+)$")


@dataclasses.dataclass(frozen=True)
class Addressing:
    """How units of one application are named on the network."""

    app: str
    own_host: str = "127.0.0.1"
    """The address this unit's redis and sentinel listen on and are reached at."""

    def host_of(self, unit: str) -> str:
        """The stable host name of a unit: redis-k8s/0 is redis-k8s-0.redis-k8s-endpoints."""
        match = _UNIT.match(unit)
        if match is None or match.group(1) != self.app:
            raise ValueError(f"not a unit of {self.app}: {unit!r}")
        return f"{self.app}-{match.group(2)}.{self.app}-endpoints"

    def unit_of(self, host: str | None) -> str | None:
        """The unit a host name (as redis or sentinel report it) belongs to, if any.

        The fence address, an IP or a name of another application give None.
        """
        if not host or host == FENCE_PRIMARY[0]:
            return None
        first_label = host.split(".", 1)[0]
        prefix = f"{self.app}-"
        number = first_label[len(prefix) :]
        if not first_label.startswith(prefix) or not number.isdigit():
            return None
        if "." in host and host.split(".", 2)[1] != f"{self.app}-endpoints":
            return None
        return f"{self.app}/{int(number)}"
