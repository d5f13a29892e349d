"""Tests of serving/client/: real calls to a fake TF Serving on loopback, gRPC's retries, TLS.

`FakeServing` implements TF Serving's PredictionService and ModelService with deterministic
answers, so expected values are written by hand:
  ranking signatures: user (or item) u -> items "u-0", "u-1", "u-2" scored 1.0, 0.75, 0.5
    (`similar_items` -> "u-sim0", ...; `recommend` replaces excluded items by the padding id);
  embeddings: id -> [len(id), 0.5]; titles: id -> "Title id" ("" for the padding id).
Switches make it fail: `unavailable_first` (UNAVAILABLE for the first N calls), `abort_with`
(any status, for Predict calls), `delay_s` (sleep before answering); see
tests/fixtures/fake_serving.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fixtures.fake_serving import MODEL, VERSION, FakeServing, K, serve
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from export import contract
from export.specs import TensorSpec
from serving.client import (
    ClientConfig,
    Recommendation,
    RetryPolicy,
    ServingError,
    TlsConfig,
    TwoTowerClient,
    VersionStatus,
)
from tfrs_model.errors import ConfigError, TwoTowerError

pytestmark = pytest.mark.integration

_FAST_RETRIES = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def fake() -> Iterator[FakeServing]:
    with serve() as running:
        yield running


def _client(fake: FakeServing, **config) -> TwoTowerClient:
    config.setdefault("retry", _FAST_RETRIES)
    return TwoTowerClient(ClientConfig(target=fake.target, timeout_s=5.0, **config))


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


def test_recommend_with_titles_makes_a_second_call_to_item_titles(fake):
    with _client(fake) as client:
        (ranked,) = client.recommend(["5"], with_titles=True)
    assert [r.title for r in ranked] == ["Title 5-0", "Title 5-1", "Title 5-2"]
    assert fake.requests[1].model_spec.signature_name == contract.ITEM_TITLES


def test_predict_passes_output_filter_through_and_returns_numpy(fake):
    with _client(fake) as client:
        everything = client.predict({contract.USER_ID: ["1"]})
        only_scores = client.predict({contract.USER_ID: ["1"]}, output_filter=[contract.SCORES])
    assert set(everything) == {contract.ITEM_IDS, contract.SCORES}
    assert everything[contract.ITEM_IDS].tolist() == [[b"1-0", b"1-1", b"1-2"]]
    assert set(only_scores) == {contract.SCORES}
    assert only_scores[contract.SCORES].dtype == np.float32
    assert list(fake.requests[1].output_filter) == [contract.SCORES]


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


def test_metadata_is_parsed_into_signature_descriptions(fake):
    with _client(fake) as client:
        metadata = client.metadata()
    assert (metadata.model_name, metadata.version) == (MODEL, VERSION)
    # The fake serves the signatures before the filtered ones; the init op is dropped.
    unfiltered = set(contract.ALL_SIGNATURES) - set(contract.FILTERED_SIGNATURES)
    assert sorted(metadata.signatures) == sorted(unfiltered)
    recommend = metadata.signatures[contract.RECOMMEND]
    assert recommend.method_name == "tensorflow/serving/predict"
    assert recommend.inputs[contract.HISTORY] == TensorSpec(types_pb2.DT_STRING, (None, None))
    assert recommend.outputs[contract.SCORES] == TensorSpec(types_pb2.DT_FLOAT, (None, K))
    assert recommend.inputs[contract.HISTORY].dtype_name == "DT_STRING"
    assert list(fake.requests[0].metadata_field) == ["signature_def"]


def test_model_status_lists_versions_in_order(fake):
    with _client(fake, version=2) as client:
        status = client.model_status()
    assert status.versions == (
        VersionStatus(1, "END", grpc.StatusCode.INVALID_ARGUMENT, "bad saved_model.pb"),
        VersionStatus(2, "AVAILABLE"),
        VersionStatus(3, "LOADING"),
    )
    assert status.available_versions == (2,)
    assert not fake.requests[0].model_spec.HasField("version")  # all versions, not the config's


def test_version_and_label_reach_the_server(fake):
    with _client(fake, version=3) as client:
        client.recommend(["1"])
    with _client(fake, version_label="stable") as client:
        client.metadata()
    assert fake.requests[0].model_spec.version.value == 3
    assert fake.requests[1].model_spec.version_label == "stable"


# --- gRPC's retries (the channel's service config) -------------------------------------------

_CALLS: dict[str, Callable[[TwoTowerClient], object]] = {
    "Predict": lambda client: client.recommend(["1"], k=1),
    "GetModelMetadata": lambda client: client.metadata(),
    "GetModelStatus": lambda client: client.model_status(),
}


@pytest.mark.parametrize("method", list(_CALLS))
@pytest.mark.parametrize(("max_attempts", "unavailable"), [(2, 1), (4, 3), (5, 4)])
def test_grpc_retries_unavailable_transparently_until_it_succeeds(
    fake, method, max_attempts, unavailable
):
    fake.unavailable_first = unavailable
    retry = RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0.01, max_backoff_s=0.05)
    with _client(fake, retry=retry) as client:
        answer = _CALLS[method](client)
    if method == "Predict":
        assert answer == [[Recommendation("1-0", 1.0)]]
    assert len(fake.requests) == unavailable + 1  # every attempt reached the server


@pytest.mark.parametrize(("max_attempts", "unavailable"), [(2, 2), (4, 4), (4, 100), (5, 100)])
def test_unavailable_on_every_attempt_fails_with_unavailable_and_a_hint(
    fake, max_attempts, unavailable
):
    fake.unavailable_first = unavailable
    retry = RetryPolicy(max_attempts=max_attempts, initial_backoff_s=0.01, max_backoff_s=0.05)
    with _client(fake, retry=retry) as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"])
    error = raised.value
    assert (error.code, error.details) == (
        grpc.StatusCode.UNAVAILABLE,
        "model server is warming up",
    )
    assert len(fake.requests) == max_attempts
    assert error.max_attempts == max_attempts
    assert f"is a model server listening on {fake.target}?" in error.hint
    assert f"(retried by gRPC, at most {max_attempts} attempts)" in str(error)
    assert isinstance(error.__cause__, grpc.RpcError)


def test_one_attempt_sends_once(fake):
    fake.unavailable_first = 1
    with (
        _client(fake, retry=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(ServingError) as raised,
    ):
        client.model_status()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert (raised.value.max_attempts, len(fake.requests)) == (1, 1)
    assert "retried" not in str(raised.value)


def test_other_errors_are_not_retried_and_carry_code_message_and_hint(fake):
    fake.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "unexpected input 'x'")
    with _client(fake) as client, pytest.raises(ServingError) as raised:
        client.predict({"x": ["1"]})
    error = raised.value
    assert isinstance(error, TwoTowerError)
    assert (error.code, error.details, error.max_attempts) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "unexpected input 'x'",
        1,
    )
    assert "GetModelMetadata lists them" in error.hint
    assert len(fake.requests) == 1


def test_a_slow_server_hits_the_deadline(fake):
    fake.delay_s = 0.5
    with _client(fake) as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"], timeout_s=0.05)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.requests) == 1


def test_unknown_model_is_not_found_with_a_hint(fake):
    with _client(fake, model_name="nope") as client, pytest.raises(ServingError) as raised:
        client.recommend(["1"])
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "is the model name right?" in str(raised.value)


def test_no_server_is_unavailable_after_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens
    fake = FakeServing()
    fake.target = f"127.0.0.1:{port}"
    with _client(fake) as client, pytest.raises(ServingError) as raised:
        client.model_status()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.max_attempts == _FAST_RETRIES.max_attempts
    assert fake.target in raised.value.hint


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
