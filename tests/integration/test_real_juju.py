"""Tests against a real Juju controller, with jubilant.

Skipped unless the ``juju`` CLI is installed and has a current controller; the
tests that run on every machine use real Pebble and redis without Juju. The HA
fault scenarios on a real controller are in ``test_real_juju_ha.py``.
"""

import pytest

from tests.integration.juju_support import (
    APP,
    REDIS_IMAGE,
    charm_path,
    skip_without_controller,
)

pytestmark = pytest.mark.integration

skip_without_controller()

import jubilant  # noqa: E402  (only needed when a controller is reachable)


def test_deploy_three_units_goes_active():
    charm = charm_path()
    with jubilant.temp_model() as juju:
        juju.deploy(charm, APP, num_units=3, resources={"redis-image": REDIS_IMAGE})
        juju.wait(jubilant.all_active, timeout=15 * 60)
