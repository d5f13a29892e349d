"""Tests for export.warmup: TF Serving's warm-up file, written and read back."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from export import contract
from export.warmup import MAX_WARMUP_RECORDS, WarmupRequest, read_warmup_file, write_warmup_file
from tfrs_model.errors import ExportError


def _requests():
    return [
        WarmupRequest(
            contract.DEFAULT_MODEL_NAME,
            contract.RECOMMEND,
            {
                contract.USER_ID: np.array([b"u1", b"u2"], dtype=object),
                contract.EXCLUDE: np.array([["i1", ""], ["i2", "i3"]]),  # str -> bytes
                "k": np.array(5, dtype=np.int32),
                "embedding": np.arange(6, dtype=np.float32).reshape(2, 3),
                "rows": np.array([[1, 2]], dtype=np.int64),
            },
        ),
        WarmupRequest(
            contract.DEFAULT_MODEL_NAME,
            contract.SERVING_DEFAULT,
            {contract.USER_ID: np.array([b"u3"], dtype=object)},
        ),
    ]


def test_round_trip_preserves_names_dtypes_and_values(tmp_path):
    path = tmp_path / contract.ASSETS_EXTRA / contract.WARMUP_FILE
    assert write_warmup_file(path, _requests()) == path
    first, second = read_warmup_file(path)
    assert (first.model_name, first.signature_name) == ("twotower", "recommend")
    assert second.signature_name == "serving_default"
    inputs = first.inputs
    assert inputs[contract.USER_ID].dtype == object
    assert inputs[contract.USER_ID].tolist() == [b"u1", b"u2"]
    assert inputs[contract.EXCLUDE].tolist() == [[b"i1", b""], [b"i2", b"i3"]]
    assert inputs["k"].dtype == np.int32 and inputs["k"].shape == () and inputs["k"] == 5
    assert inputs["embedding"].dtype == np.float32
    np.testing.assert_array_equal(inputs["embedding"], np.arange(6).reshape(2, 3))
    assert inputs["rows"].dtype == np.int64 and inputs["rows"].shape == (1, 2)


def test_records_parse_as_prediction_logs_like_tf_serving_reads_them(tmp_path):
    path = write_warmup_file(tmp_path / "warmup", _requests())
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == 2
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    assert log.WhichOneof("log_type") == "predict_log"
    request = log.predict_log.request
    assert request.model_spec.name == "twotower"
    assert request.model_spec.signature_name == "recommend"
    assert request.inputs[contract.USER_ID].dtype == tf.string.as_datatype_enum
    assert request.inputs["k"].dtype == tf.int32.as_datatype_enum
    assert [d.size for d in request.inputs["embedding"].tensor_shape.dim] == [2, 3]


def test_exactly_the_limit_is_accepted_and_one_more_rejected(tmp_path):
    one = _requests()[1]
    path = write_warmup_file(tmp_path / "ok", [one] * MAX_WARMUP_RECORDS)
    assert len(read_warmup_file(path)) == 1000
    with pytest.raises(ExportError, match="at most 1000"):
        write_warmup_file(tmp_path / "too_many", [one] * (MAX_WARMUP_RECORDS + 1))
    assert not (tmp_path / "too_many").exists()


@pytest.mark.parametrize(
    ("requests", "fragment"),
    [
        ([], "no warm-up requests"),
        ([WarmupRequest("", "recommend", {"x": np.zeros(1)})], "needs a model_name"),
        ([WarmupRequest("twotower", "recommend", {})], "at least one input"),
    ],
)
def test_invalid_requests_are_rejected(tmp_path, requests, fragment):
    with pytest.raises(ExportError, match=fragment):
        write_warmup_file(tmp_path / "warmup", requests)


def test_reading_a_missing_or_corrupt_file_raises(tmp_path):
    with pytest.raises(ExportError, match="no warm-up file"):
        read_warmup_file(tmp_path / "absent")
    corrupt = tmp_path / "corrupt"
    corrupt.write_bytes(b"not a tfrecord at all")
    with pytest.raises(ExportError):
        read_warmup_file(corrupt)
