"""Shared test configuration.

Hypothesis runs without per-example deadlines: CI machines are shared and noisy, and speed is
measured by ``benchmarks/``, never by timed tests.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ulak",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("ulak")
