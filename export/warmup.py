"""TF Serving's warm-up file: requests replayed when a version loads, before it takes traffic.

The file is `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord of
`tensorflow.serving.PredictionLog` protos; each record's `predict_log.request` is a
`PredictRequest` (model_spec name and signature_name, inputs as `TensorProto`s). TF Serving reads
at most 1000 records, so `write_warmup_file` refuses more.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tfrs_model.errors import ExportError

# TF Serving's limit on warm-up records (kMaxNumRecords in servables/tensorflow/saved_model_warmup_util).
MAX_WARMUP_RECORDS = 1000


@dataclasses.dataclass(frozen=True)
class WarmupRequest:
    """One Predict request to replay.

    Attributes:
      model_name: model_spec.name, e.g. contract.DEFAULT_MODEL_NAME ("twotower").
      signature_name: a key of contract.ALL_SIGNATURES, e.g. "serving_default".
      inputs: input key -> array; strings as bytes (object or `S` dtype) or str, numbers with
        the dtype the signature expects (int32, int64, float32, ...). Shapes include the batch.
    """

    model_name: str
    signature_name: str
    inputs: Mapping[str, np.ndarray]


def write_warmup_file(path: str | Path, requests: Sequence[WarmupRequest]) -> Path:
    """Writes `requests` as TF Serving's warm-up TFRecord at `path` (created with its parents).

    The file is written to a temporary sibling and renamed, so it is never seen half-written.

    Args:
      path: the file, normally `<version>/assets.extra/tf_serving_warmup_requests`.
      requests: 1 to 1000 requests, in replay order.

    Returns:
      `path`.

    Raises:
      ExportError: no requests, more than 1000, or a request without a model name, signature
        name or inputs, or with an input numpy cannot turn into a TensorProto.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(path)
    if not requests:
        raise ExportError("no warm-up requests to write; pass at least one or write no file")
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ExportError(
            f"{len(requests)} warm-up requests, but TF Serving reads at most "
            f"{MAX_WARMUP_RECORDS} records from {path.name}; pass at most {MAX_WARMUP_RECORDS} "
            "(a few per signature is enough to warm every graph)"
        )
    records = []
    for number, request in enumerate(requests):
        if not request.model_name or not request.signature_name or not request.inputs:
            raise ExportError(
                f"warm-up request {number} needs a model_name, a signature_name and at least one "
                f"input (got {request.model_name!r}, {request.signature_name!r}, "
                f"{sorted(request.inputs)})"
            )
        log = prediction_log_pb2.PredictionLog()
        predict = log.predict_log.request
        predict.model_spec.name = request.model_name
        predict.model_spec.signature_name = request.signature_name
        for key, value in request.inputs.items():
            try:
                predict.inputs[key].CopyFrom(tf.make_tensor_proto(_as_array(value)))
            except (TypeError, ValueError) as error:
                raise ExportError(
                    f"warm-up request {number} ({request.signature_name}): input {key!r} cannot "
                    f"be converted to a TensorProto: {error}"
                ) from error
        records.append(log.SerializeToString())

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in records:
                writer.write(record)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_warmup_file(path: str | Path) -> list[WarmupRequest]:
    """Reads a warm-up file back; string tensors come back as object arrays of bytes.

    Raises:
      ExportError: the file is missing or corrupt, or a record is not a predict_log.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no warm-up file at {path}")
    requests = []
    try:
        for number, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") != "predict_log":
                raise ExportError(
                    f"{path}: record {number} is a {log.WhichOneof('log_type')}, not a predict_log"
                )
            predict = log.predict_log.request
            requests.append(
                WarmupRequest(
                    model_name=predict.model_spec.name,
                    signature_name=predict.model_spec.signature_name,
                    inputs={key: tf.make_ndarray(value) for key, value in predict.inputs.items()},
                )
            )
    except tf.errors.OpError as error:
        raise ExportError(f"{path} is not a readable TFRecord file: {error.message}") from error
    except ValueError as error:  # protobuf DecodeError is a ValueError
        raise ExportError(f"{path}: a record is not a PredictionLog: {error}") from error
    return requests


def _as_array(value: np.ndarray) -> np.ndarray:
    """Keeps numeric dtypes; encodes str to UTF-8 bytes (TensorProto strings are bytes)."""
    array = np.asarray(value)
    if array.dtype.kind == "U" or (
        array.dtype == object and any(isinstance(v, str) for v in array.ravel())
    ):
        return np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(
            array
        )
    return array
