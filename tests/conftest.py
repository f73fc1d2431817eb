"""Shared test settings: hypothesis profiles.

``ci`` (the default) checks 2,000 cluster histories in about a minute, derandomized so
that CI is reproducible (the same histories every run);
``quick`` finds failures without shrinking them (for mutation checks);
``long`` runs ten times as many, random ones, on demand:
``HYPOTHESIS_PROFILE=long uv run --frozen pytest tests/state``.
"""

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
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
settings.register_profile(
    "quick",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
