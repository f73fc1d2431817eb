"""Shared test settings: hypothesis profiles.

``ci`` (the default) checks at least 2,000 cluster histories in a few minutes;
``long`` runs ten times as many, on demand:
``HYPOTHESIS_PROFILE=long uv run --frozen pytest tests/state``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
