"""Loads exported SavedModels, registering the ScaNN ops first when the model needs them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tfrs_model.errors import ExportError


class ScannOpsMissingError(ExportError):
    """The SavedModel holds ScaNN ops but they are not registered in this process."""


def register_scann_ops() -> bool:
    """Imports `scann`, which registers its TensorFlow ops. Returns False if it is not installed."""
    try:
        importlib.import_module("scann")
    except ImportError:
        return False
    return True


def load_saved_model(path: str | Path) -> Any:
    """Loads the SavedModel at `path` (a version directory) with the ScaNN ops registered.

    Raises:
      ExportError: `path` is not a SavedModel directory.
      ScannOpsMissingError: the model uses ScaNN ops and `scann` cannot be imported here.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ExportError(
            f"{path} is not a SavedModel version directory (no saved_model.pb); pass "
            "model_base_path/<version>, e.g. models/twotower/1"
        )
    scann_available = register_scann_ops()
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path))
    except Exception as error:  # TF raises NotFoundError or ValueError depending on the op path.
        if "Scann" in str(error) and ("not registered" in str(error) or "Op type" in str(error)):
            hint = (
                "install it with `pip install scann[tf]==1.4.2`"
                if not scann_available
                else "the installed scann was not compiled for this TensorFlow version"
            )
            raise ScannOpsMissingError(
                f"{path} uses ScaNN ops (Scann>*) that are not registered in this process: "
                f"`import scann` before loading; {hint}. Or export with --index brute-force, "
                "which needs only core TensorFlow ops."
            ) from error
        raise
