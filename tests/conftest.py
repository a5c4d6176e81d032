import os

import pytest
from hypothesis import HealthCheck, settings

from streams.core.rules import Rules, load_rules

# CI machines are shared and noisy: no per-example deadline; more examples on CI (within the
# suite's 25 minutes on a 2-core machine).
settings.register_profile("dev", deadline=None, max_examples=150)
settings.register_profile(
    "ci", deadline=None, max_examples=250, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules()
