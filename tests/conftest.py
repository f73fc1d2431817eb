"""Shared test settings: hypothesis profiles, and the figures the HA tests report.

``ci`` (the default) checks 2,000 cluster histories in about a minute, derandomized so
that CI is reproducible (the same histories every run);
``quick`` finds failures without shrinking them (for mutation checks);
``long`` runs ten times as many, random ones, on demand:
``HYPOTHESIS_PROFILE=long uv run --frozen pytest tests/state``.
"""

import os
import sys

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


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the figures the integration tests recorded (``record_figure``), CI's run included.

    Test output is captured; these lines (writes acknowledged, lost, pauses) are
    what the HA claims rest on, so every run shows them at its end.
    """
    support = sys.modules.get("tests.integration.cluster_support")
    figures = getattr(support, "FIGURES", [])
    if figures:
        terminalreporter.section("figures recorded by the tests")
        for line in figures:
            terminalreporter.write_line(line)
