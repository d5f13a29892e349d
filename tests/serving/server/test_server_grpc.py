"""The embedded server through TF Serving's official stubs and its REST API, on loopback.

One server (module scope) serves versions 1 and 2 of the tiny model (see tests/fixtures/servers.py), with the
labels stable -> 1 and canary -> 3 (3 is never loaded).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from export.contract import EMBEDDING, ITEM_IDS, QUERY_EMBEDDING, SCORES, SERVING_DEFAULT, USER_ID
from serving.server.server import EmbeddedServer

pytestmark = pytest.mark.integration

TIMEOUT = 10


def _predict(stubs, request, timeout=TIMEOUT):
    return stubs.prediction.Predict(request, timeout=timeout)


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_predict_returns_hand_computed_outputs_of_the_latest_version(shared_stubs, tiny):
    response = _predict(shared_stubs, tiny.predict_request(["ab", "cde"]))

    # Latest of {1, 2} is 2: scores[i][j] = 10 * 2 + len(user) - j.
    assert response.model_spec.name == tiny.model_name
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == SERVING_DEFAULT
    ids = tf.make_ndarray(response.outputs[ITEM_IDS])
    scores = tf.make_ndarray(response.outputs[SCORES])
    assert ids.tolist() == [[b"ab/0", b"ab/1", b"ab/2"], [b"cde/0", b"cde/1", b"cde/2"]]
    np.testing.assert_array_equal(scores, [[22, 21, 20], [23, 22, 21]])
    # Typed value fields, as TF Serving writes them, for clients that read them directly.
    assert list(response.outputs[SCORES].float_val) == [22, 21, 20, 23, 22, 21]


def test_predict_equals_the_in_process_call(shared_server, shared_stubs, tiny):
    users = ["u1", "user-two", ""]
    request = tiny.predict_request(users, signature=QUERY_EMBEDDING)
    request.model_spec.version.value = 1

    response = _predict(shared_stubs, request)

    loaded = tf.saved_model.load(str(shared_server.manager.resolve(tiny.model_name, 1).path))
    local = loaded.signatures[QUERY_EMBEDDING](user_id=tf.constant(users))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs[EMBEDDING]), local[EMBEDDING])
    # embedding = [len(user), version]
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs[EMBEDDING]), [[2, 1], [8, 1], [0, 1]]
    )


def test_output_filter_returns_only_the_named_outputs(shared_stubs, tiny):
    request = tiny.predict_request(["ab"])
    request.output_filter.append(SCORES)

    response = _predict(shared_stubs, request)

    assert list(response.outputs) == [SCORES]


def test_version_label_selects_the_labelled_version(shared_stubs, tiny):
    request = tiny.predict_request(["ab"])
    request.model_spec.version_label = "stable"

    response = _predict(shared_stubs, request)

    assert response.model_spec.version.value == 1
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs[SCORES]), [[12, 11, 10]])


def _with(request, edit):
    edit(request)
    return request


@pytest.mark.parametrize(
    ("edit", "code", "message"),
    [
        (
            lambda r: setattr(r.model_spec, "name", "nope"),
            grpc.StatusCode.NOT_FOUND,
            "Latest(nope)",
        ),
        (
            lambda r: setattr(r.model_spec.version, "value", 7),
            grpc.StatusCode.NOT_FOUND,
            "Specific(tiny, 7)",
        ),
        (
            lambda r: setattr(r.model_spec, "version_label", "canary"),
            grpc.StatusCode.NOT_FOUND,
            "Specific(tiny, 3)",
        ),
        (
            lambda r: setattr(r.model_spec, "version_label", "beta"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: beta",
        ),
        (
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found',
        ),
        (
            lambda r: r.inputs.pop(USER_ID),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing but required: {user_id}",
        ),
        (
            lambda r: r.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Sent extra: {extra}",
        ),
        (
            lambda r: r.inputs[USER_ID].CopyFrom(tf.make_tensor_proto([1.0])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has dtype DT_FLOAT, expected DT_STRING",
        ),
        (
            lambda r: r.inputs[USER_ID].CopyFrom(tf.make_tensor_proto([["a"]])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has shape [1, 1], expected DT_STRING [-1]",
        ),
        (
            lambda r: r.output_filter.append("nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature 'serving_default': nope",
        ),
        (
            lambda r: r.output_filter.extend([SCORES, SCORES]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias",
        ),
        (
            # max_batch_size is 8 in the test config.
            lambda r: r.inputs[USER_ID].CopyFrom(tf.make_tensor_proto(["u"] * 9)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "batch size 9, over this server's max_batch_size of 8",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-version",
        "label-of-unloaded-version",
        "unknown-label",
        "unknown-signature",
        "missing-input",
        "extra-input",
        "wrong-dtype",
        "wrong-shape",
        "bad-output-filter",
        "duplicate-output-filter",
        "batch-too-large",
    ],
)
def test_predict_errors_have_tf_serving_codes_and_say_what_was_wrong(
    shared_stubs, tiny, edit, code, message
):
    request = _with(tiny.predict_request(["ab"]), edit)

    error = _error(lambda: _predict(shared_stubs, request))

    assert error.code() == code
    assert message in error.details()


def test_message_over_the_size_limit_is_invalid_argument_naming_the_limit(
    tmp_path, tiny, write_version
):
    write_version(tmp_path, 1)
    server = EmbeddedServer(tiny.config(tmp_path, max_message_bytes=1000, rest_port=None))
    server.start()
    stubs = tiny.Stubs(server.ports.grpc)
    try:
        request = tiny.predict_request(["x" * 1500])

        error = _error(lambda: _predict(stubs, request))

        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_message_bytes of 1000" in error.details()
    finally:
        stubs.close()
        server.stop(1)


def test_deadline_exceeded_while_running_is_reported_and_counted(shared_server, shared_stubs, tiny):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = tiny.model_name
    request.model_spec.signature_name = tiny.slow
    request.inputs[USER_ID].CopyFrom(tf.make_tensor_proto(["a"]))
    request.inputs["delay_s"].CopyFrom(tf.make_tensor_proto(0.5, dtype=tf.float32))

    error = _error(lambda: _predict(shared_stubs, request, timeout=0.1))

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server notices too once the model returns, and counts the call as DEADLINE_EXCEEDED.
    metrics_line = (
        'serving_request_errors_total{api="Predict",code="DEADLINE_EXCEEDED",model="tiny",'
        'protocol="grpc",signature="slow"} 1.0'
    )
    assert tiny.wait_for(lambda: metrics_line in shared_server.metrics.exposition()[0].decode())


def test_get_model_metadata_returns_the_signature_defs_packed_like_tf_serving(shared_stubs, tiny):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = tiny.model_name

    response = shared_stubs.prediction.GetModelMetadata(request, timeout=TIMEOUT)

    assert response.model_spec.name == tiny.model_name
    assert response.model_spec.version.value == 2
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_defs)
    defs = signature_defs.signature_def
    assert {SERVING_DEFAULT, QUERY_EMBEDDING, tiny.affine, tiny.slow} <= set(defs)
    default = defs[SERVING_DEFAULT]
    assert default.method_name == "tensorflow/serving/predict"
    assert set(default.inputs) == {USER_ID}
    assert default.inputs[USER_ID].dtype == tf.string.as_datatype_enum
    assert [d.size for d in default.inputs[USER_ID].tensor_shape.dim] == [-1]
    assert set(default.outputs) == {ITEM_IDS, SCORES}
    assert [d.size for d in default.outputs[SCORES].tensor_shape.dim] == [-1, tiny.k]


@pytest.mark.parametrize(
    ("fields", "message"),
    [([], "at least one metadata_field"), (["nope"], "Metadata field nope is not supported")],
)
def test_get_model_metadata_rejects_missing_or_unknown_fields(shared_stubs, tiny, fields, message):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = tiny.model_name

    error = _error(lambda: shared_stubs.prediction.GetModelMetadata(request, timeout=TIMEOUT))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_get_model_status_lists_versions_highest_first(shared_stubs, tiny):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = tiny.model_name

    response = shared_stubs.model.GetModelStatus(request, timeout=TIMEOUT)

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0),
        (1, available, 0),
    ]


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("nope", None, "Could not find any versions of model nope"),
        ("tiny", 5, "Could not find version 5"),
    ],
)
def test_get_model_status_not_found(shared_stubs, name, version, message):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version

    error = _error(lambda: shared_stubs.model.GetModelStatus(request, timeout=TIMEOUT))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert message in error.details()


def test_health_is_serving_once_a_version_is_available(shared_stubs):
    stub = health_pb2_grpc.HealthStub(shared_stubs.channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


# REST ------------------------------------------------------------------------------------------


def _http(server, path: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{server.ports.rest}{path}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data), timeout=TIMEOUT
        ) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_rest_predict_row_format_answers_predictions(shared_server):
    status, text = _http(shared_server, "/v1/models/tiny:predict", {"instances": ["ab", "c"]})

    assert status == 200
    assert json.loads(text) == {
        "predictions": [
            {"item_ids": ["ab/0", "ab/1", "ab/2"], "scores": [22.0, 21.0, 20.0]},
            {"item_ids": ["c/0", "c/1", "c/2"], "scores": [21.0, 20.0, 19.0]},
        ]
    }


def test_rest_predict_columnar_format_with_version_and_named_inputs(shared_server):
    body = {"signature_name": "affine", "inputs": {"x": [[1.0, 2.0, 3.0], [0.5, 0, -1]]}}

    status, text = _http(shared_server, "/v1/models/tiny/versions/1:predict", body)

    # y = 2x + 1 for version 1; one output, so "outputs" is its value.
    assert status == 200
    assert json.loads(text) == {"outputs": [[3.0, 5.0, 7.0], [2.0, 1.0, -1.0]]}


def test_rest_predict_by_label_with_named_instances(shared_server):
    body = {"signature_name": QUERY_EMBEDDING, "instances": [{"user_id": "abc"}]}

    status, text = _http(shared_server, "/v1/models/tiny/labels/stable:predict", body)

    assert status == 200
    assert json.loads(text) == {"predictions": [[3.0, 1.0]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", {"instances": ["a"]}, 404, "Latest(nope)"),
        ("/v1/models/tiny:predict", {"signature_name": "x", "instances": ["a"]}, 400, "not found"),
        ("/v1/models/tiny:predict", {"instances": [1.5]}, 400, "expects strings"),
        ("/v1/models/tiny:predict", {"inputs": ["a"], "instances": ["a"]}, 400, "exactly one"),
        ("/v1/models/tiny:predict", {"instances": ["u"] * 9}, 400, "max_batch_size of 8"),
        ("/v1/models/tiny:regress", {"instances": ["a"]}, 501, "not supported"),
    ],
)
def test_rest_errors_use_tf_serving_http_codes(shared_server, path, body, status, message):
    got_status, text = _http(shared_server, path, body)

    assert got_status == status
    assert message in json.loads(text)["error"]


def test_rest_model_status_is_tf_serving_json(shared_server):
    status, text = _http(shared_server, "/v1/models/tiny/versions/1")

    assert status == 200
    assert json.loads(text) == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_rest_metadata_unpacks_the_signature_defs(shared_server):
    status, text = _http(shared_server, "/v1/models/tiny/metadata")

    assert status == 200
    document = json.loads(text)
    assert document["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
    signature_defs = document["metadata"]["signature_def"]["signature_def"]
    assert signature_defs[SERVING_DEFAULT]["inputs"][USER_ID]["dtype"] == "DT_STRING"
    # It parses back into the proto TF Serving packs.
    json_format.ParseDict(
        document["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )


def test_metrics_page_counts_requests_and_errors_by_code(shared_server):
    _http(shared_server, "/v1/models/tiny:predict", {"instances": ["ab"]})
    _http(shared_server, "/v1/models/nope:predict", {"instances": ["ab"]})

    status, text = _http(shared_server, "/monitoring/prometheus/metrics")

    assert status == 200
    assert (
        'serving_requests_total{api="Predict",model="tiny",protocol="rest",'
        'signature="serving_default"}' in text
    )
    # An unknown model name is counted under "_unknown", so clients cannot grow the label set.
    assert (
        'serving_request_errors_total{api="Predict",code="NOT_FOUND",model="_unknown",'
        'protocol="rest",signature=""}' in text
    )
    assert 'serving_request_latency_seconds_bucket{api="Predict"' in text
    assert 'serving_model_available_version{model="tiny"} 2.0' in text
