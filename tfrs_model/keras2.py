"""Selects Keras 2 for TensorFlow: the one place the project does it (TFRS 0.7 needs Keras 2).

TensorFlow decides between Keras 2 (`tf_keras`) and Keras 3 from `TF_USE_LEGACY_KERAS` when
`tf.keras` is first used, so the variable is set before any module of the project imports
TensorFlow. When the caller has already loaded TensorFlow with Keras 3, or set the variable off,
nothing can be repaired from here: like TFRS' own `__init__`, this raises an ImportError that says
how to fix it instead of letting a Keras 3 object fail later with an obscure error.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "TF_USE_LEGACY_KERAS"
_ON = ("1", "true", "yes")


def select_keras_2() -> None:
    """Sets `TF_USE_LEGACY_KERAS=1` unless set, and checks that TensorFlow will honour it.

    Raises:
      ImportError: the variable is set to something other than 1/true, or TensorFlow was imported
        before and its `tf.keras` is Keras 3.
    """
    value = os.environ.setdefault(ENV_VAR, "1")
    if value.strip().lower() not in _ON:
        raise ImportError(
            f"twotower needs Keras 2 (TensorFlow Recommenders 0.7 does not run on Keras 3), but "
            f"{ENV_VAR}={value!r}; set {ENV_VAR}=1 (or unset it) before starting Python"
        )
    if "tensorflow" in sys.modules:
        version = _loaded_keras_version()
        if version is not None and version.startswith("3."):
            raise ImportError(
                f"TensorFlow was imported with Keras {version} before twotower; TensorFlow "
                f"Recommenders needs Keras 2: set {ENV_VAR}=1 in the environment before "
                "TensorFlow is first imported, or import twotower's packages first"
            )


def _loaded_keras_version() -> str | None:
    """The version of the Keras 3 behind an already imported `tf.keras`; None for Keras 2.

    Keras 3 answers `tf.keras.version()`; `tf_keras` (Keras 2) has no such function.
    """
    tensorflow = sys.modules["tensorflow"]
    try:
        return str(tensorflow.keras.version())
    except AttributeError:  # Keras 2, or a TensorFlow still being imported
        return None
