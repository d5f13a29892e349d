"""Tests of serving/client.py: pure request building, then real calls to a fake server on loopback.

`FakeServing` implements TF Serving's PredictionService and ModelService with deterministic
answers, so expected values are written by hand:
  ranking signatures: user (or item) u -> items "u-0", "u-1", "u-2" scored 1.0, 0.75, 0.5
    (`similar_items` -> "u-sim0", ...; `recommend` replaces excluded items by the padding id);
  embeddings: id -> [len(id), 0.5]; titles: id -> "Title id" ("" for the padding id).
Switches make it fail: `unavailable_first` (UNAVAILABLE for the first N calls), `abort_with`
(any status, for Predict calls), `delay_s` (sleep before answering); see tests/fixtures/fake_serving.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fixtures.fake_serving import MODEL, VERSION, FakeServing, K, serve
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
)

from export import contract
from serving.client import (
    ClientConfig,
    QueryRequest,
    ResponseError,
    RetryPolicy,
    ServingError,
    TlsConfig,
    TwoTowerClient,
    build_predict_request,
    fit_inputs,
    hint_for,
    pad_ragged,
    parse_predict_response,
    recommend_inputs,
    run_query,
)
from serving.results import (
    Recommendation,
    SignatureDescription,
    TensorDescription,
    VersionStatus,
)
from tfrs_model.errors import ConfigError, TwoTowerError


class _Sleeps(list):
    """Records the backoff delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


_NO_JITTER = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05, jitter=0.0)


@pytest.fixture
def fake() -> Iterator[FakeServing]:
    with serve() as running:
        yield running


def _client(fake: FakeServing, sleeps: _Sleeps | None = None, **config) -> TwoTowerClient:
    config.setdefault("retry", _NO_JITTER)
    return TwoTowerClient(
        ClientConfig(target=fake.target, timeout_s=5.0, **config),
        sleep=sleeps if sleeps is not None else _Sleeps(),
        rng=random.Random(0),
    )


# --- pure functions -------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_without_jitter():
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2.0, jitter=0.0)
    delays = [policy.backoff_s(n, random.Random(0)) for n in range(1, 6)]
    # 0.1 * 2 ** (n - 1), capped at 0.5.
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_backoff_jitter_stays_within_its_band():
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.backoff_s(3, rng) for _ in range(200)]
    # Ceiling 0.4; jitter 0.5 scales it by a factor in [0.5, 1].
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 100  # actually random


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(max_attempts=0),
        lambda: RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0),
        lambda: RetryPolicy(jitter=1.5),
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


def _signature(**inputs: tuple[str, tuple | None]) -> SignatureDescription:
    return SignatureDescription(
        "recommend", "", {k: TensorDescription(k, *v) for k, v in inputs.items()}, {}
    )


def test_fit_inputs_pads_missing_string_inputs_by_rank():
    signature = _signature(
        user_id=("string", (None,)), history=("string", (None, None)), zip=("string", None)
    )
    fitted = fit_inputs(signature, {contract.USER_ID: np.array([b"1", b"2"], object)}, 2)
    assert fitted[contract.HISTORY].tolist() == [[b""], [b""]]  # rank 2 -> [batch, 1]
    assert fitted["zip"].tolist() == [b"", b""]  # unknown rank -> [batch]
    assert fitted[contract.USER_ID].tolist() == [b"1", b"2"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"user_id": [b"1"], "nope": [b"x"]}, "takes no inputs \\['nope'\\]"),
        ({"user_id": [b"1"]}, "needs input 'age' \\(float32"),
    ],
)
def test_fit_inputs_rejects_unknown_and_missing_numeric_inputs(inputs, message):
    signature = _signature(user_id=("string", (None,)), age=("float32", (None,)))
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


def test_a_response_without_the_requested_outputs_is_a_response_error():
    response = predict_pb2.PredictResponse()
    response.outputs[contract.SCORES].CopyFrom(tf.make_tensor_proto(np.zeros((1, 2), np.float32)))
    assert parse_predict_response(response, [contract.SCORES])[contract.SCORES].shape == (1, 2)
    with pytest.raises(ResponseError, match="lacks outputs"):
        parse_predict_response(response, [contract.ITEM_IDS, contract.SCORES])


def test_hints_say_what_to_check():
    assert "is the model name right?" in hint_for(grpc.StatusCode.NOT_FOUND, "h:1")
    assert "h:1" in hint_for(grpc.StatusCode.UNAVAILABLE, "h:1")
    assert hint_for(grpc.StatusCode.INTERNAL, "h:1") == "see the server's log"


# --- against the fake server ----------------------------------------------------------------


@pytest.mark.integration
def test_recommend_sends_all_users_in_one_request_and_returns_typed_lists(fake):
    with _client(fake) as client:
        lists = client.recommend(["196", "7"], k=2)
    assert lists == [
        [Recommendation("196-0", 1.0), Recommendation("196-1", 0.75)],
        [Recommendation("7-0", 1.0), Recommendation("7-1", 0.75)],
    ]
    (request,) = fake.requests  # one call for both users
    assert request.inputs[contract.USER_ID].string_val == [b"196", b"7"]
    assert list(request.output_filter) == [contract.ITEM_IDS, contract.SCORES]


@pytest.mark.integration
def test_recommend_with_titles_makes_a_second_call_to_item_titles(fake):
    with _client(fake) as client:
        (ranked,) = client.recommend(["5"], with_titles=True)
    assert [r.title for r in ranked] == ["Title 5-0", "Title 5-1", "Title 5-2"]
    assert fake.requests[1].model_spec.signature_name == contract.ITEM_TITLES


@pytest.mark.integration
def test_predict_passes_output_filter_through_and_returns_numpy(fake):
    with _client(fake) as client:
        everything = client.predict({contract.USER_ID: ["1"]})
        only_scores = client.predict({contract.USER_ID: ["1"]}, output_filter=[contract.SCORES])
    assert set(everything) == {contract.ITEM_IDS, contract.SCORES}
    assert everything[contract.ITEM_IDS].tolist() == [[b"1-0", b"1-1", b"1-2"]]
    assert set(only_scores) == {contract.SCORES}
    assert only_scores[contract.SCORES].dtype == np.float32
    assert list(fake.requests[1].output_filter) == [contract.SCORES]


@pytest.mark.integration
def test_recommend_with_context_pads_lists_and_drops_padding_ids(fake):
    with _client(fake) as client:
        lists = client.recommend_with_context(
            ["1", "2"], history=[["a", "b"], []], exclude=[["1-1"], []]
        )
    # The fake replaces the excluded "1-1" by the padding id; the client drops it.
    assert [r.item_id for r in lists[0]] == ["1-0", "1-2"]
    assert [r.item_id for r in lists[1]] == ["2-0", "2-1", "2-2"]
    metadata, request = fake.requests  # the inputs the signature takes come from the metadata
    assert isinstance(metadata, get_model_metadata_pb2.GetModelMetadataRequest)
    assert request.model_spec.signature_name == contract.RECOMMEND
    inputs = {key: tf.make_ndarray(proto).tolist() for key, proto in request.inputs.items()}
    assert inputs[contract.HISTORY] == [[b"a", b"b"], [b"", b""]]
    assert inputs["occupation"] == [b"", b""]  # not given: padding


@pytest.mark.integration
def test_recommend_with_context_fills_missing_context_and_reads_metadata_once(fake):
    with _client(fake) as client:
        client.recommend_with_context(["1"], features={"occupation": ["writer"]})
        client.recommend_with_context(["2"], history=[["9"]])
        with pytest.raises(ConfigError, match="takes no inputs \\['age'\\]"):
            client.recommend_with_context(["3"], features={"age": ["30"]})
    first, second = fake.predictions
    assert tf.make_ndarray(first.inputs[contract.HISTORY]).tolist() == [[b""]]
    assert tf.make_ndarray(first.inputs["occupation"]).tolist() == [b"writer"]
    assert tf.make_ndarray(second.inputs[contract.EXCLUDE]).tolist() == [[b""]]
    assert len(fake.requests) == 3  # one GetModelMetadata, two Predict


@pytest.mark.integration
def test_similar_items_embeddings_and_titles(fake):
    with _client(fake) as client:
        similar = client.similar_items(["50"], k=1)
        query = client.query_embedding(["196", "7"])
        candidates = client.candidate_embedding(["1234"])
        titles = client.titles([["1", "22"], ["3"]])
    assert similar == [[Recommendation("50-sim0", 1.0)]]
    # Embedding of id u: [len(u), 0.5].
    np.testing.assert_array_equal(query, np.array([[3, 0.5], [1, 0.5]], np.float32))
    assert query.dtype == np.float32
    np.testing.assert_array_equal(candidates, np.array([[4, 0.5]], np.float32))
    assert titles == [["Title 1", "Title 22"], ["Title 3"]]


@pytest.mark.integration
def test_metadata_is_parsed_into_signature_descriptions(fake):
    with _client(fake) as client:
        metadata = client.metadata()
    assert (metadata.model_name, metadata.version) == (MODEL, VERSION)
    assert sorted(metadata.signatures) == sorted(contract.ALL_SIGNATURES)  # init op dropped
    recommend = metadata.signatures[contract.RECOMMEND]
    assert recommend.method_name == "tensorflow/serving/predict"
    assert recommend.inputs[contract.HISTORY] == TensorDescription(
        contract.HISTORY, "string", (None, None)
    )
    assert recommend.outputs[contract.SCORES] == TensorDescription(
        contract.SCORES, "float32", (None, K)
    )
    assert list(fake.requests[0].metadata_field) == ["signature_def"]


@pytest.mark.integration
def test_model_status_lists_versions_in_order(fake):
    with _client(fake, version=2) as client:
        status = client.model_status()
    assert status.versions == (
        VersionStatus(1, "END", "INVALID_ARGUMENT", "bad saved_model.pb"),
        VersionStatus(2, "AVAILABLE"),
        VersionStatus(3, "LOADING"),
    )
    assert status.available_versions == (2,)
    assert not fake.requests[0].model_spec.HasField("version")  # all versions, not the config's


@pytest.mark.integration
def test_version_and_label_reach_the_server(fake):
    with _client(fake, version=3) as client:
        client.recommend(["1"])
    with _client(fake, version_label="stable") as client:
        client.metadata()
    assert fake.requests[0].model_spec.version.value == 3
    assert fake.requests[1].model_spec.version_label == "stable"


@pytest.mark.integration
def test_unavailable_is_retried_with_backoff_until_it_succeeds(fake):
    fake.unavailable_first = 2
    sleeps = _Sleeps()
    with _client(fake, sleeps) as client:
        lists = client.recommend(["1"], k=1)
    assert lists == [[Recommendation("1-0", 1.0)]]
    assert len(fake.requests) == 3
    assert sleeps == pytest.approx([0.01, 0.02])  # 0.01 * 2 ** (n - 1), no jitter


@pytest.mark.integration
def test_retries_stop_after_max_attempts(fake):
    fake.unavailable_first = 100
    sleeps = _Sleeps()
    with _client(fake, sleeps) as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"])
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.attempts == 4 == len(fake.requests)
    assert sleeps == pytest.approx([0.01, 0.02, 0.04])
    assert "after 4 attempts" in str(raised.value)


@pytest.mark.integration
def test_other_errors_are_not_retried_and_carry_code_message_and_hint(fake):
    fake.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'x'")
    sleeps = _Sleeps()
    with _client(fake, sleeps) as client, pytest.raises(ServingError) as raised:
        client.predict({"x": ["1"]})
    error = raised.value
    assert isinstance(error, TwoTowerError)
    assert (error.code, error.details, error.attempts) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected input 'x'",
        1,
    )
    assert "GetModelMetadata lists them" in error.hint
    assert len(fake.requests) == 1 and sleeps == []


@pytest.mark.integration
def test_a_slow_server_hits_the_deadline(fake):
    fake.delay_s = 0.5
    with _client(fake) as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"], timeout_s=0.05)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.requests) == 1


@pytest.mark.integration
def test_unknown_model_is_not_found_with_a_hint(fake):
    with _client(fake, model_name="nope") as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"])
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "is the model name right?" in str(raised.value)


@pytest.mark.integration
def test_no_server_is_unavailable_after_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    fake = FakeServing()
    fake.target = f"127.0.0.1:{port}"
    sleeps = _Sleeps()
    with _client(fake, sleeps) as client, pytest.raises(ServingError) as raised:
        client.model_status()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(sleeps) == 3


@pytest.mark.integration
def test_run_query_fetches_titles_when_the_model_has_the_signature(fake):
    config = ClientConfig(target=fake.target, retry=_NO_JITTER)
    result = run_query(config, QueryRequest(ids=("196",), k=2))
    assert (result.model_name, result.version, result.signature) == (
        MODEL,
        VERSION,
        "serving_default",
    )
    assert result.titles_fetched
    assert result.recommendations == (
        (Recommendation("196-0", 1.0, "Title 196-0"), Recommendation("196-1", 0.75, "Title 196-1")),
    )
    fake.with_titles = False
    plain = run_query(config, QueryRequest(ids=("5",), signature=contract.SIMILAR_ITEMS, k=1))
    assert not plain.titles_fetched
    assert plain.recommendations == ((Recommendation("5-sim0", 1.0),),)


@pytest.mark.integration
@pytest.mark.parametrize("signature", ["nope", contract.QUERY_EMBEDDING])
def test_run_query_rejects_signatures_without_ranked_lists(fake, signature):
    config = ClientConfig(target=fake.target)
    with pytest.raises(ConfigError, match=signature):
        run_query(config, QueryRequest(ids=("1",), signature=signature))


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Writes a self-signed certificate for 127.0.0.1/localhost and its key; skips without tools."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("TLS test needs the `cryptography` package or the openssl command")
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
                *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
                *("-keyout", str(key), "-out", str(cert)),
                *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )
        return cert, key
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(private_key, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.mark.integration
def test_mutual_tls(tmp_path):
    cert, key = _self_signed_certificate(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=cert.read_bytes(),  # the client presents the same self-signed cert
        require_client_auth=True,
    )
    tls = TlsConfig(root_certificates=cert, client_certificate=cert, client_key=key)
    with serve(credentials=credentials) as fake, _client(fake, tls=tls) as client:
        assert client.recommend(["1"], k=1) == [[Recommendation("1-0", 1.0)]]
    with pytest.raises(ConfigError, match="cannot read TLS file"):
        TlsConfig(root_certificates=tmp_path / "missing.pem").credentials()
