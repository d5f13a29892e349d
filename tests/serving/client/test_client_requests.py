"""Tests of the client's pure parts: configs, the retry policy rendered into gRPC's service
config, request building and response parsing. No channel, no server."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from export import contract
from export.specs import TensorSpec
from serving.client import (
    ClientConfig,
    ResponseError,
    RetryPolicy,
    SignatureDescription,
    TlsConfig,
    build_predict_request,
    channel_options,
    fit_inputs,
    hint_for,
    pad_ragged,
    parse_predict_response,
    recommend_inputs,
)
from serving.codec import to_tensor_proto
from tfrs_model.errors import ConfigError

_SERVICES = [
    {"service": "tensorflow.serving.PredictionService"},
    {"service": "tensorflow.serving.ModelService"},
]


def test_retry_policy_renders_grpc_service_config():
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.05, max_backoff_s=1.5, multiplier=3.0)

    assert policy.service_config() == {
        "methodConfig": [
            {
                "name": _SERVICES,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1.5s",
                    "backoffMultiplier": 3.0,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }


def test_channel_options_carry_the_service_config_and_turn_retries_on():
    options = dict(channel_options(ClientConfig(max_send_message_bytes=100)))

    assert options["grpc.max_send_message_length"] == 100
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"])["methodConfig"][0]["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "grpc.ssl_target_name_override" not in options


def test_one_attempt_turns_retries_off_and_renders_no_retry_policy():
    options = dict(channel_options(ClientConfig(retry=RetryPolicy(max_attempts=1))))

    assert options["grpc.enable_retries"] == 0
    assert json.loads(options["grpc.service_config"]) == {"methodConfig": [{"name": _SERVICES}]}


def test_tls_name_override_becomes_a_channel_option():
    config = ClientConfig(tls=TlsConfig(server_name_override="serving.internal"))

    assert ("grpc.ssl_target_name_override", "serving.internal") in channel_options(config)


def test_more_attempts_than_grpc_allows_are_refused():
    with pytest.raises(ConfigError, match="gRPC caps a retry policy's maxAttempts at 5"):
        RetryPolicy(max_attempts=6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(max_attempts=0),
        lambda: RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0),
        lambda: RetryPolicy(multiplier=0.5),
        lambda: ClientConfig(version=1, version_label="stable"),
        lambda: ClientConfig(timeout_s=0),
        lambda: TlsConfig(client_certificate=Path("cert.pem")),
    ],
)
def test_invalid_configs_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_pad_ragged_pads_to_the_longest_row_with_at_least_one_column():
    np.testing.assert_array_equal(
        pad_ragged([["a"], ["b", "c"], []]),
        np.array([[b"a", b""], [b"b", b"c"], [b"", b""]], dtype=object),
    )
    assert pad_ragged([[], []]).shape == (2, 1)


def test_recommend_inputs_pads_what_is_given_and_sends_nothing_else():
    inputs = recommend_inputs(
        ["1", "2"],
        history=[["10", "11", "12"], []],
        features={"age": [31, 45], "genres": [["Drama"], ["Comedy", "War"]]},
    )
    assert sorted(inputs) == sorted([contract.USER_ID, contract.HISTORY, "age", "genres"])
    assert inputs[contract.USER_ID].tolist() == [b"1", b"2"]
    assert inputs[contract.HISTORY].tolist() == [[b"10", b"11", b"12"], [b"", b"", b""]]
    assert inputs["age"].tolist() == [31, 45]
    assert inputs["genres"].tolist() == [[b"Drama", b""], [b"Comedy", b"War"]]


def _signature(**inputs: tuple[int, tuple | None]) -> SignatureDescription:
    return SignatureDescription("recommend", "", {k: TensorSpec(*v) for k, v in inputs.items()}, {})


_STRING, _FLOAT = types_pb2.DT_STRING, types_pb2.DT_FLOAT


def test_fit_inputs_pads_missing_string_inputs_by_rank():
    signature = _signature(
        user_id=(_STRING, (None,)), history=(_STRING, (None, None)), zip=(_STRING, None)
    )
    fitted = fit_inputs(signature, {contract.USER_ID: np.array([b"1", b"2"], object)}, 2)
    assert fitted[contract.HISTORY].tolist() == [[b""], [b""]]  # rank 2 -> [batch, 1]
    assert fitted["zip"].tolist() == [b"", b""]  # unknown rank -> [batch]
    assert fitted[contract.USER_ID].tolist() == [b"1", b"2"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"user_id": [b"1"], "nope": [b"x"]}, "takes no inputs \\['nope'\\]"),
        ({"user_id": [b"1"]}, "needs input 'age' \\(DT_FLOAT \\[-1\\]\\)"),
    ],
)
def test_fit_inputs_rejects_unknown_and_missing_numeric_inputs(inputs, message):
    signature = _signature(user_id=(_STRING, (None,)), age=(_FLOAT, (None,)))
    with pytest.raises(ConfigError, match=message):
        fit_inputs(signature, inputs, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"history": [["1"]]}, {"exclude": [[], [], []]}, {"features": {"age": [1]}}],
)
def test_recommend_inputs_rejects_lists_of_the_wrong_length(kwargs):
    with pytest.raises(ConfigError):
        recommend_inputs(["1", "2"], **kwargs)


def test_predict_request_carries_version_or_label_signature_and_filter():
    request = build_predict_request(
        ClientConfig(model_name="m", version=7), {"user_id": ["196"]}, "recommend", ["scores"]
    )
    assert (request.model_spec.name, request.model_spec.version.value) == ("m", 7)
    assert request.model_spec.signature_name == "recommend"
    assert list(request.output_filter) == ["scores"]
    assert request.inputs["user_id"].string_val == [b"196"]
    labelled = build_predict_request(ClientConfig(version_label="canary"), {"x": [1.5]})
    assert labelled.model_spec.version_label == "canary"
    assert not labelled.model_spec.HasField("version")
    assert labelled.inputs["x"].dtype == types_pb2.DT_DOUBLE


def test_an_input_without_a_tensor_form_is_a_config_error():
    with pytest.raises(ConfigError, match="input 'x': DT_STRING values must be bytes or str"):
        build_predict_request(ClientConfig(), {"x": np.array([None], dtype=object)})


def test_a_response_without_the_requested_outputs_is_a_response_error():
    response = predict_pb2.PredictResponse()
    response.outputs[contract.SCORES].CopyFrom(to_tensor_proto(np.zeros((1, 2), np.float32)))
    assert parse_predict_response(response, [contract.SCORES])[contract.SCORES].shape == (1, 2)
    with pytest.raises(ResponseError, match="lacks outputs"):
        parse_predict_response(response, [contract.ITEM_IDS, contract.SCORES])


def test_a_malformed_output_is_a_response_error_with_the_cause():
    response = predict_pb2.PredictResponse()
    response.outputs[contract.SCORES].CopyFrom(to_tensor_proto(np.zeros((1, 2), np.float32)))
    response.outputs[contract.SCORES].tensor_shape.dim[1].size = 1  # 2 values, shape [1, 1]
    with pytest.raises(ResponseError, match=r"output 'scores'.*2 values do not fit") as caught:
        parse_predict_response(response)
    assert caught.value.__cause__ is not None


def test_hints_say_what_to_check():
    assert "is the model name right?" in hint_for(grpc.StatusCode.NOT_FOUND, "h:1")
    assert "h:1" in hint_for(grpc.StatusCode.UNAVAILABLE, "h:1")
    assert hint_for(grpc.StatusCode.INTERNAL, "h:1") == "see the server's log"
