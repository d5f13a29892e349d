"""Test-wide set-up: Keras 2 for TFRS, quiet TensorFlow, deterministic seeds."""

import os

# Must happen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
