"""One loaded version of a model: its callable signatures and the SignatureDefs it was saved with.

`load_servable` loads a version directory as TF Serving does (`export.session_bundle`: a session
over the "serve" MetaGraph, init op run; ScaNN ops registered first by `export.loading`) and reads
each signature's input and output specs from its SignatureDef. A `Signature` runs on checked
numpy inputs (`serving.server.requests.decode_inputs`), feeding and fetching the signature's
tensors by name, and fails with `StatusError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2

from export.contract import SERVING_DEFAULT
from export.loading import load_session_bundle
from export.specs import TensorSpec
from serving.server.batching import BatchScheduler
from serving.server.requests import StatusError, check_output_filter, invalid_argument
from serving.status import status_code


@dataclass(frozen=True)
class Signature:
    """One callable signature of a loaded SavedModel.

    Attributes:
      name: the signature key, e.g. "serving_default".
      inputs, outputs: tensor key -> declared dtype and shape.
      runner: runs the model once: (arrays by input key, output keys) -> arrays by output key;
        raises `tf.errors.OpError` when the graph fails, ValueError or TypeError for inputs
        that do not fit.
      batcher: merges concurrent calls when batching is on and the signature allows it.
    """

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    runner: Callable[[Mapping[str, np.ndarray], Sequence[str]], Mapping[str, np.ndarray]] = field(
        repr=False
    )
    batcher: BatchScheduler | None = field(default=None, repr=False)

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs the signature on checked inputs (see `serving.server.requests.decode_inputs`).

        Args:
          inputs: one array per input key, of the declared dtype and a compatible shape.
          output_filter: the output keys to return; empty returns all.
          deadline: `time.monotonic()` value after which the answer is of no use.

        Returns:
          The requested outputs as numpy arrays (DT_STRING as object arrays of bytes).

        Raises:
          StatusError: INVALID_ARGUMENT for a bad output_filter or inputs the model rejects,
            DEADLINE_EXCEEDED when `deadline` passed, or the model's own error code.
        """
        names = check_output_filter(self.name, self.outputs, output_filter)
        check_deadline(deadline, f"before running signature {self.name!r}")
        if self.batcher is not None:
            outputs = self.batcher(inputs, deadline)
        else:
            outputs = self.call(inputs, names)
        check_deadline(deadline, f"while running signature {self.name!r}")
        return {key: outputs[key] for key in names}

    def call(
        self, inputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Calls the model once, unbatched; returns the outputs `names` (default all).

        Raises:
          StatusError: the model's error code, or INVALID_ARGUMENT for inputs it rejects.
        """
        keys = list(self.outputs if names is None else names)
        try:
            result = self.runner(inputs, keys)
        except tf.errors.OpError as error:
            raise StatusError(
                status_code(error.error_code), f"signature {self.name!r}: {error.message}"
            ) from error
        except (TypeError, ValueError) as error:  # raised before the graph runs, on bad inputs
            raise invalid_argument(f"signature {self.name!r}: {error}") from error
        return {key: result[key] for key in keys}


@dataclass(frozen=True)
class Servable:
    """One loaded, warmed-up version of the model.

    Attributes:
      name, version, path: the model name, the version number and its directory.
      signatures: callable signatures by key.
      signature_def_map: the SavedModel's SignatureDefs as written, for GetModelMetadata.
      model: the loaded session bundle; holding it keeps its session open.
    """

    name: str
    version: int
    path: Path
    signatures: Mapping[str, Signature]
    signature_def_map: get_model_metadata_pb2.SignatureDefMap = field(repr=False)
    model: Any = field(repr=False)

    def signature(self, name: str) -> Signature:
        """The signature `name`; "" means "serving_default", as in TF Serving.

        Raises:
          StatusError: FAILED_PRECONDITION, the model has no such signature.
        """
        key = name or SERVING_DEFAULT
        signature = self.signatures.get(key)
        if signature is None:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{key}" not found. Version {self.version} of model '
                f"{self.name!r} has signatures: {', '.join(sorted(self.signatures))}",
            )
        return signature

    def close(self) -> None:
        """Stops the batch schedulers; calls still arriving then run unbatched."""
        for signature in self.signatures.values():
            if signature.batcher is not None:
                signature.batcher.close()


def check_deadline(deadline: float | None, stage: str) -> None:
    """Raises StatusError DEADLINE_EXCEEDED when the `time.monotonic()` deadline has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded {stage}")


def load_servable(
    name: str, version: int, path: Path, intra_op_threads: int = 0, inter_op_threads: int = 0
) -> Servable:
    """Loads the SavedModel in the version directory `path` as TF Serving does, in a session
    with `intra_op_threads` and `inter_op_threads` (0: TensorFlow's choice).

    Raises:
      ExportError: `path` holds no saved_model.pb.
      Exception: whatever TensorFlow raises for a SavedModel it cannot load (no MetaGraph
        tagged "serve", an op not registered here, ...).
    """
    bundle = load_session_bundle(path, intra_op_threads, inter_op_threads)
    signatures = {
        key: Signature(
            key,
            signature.specs.inputs,
            signature.specs.outputs,
            partial(bundle.run, key),
        )
        for key, signature in bundle.signatures.items()
    }
    return Servable(
        name=name,
        version=version,
        path=path,
        signatures=signatures,
        signature_def_map=get_model_metadata_pb2.SignatureDefMap(
            signature_def=bundle.signature_defs
        ),
        model=bundle,
    )
