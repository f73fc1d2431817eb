"""Bounded waiting and free ports, shared by the integration tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    what: str,
    timeout: float = 10.0,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    The exceptions in ``retry_on`` (a server not up yet) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except retry_on:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for: {what}")
        time.sleep(0.05)


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]
