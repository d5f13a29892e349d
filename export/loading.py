"""Loads exported SavedModels, registering the ScaNN ops first when the model needs them."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfrs_model.errors import ExportError

if TYPE_CHECKING:
    from export.session_bundle import SessionBundle


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
    """Loads the SavedModel at `path` (a version directory) with the ScaNN ops registered, as a
    TF2 object (`.signatures` are concrete functions).

    Raises:
      ExportError: `path` is not a SavedModel directory.
      ScannOpsMissingError: the model uses ScaNN ops and `scann` cannot be imported here.
    """
    import tensorflow as tf

    return _load(Path(path), lambda directory: tf.saved_model.load(directory))


def load_session_bundle(
    path: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 0
) -> SessionBundle:
    """Loads the SavedModel at `path` (a version directory) with the ScaNN ops registered, the
    way TF Serving loads it (`export.session_bundle`), with sessions of `intra_op_threads` and
    `inter_op_threads` (0: TensorFlow's choice).

    Raises:
      ExportError: `path` is not a SavedModel directory.
      ScannOpsMissingError: the model uses ScaNN ops and `scann` cannot be imported here.
    """
    from export.session_bundle import load_session_bundle as load

    return _load(
        Path(path),
        functools.partial(
            load, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
        ),
    )


def _load(path: Path, load: Callable[[str], Any]) -> Any:
    if not (path / "saved_model.pb").is_file():
        raise ExportError(
            f"{path} is not a SavedModel version directory (no saved_model.pb); pass "
            "model_base_path/<version>, e.g. models/twotower/1"
        )
    scann_available = register_scann_ops()
    try:
        return load(str(path))
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
