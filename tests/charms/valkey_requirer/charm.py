"""A requirer charm of ``valkey_client`` built on ``ResourceRequirerEventHandler`` only.

It asks for the key prefix ``app:`` and records every response it is told about
(``resource_created``, ``endpoints_changed``, ``read_only_endpoints_changed``) in
``RECEIVED``, which the tests read. Nothing in it knows redis-k8s.
"""

from __future__ import annotations

import ops
from dpcharmlibs.interfaces import (
    RequirerCommonModel,
    ResourceRequirerEventHandler,
    ValkeyResponseModel,
)

PREFIX = "app:"
RECEIVED: list[tuple[str, dict]] = []
"""(event name, what the response carried) for every event the handler emitted."""


class ValkeyRequirerCharm(ops.CharmBase):
    """Asks for a user on keys ``app:*`` and keeps what it is told."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.valkey = ResourceRequirerEventHandler(
            self,
            "valkey",
            [RequirerCommonModel(resource=PREFIX)],
            response_model=ValkeyResponseModel,
        )
        on = self.valkey.on
        framework.observe(on.resource_created, self._record)
        framework.observe(on.endpoints_changed, self._record)
        framework.observe(on.read_only_endpoints_changed, self._record)

    def _record(self, event) -> None:
        response: ValkeyResponseModel = event.response
        RECEIVED.append(
            (
                type(event).__name__,
                {
                    "username": response.username,
                    "password": response.password,
                    "endpoints": response.endpoints,
                    "read-only-endpoints": response.read_only_endpoints,
                    "sentinel-endpoints": response.sentinel_endpoints,
                    "mode": response.mode,
                    "version": response.version,
                    "tls": response.tls,
                    "master-name": (response.model_extra or {}).get("master-name"),
                },
            )
        )
