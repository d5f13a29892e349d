"""Replays a version's warm-up requests before it serves, as TF Serving's --enable_model_warmup.

The file is `<version>/assets.extra/tf_serving_warmup_requests`, a TFRecord of
`tensorflow.serving.PredictionLog` (the exporter writes it, `export.warmup`). Each record's
`predict_log.request` runs against the loaded version with the checks of a real request.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from export.contract import ASSETS_EXTRA, WARMUP_FILE
from serving.server.config import TensorLimits
from serving.server.requests import StatusError, decode_inputs, invalid_argument
from serving.server.servable import Servable
from serving.status import status_code

# TF Serving refuses warm-up files with more records than this (kMaxNumRecords in warmup_util).
MAX_WARMUP_RECORDS = 1000


def replay_warmup(servable: Servable, limits: TensorLimits | int) -> int:
    """Replays `<version>/assets.extra/tf_serving_warmup_requests`; returns how many it ran.

    Each `predict_log.request` is run against `servable` (its model_spec name and version are
    ignored, as in TF Serving). No file: 0.

    Raises:
      StatusError: a record is not a predict_log, a request fails, the TFRecord is corrupt, or
        there are more than MAX_WARMUP_RECORDS records; the message names the file and record.
    """
    path = servable.path / ASSETS_EXTRA / WARMUP_FILE
    if not path.is_file():
        return 0
    count = 0
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if index >= MAX_WARMUP_RECORDS:
                raise invalid_argument(f"more than {MAX_WARMUP_RECORDS} records (TF's limit)")
            try:
                _replay_record(servable, record, limits)
            except StatusError as error:
                raise StatusError(error.code, f"record {index}: {error.message}") from error
            count += 1
    except StatusError as error:
        raise StatusError(error.code, f"warm-up file {path}: {error.message}") from error
    except tf.errors.OpError as error:  # e.g. DataLossError for a corrupt TFRecord
        raise StatusError(
            status_code(error.error_code), f"warm-up file {path}: {error.message}"
        ) from error
    return count


def _replay_record(servable: Servable, record: bytes, limits: TensorLimits | int) -> None:
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    if kind != "predict_log":
        raise invalid_argument(f"a {kind} record; only predict_log records are replayed")
    request = log.predict_log.request
    signature = servable.signature(request.model_spec.signature_name)
    inputs = decode_inputs(signature.name, signature.inputs, request.inputs, limits)
    signature.run(inputs, request.output_filter)
