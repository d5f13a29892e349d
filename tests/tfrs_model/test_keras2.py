"""Keras 2 is selected in one place (tfrs_model.keras2), and a process that cannot get it is told why.

Each case runs in a fresh interpreter: the choice is made once, when TensorFlow first loads Keras.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300
    )


def test_importing_any_package_first_selects_keras_2():
    done = _python(
        "import serving, tensorflow as tf, os; "
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)"
    )
    assert done.returncode == 0, done.stderr
    flag, keras = done.stdout.split()
    assert flag == "1" and keras.startswith("tf_keras.")  # Keras 2; Keras 3 is keras._tf_keras


def test_an_explicit_setting_off_is_refused_with_the_fix():
    done = _python("import tfrs_model", TF_USE_LEGACY_KERAS="0")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: twotower needs Keras 2")
    assert "set TF_USE_LEGACY_KERAS=1" in last


@pytest.mark.slow
def test_tensorflow_already_on_keras_3_is_refused_with_the_fix():
    done = _python("import tensorflow as tf; tf.keras.layers.Dense; import export")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: TensorFlow was imported with Keras 3.")
    assert "set TF_USE_LEGACY_KERAS=1" in last
