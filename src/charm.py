#!/usr/bin/env python3
"""Charm entry point for redis-k8s: thin glue between Juju events and the machine.

This module owns nothing but wiring: it turns Juju events into inputs for the
event-sourced state machine (``src/machine``) and hands the resulting effects to
``src/workload``, which owns every side effect. It holds no decisions. For now
it is a placeholder; the real wiring comes with the next issue.
"""

import logging

import ops

logger = logging.getLogger(__name__)


class RedisK8sCharm(ops.CharmBase):
    """Redis with Redis Sentinel on Kubernetes (placeholder: observes no events yet)."""


if __name__ == "__main__":  # pragma: nocover
    ops.main(RedisK8sCharm)
