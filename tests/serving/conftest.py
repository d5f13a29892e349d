"""Tiny SavedModels with hand-checkable signatures, and embedded servers over them on loopback.

Version v of the tiny model (K = 3 results per user) answers:
  serving_default: user_id DT_STRING [batch] ->
      item_ids DT_STRING [batch, K]: item_ids[i][j] = f"{user_id[i]}/{j}"
      scores   DT_FLOAT  [batch, K]: scores[i][j] = 10 * v + len(user_id[i]) - j
  query_embedding: user_id DT_STRING [batch] -> embedding DT_FLOAT [batch, 2] = [len(user_id), v]
  affine: x DT_FLOAT [batch, 3] -> y DT_FLOAT [batch, 3] = 2 * x + v
  slow: user_id DT_STRING [batch], delay_s DT_FLOAT [] -> echo DT_STRING [batch] = user_id,
      after busy-waiting `delay_s` seconds (for deadline and drain tests).
Each version is traced and saved once per session, then copied, which keeps the tests fast.

Test modules cannot import a conftest by name (pytest loads several under that name), so the
helpers reach them through the `tiny` fixture.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from export.contract import (
    ASSETS_EXTRA,
    EMBEDDING,
    ITEM_IDS,
    QUERY_EMBEDDING,
    SCORES,
    SERVING_DEFAULT,
    USER_ID,
    WARMUP_FILE,
)
from serving.config import ServingConfig
from serving.server import EmbeddedServer

K = 3
AFFINE = "affine"
SLOW = "slow"
MODEL_NAME = "tiny"


class TinyModel(tf.Module):
    """Version `version` of the tiny model; see the module docstring for what it answers."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version
        # A variable, so the SavedModel has a variables/ directory like a real export.
        self.offset = tf.Variable(10.0 * version)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=USER_ID)])
    def recommend(self, user_id):
        rows = tf.expand_dims(user_id, 1)
        ranks = tf.strings.as_string(tf.range(K))
        lengths = tf.cast(tf.strings.length(rows), tf.float32)
        return {
            ITEM_IDS: rows + "/" + ranks,
            SCORES: self.offset + lengths - tf.cast(tf.range(K), tf.float32),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=USER_ID)])
    def query_embedding(self, user_id):
        lengths = tf.cast(tf.strings.length(user_id), tf.float32)
        return {EMBEDDING: tf.stack([lengths, tf.fill(tf.shape(lengths), self.offset / 10)], 1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def affine(self, x):
        return {"y": 2.0 * x + self.offset / 10}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=USER_ID),
            tf.TensorSpec([], tf.float32, name="delay_s"),
        ]
    )
    def slow(self, user_id, delay_s):
        end = tf.timestamp() + tf.cast(delay_s, tf.float64)
        waited = tf.while_loop(
            lambda now: now < end, lambda now: [tf.timestamp()], [tf.timestamp()]
        )
        with tf.control_dependencies(waited):
            return {"echo": tf.identity(user_id)}


def save_tiny_model(version: int, path: Path) -> None:
    model = TinyModel(version)
    signatures = {
        SERVING_DEFAULT: model.recommend,
        QUERY_EMBEDDING: model.query_embedding,
        AFFINE: model.affine,
        SLOW: model.slow,
    }
    tf.saved_model.save(model, str(path), signatures=signatures)


def expected_recommendation(user_id: str, version: int) -> tuple[list[bytes], list[float]]:
    """Hand-computed serving_default answer for one user."""
    ids = [f"{user_id}/{j}".encode() for j in range(K)]
    scores = [10.0 * version + len(user_id) - j for j in range(K)]
    return ids, scores


def predict_request(
    user_ids: Sequence[str], signature: str = "", model: str = MODEL_NAME
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[USER_ID].CopyFrom(tf.make_tensor_proto(list(user_ids), dtype=tf.string))
    return request


def write_warmup_file(version_dir: Path, requests: Sequence[predict_pb2.PredictRequest]) -> None:
    """Writes TF Serving's warm-up file: a TFRecord of PredictionLog with predict_log.request."""
    (version_dir / ASSETS_EXTRA).mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(version_dir / ASSETS_EXTRA / WARMUP_FILE)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory) -> Callable[[int], Path]:
    """version -> a saved tiny model of that version (saved once per session)."""
    root = tmp_path_factory.mktemp("tiny-models")

    def build(version: int) -> Path:
        path = root / str(version)
        if not path.exists():
            save_tiny_model(version, path)
        return path

    return build


@pytest.fixture
def write_version(tiny_model_cache) -> Callable[..., Path]:
    """Writes version `v` under a base path the way the exporter does: hidden sibling + rename.

    Call as `write_version(base, v, warmup=[requests], edit=fn)`; `edit(tmp_dir)` may change or
    break the files before the rename.
    """

    def write(
        base: Path,
        version: int,
        warmup: Sequence[predict_pb2.PredictRequest] = (),
        edit: Callable[[Path], None] | None = None,
    ) -> Path:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".tmp-{version}-{os.getpid()}"
        shutil.copytree(tiny_model_cache(version), staging)
        if warmup:
            write_warmup_file(staging, warmup)
        if edit is not None:
            edit(staging)
        final = base / str(version)
        os.rename(staging, final)
        return final

    return write


def serving_config(base: Path, **overrides) -> ServingConfig:
    """A config for tests: free ports on loopback, fast polling, short drains."""
    settings = {
        "model_base_path": base,
        "model_name": MODEL_NAME,
        "grpc_port": 0,
        "rest_port": 0,
        "poll_interval_s": 0.1,
        "drain_grace_s": 5.0,
        "max_batch_size": 8,
        "grpc_max_workers": 8,
    }
    settings.update(overrides)
    return ServingConfig(**settings)


class Stubs:
    """The official TF Serving stubs on one loopback channel; `close()` when done."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Polls `condition` until it holds (True) or `timeout` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


class TinyKit:
    """What the tests need from this file: constants and helpers."""

    model_name = MODEL_NAME
    k = K
    affine = AFFINE
    slow = SLOW
    predict_request = staticmethod(predict_request)
    expected_recommendation = staticmethod(expected_recommendation)
    write_warmup_file = staticmethod(write_warmup_file)
    config = staticmethod(serving_config)
    wait_for = staticmethod(wait_for)
    Stubs = Stubs


@pytest.fixture(scope="session")
def tiny() -> TinyKit:
    return TinyKit()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory, tiny_model_cache) -> Iterator[EmbeddedServer]:
    """One server over versions 1 and 2 (policy: specific 1,2; label "stable" -> 1), read-only."""
    from serving.config import VersionPolicy

    base = tmp_path_factory.mktemp("shared-base")
    for version in (1, 2):
        shutil.copytree(tiny_model_cache(version), base / str(version))
    config = serving_config(
        base,
        version_policy=VersionPolicy.specific(1, 2),
        version_labels={"stable": 1, "canary": 3},
    )
    server = EmbeddedServer(config)
    server.start()
    yield server
    server.stop(1.0)


@pytest.fixture(scope="module")
def shared_stubs(shared_server) -> Iterator[Stubs]:
    stubs = Stubs(shared_server.ports.grpc)
    yield stubs
    stubs.close()
