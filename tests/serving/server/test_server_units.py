"""The embedded server's pure parts: the checks of request tensors, the REST JSON codec, the
config, the batch scheduler and the metrics. No servers, no SavedModels."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from export.specs import TensorSpec
from serving.server.batching import BatchScheduler, can_batch
from serving.server.config import ServingConfig, VersionPolicy
from serving.server.monitoring import ServingMetrics
from serving.server.requests import (
    StatusError,
    check_input_names,
    check_output_filter,
    decode_inputs,
    decode_tensor,
)
from serving.server.rest import (
    decode_json_inputs,
    encode_json_outputs,
    http_status,
    json_to_array,
    parse_predict_body,
)
from tfrs_model.errors import ConfigError

STRING_BATCH = TensorSpec(types_pb2.DT_STRING, (None,))

# --- request tensors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, float_val=[1, 2, 3], tensor_shape={"dim": [{"size": 2}]}
            ),
            "3 values do not fit shape [2]",
        ),
        (
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_content=b"\x00" * 5,
                tensor_shape={"dim": [{"size": 2}]},
            ),
            "tensor_content holds 5 bytes",
        ),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape={"unknown_rank": True}),
            "unknown rank",
        ),
    ],
    ids=["too-many-values", "short-content", "unknown-rank"],
)
def test_malformed_protos_are_invalid_argument(proto, message):
    with pytest.raises(StatusError, match="tensor parsing error") as caught:
        decode_tensor(proto)

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.message


def test_input_name_mismatch_names_the_extra_and_the_missing():
    with pytest.raises(StatusError) as caught:
        check_input_names("recommend", {"user_id", "history"}, {"user_id", "userid"})

    assert caught.value.message == (
        "input size does not match signature 'recommend': 2!=2 len({user_id,userid}) != "
        "len({history,user_id}). Sent extra: {userid}. Missing but required: {history}."
    )


def test_decode_inputs_checks_dtype_before_converting():
    protos = {"user_id": tf.make_tensor_proto([1, 2])}

    with pytest.raises(StatusError, match="has dtype DT_INT32, expected DT_STRING"):
        decode_inputs("serving_default", {"user_id": STRING_BATCH}, protos, limits=8)


@pytest.mark.parametrize(
    ("shape", "accepted"),
    [((3,), True), ((0,), True), ((), False), ((3, 1), False)],
)
def test_tensor_spec_accepts_any_batch_size_but_not_another_rank(shape, accepted):
    assert STRING_BATCH.accepts_shape(shape) is accepted
    assert TensorSpec(types_pb2.DT_STRING, None).accepts_shape(shape)  # unknown rank


def test_output_filter_defaults_to_all_outputs_sorted():
    assert check_output_filter("s", {"scores": 0, "item_ids": 0}, []) == ("item_ids", "scores")
    assert check_output_filter("s", {"scores": 0, "item_ids": 0}, ["scores"]) == ("scores",)


# --- REST JSON codec -------------------------------------------------------------------------


def test_row_format_single_input_stacks_the_instances():
    signature, request_format, payload = parse_predict_body(b'{"instances": ["a", "bc"]}')

    arrays = decode_json_inputs(signature, {"user_id": STRING_BATCH}, request_format, payload, 8)

    assert (signature, request_format) == ("", "row")
    assert arrays["user_id"].tolist() == [b"a", b"bc"]


def test_row_format_named_inputs_and_b64_values():
    specs = {"user_id": STRING_BATCH, "x": TensorSpec(types_pb2.DT_FLOAT, (None, 2))}
    payload = [{"user_id": {"b64": "AP8="}, "x": [1, 2.5]}, {"user_id": "é", "x": [0, 0]}]

    arrays = decode_json_inputs("s", specs, "row", payload, 8)

    assert arrays["user_id"].tolist() == [b"\x00\xff", "é".encode()]
    np.testing.assert_array_equal(arrays["x"], np.array([[1, 2.5], [0, 0]], dtype=np.float32))
    assert arrays["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        ([[1, 2], [3]], types_pb2.DT_FLOAT, "ragged"),
        ([1.5], types_pb2.DT_INT64, "expects integers"),
        ([True], types_pb2.DT_FLOAT, "expects numbers"),
        ([1], types_pb2.DT_STRING, "expects strings"),
        ([1], types_pb2.DT_BOOL, "expects true or false"),
        ([{"b64": "***"}], types_pb2.DT_STRING, "invalid base64"),
    ],
)
def test_json_values_of_the_wrong_type_are_rejected(value, dtype, message):
    with pytest.raises(StatusError, match=message):
        json_to_array(value, dtype, "x")


def test_several_inputs_must_be_named():
    specs = {"a": STRING_BATCH, "b": STRING_BATCH}

    with pytest.raises(StatusError, match="has 2 inputs"):
        decode_json_inputs("s", specs, "columnar", ["x"], 8)


def test_encode_row_and_columnar_answers_like_tf_serving():
    outputs = {
        "scores": np.array([[0.1, 2.0]], dtype=np.float32),
        "item_ids": np.array([[b"a", b"b"]], dtype=object),
        "raw_bytes": np.array([b"\x00"], dtype=object),
    }

    rows = encode_json_outputs(outputs, "row")
    columns = encode_json_outputs({"scores": outputs["scores"]}, "columnar")

    # float32 0.1 prints as 0.1, not 0.10000000149011612; "_bytes" keys travel as base64.
    assert rows == {
        "predictions": [
            {"scores": [0.1, 2.0], "item_ids": ["a", "b"], "raw_bytes": {"b64": "AA=="}}
        ]
    }
    assert columns == {"outputs": [[0.1, 2.0]]}


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
    ],
)
def test_http_status_follows_tf_serving(code, status):
    assert http_status(code) == status


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found", "served"),
    [
        ("latest", [1, 3, 2], {3}),
        ("latest:2", [1, 3, 2], {2, 3}),
        ("latest:5", [1], {1}),
        ("specific:1,4", [1, 2, 3], {1}),
        ("all", [1, 2], {1, 2}),
        ("latest", [], set()),
    ],
)
def test_version_policy_selects_like_tf_serving(text, found, served):
    assert VersionPolicy.parse(text).select(found) == served


@pytest.mark.parametrize("text", ["newest", "latest:0", "specific:", "specific:a", "all:2"])
def test_version_policy_rejects_malformed_text(text):
    with pytest.raises(ConfigError):
        VersionPolicy.parse(text)


@pytest.mark.parametrize(
    "overrides",
    [
        {"model_name": "a/b"},
        {"grpc_port": 70000},
        {"grpc_port": 9000, "rest_port": 9000},
        {"max_batch_size": 0},
        {"version_labels": {"stable": -1}},
        {"version_labels": {"7": 1}},
    ],
)
def test_serving_config_rejects_invalid_values(tmp_path, overrides):
    with pytest.raises(ConfigError):
        ServingConfig(model_base_path=tmp_path, **overrides)


def test_serving_config_labels_cannot_change_behind_its_back(tmp_path):
    labels = {"stable": 1}
    config = ServingConfig(model_base_path=tmp_path, version_labels=labels)

    labels["stable"] = 2

    assert config.version_labels["stable"] == 1
    with pytest.raises(TypeError):
        config.version_labels["canary"] = 3  # type: ignore[index]


# --- batching --------------------------------------------------------------------------------


class _RecordingModel:
    """Doubles its input; the first call waits for `release` so that later calls queue up."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs):
        self.started.set()
        self.release.wait(5)
        self.batch_sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def test_calls_queued_while_the_model_is_busy_run_as_one_batch():
    model = _RecordingModel()
    scheduler = BatchScheduler(model, max_batch_size=8, num_threads=1)
    results = {}

    def ask(i: int) -> None:
        results[i] = scheduler({"x": np.array([i, i], dtype=np.float32)})["y"]

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    model.started.wait(5)  # call 0 is running; calls 1-3 queue behind it
    others = [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for thread in others:
        thread.start()
    _wait_until(lambda: scheduler._queued_rows == 6)
    model.release.set()
    for thread in [first, *others]:
        thread.join()
    scheduler.close()

    # 2 rows for call 0 alone, then 3 calls of 2 rows merged into one model call of 6.
    assert model.batch_sizes == [2, 6]
    for i in range(4):
        np.testing.assert_array_equal(results[i], [2 * i, 2 * i])


def test_a_model_error_reaches_every_call_of_the_batch():
    def broken(inputs):
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "bad rows")

    scheduler = BatchScheduler(broken, max_batch_size=4)

    with pytest.raises(StatusError, match="bad rows"):
        scheduler({"x": np.zeros(1)})
    scheduler.close()


def test_a_call_gives_up_when_its_deadline_passes_in_the_queue():
    model = _RecordingModel()
    scheduler = BatchScheduler(model, max_batch_size=4, num_threads=1)
    blocker = threading.Thread(target=scheduler, args=({"x": np.zeros(1)},))
    blocker.start()
    model.started.wait(5)

    with pytest.raises(StatusError) as caught:
        scheduler({"x": np.zeros(1)}, deadline=time.monotonic() + 0.05)

    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    model.release.set()
    blocker.join()
    scheduler.close()


def test_after_close_calls_run_directly():
    model = _RecordingModel()
    model.release.set()
    scheduler = BatchScheduler(model, max_batch_size=4)
    scheduler.close()

    result = scheduler({"x": np.ones(3)})

    np.testing.assert_array_equal(result["y"], [2, 2, 2])


def test_only_signatures_batched_along_dimension_zero_can_batch():
    matrix = TensorSpec(types_pb2.DT_FLOAT, (None, 3))
    scalar = TensorSpec(types_pb2.DT_FLOAT, ())

    assert can_batch({"x": matrix}, {"y": matrix})
    assert not can_batch({"x": matrix, "delay": scalar}, {"y": matrix})
    assert not can_batch({"x": TensorSpec(types_pb2.DT_FLOAT, (2, 3))}, {"y": matrix})


def _wait_until(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


# --- metrics ---------------------------------------------------------------------------------


def test_each_server_counts_in_its_own_registry():
    first, second = ServingMetrics(), ServingMetrics()

    with first.request("Predict", "grpc") as record:
        record.model, record.signature, record.code = "m", "serving_default", "NOT_FOUND"

    page = first.exposition()[0].decode()
    assert (
        'serving_request_errors_total{api="Predict",code="NOT_FOUND",model="m",protocol="grpc",'
        'signature="serving_default"} 1.0' in page
    )
    assert 'serving_requests_in_flight{protocol="grpc"} 0.0' in page
    assert "serving_request_errors_total{" not in second.exposition()[0].decode()
