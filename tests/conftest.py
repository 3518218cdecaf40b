"""Shared test set-up: the hypothesis profiles and TensorFlow's quiet import."""

from __future__ import annotations

import os

# TensorFlow's C++ logging is noise in test output; must be set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import HealthCheck, settings  # noqa: E402

# CI: the same examples every run (derandomize), a fixed budget, and no deadline
# because the first call of each Numba kernel includes its JIT compile.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Local development: more examples, still no deadline (JIT warm-up).
settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
