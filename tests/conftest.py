"""Test-wide set-up: Keras 2 for TFRS, quiet TensorFlow, shared fixtures.

Fixtures shared across test packages live in `tests/fixtures/` (the plugins below), never in a
test module that another one imports.
"""

import os

# Must happen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["fixtures.core", "fixtures.exports", "fixtures.servers"]
