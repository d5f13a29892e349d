"""TF Serving fidelity on its own loader path, for every export kind (ScaNN, brute force).

TF Serving loads a version with the TF1 C++ loader (`LoadSavedModel`): a session over the
MetaGraph tagged "serve", variables restored, the init op run (`__saved_model_init_op` for TF2
exports), then each Predict feeds the signature's input tensor names and fetches its output
tensor names. `tf.compat.v1.saved_model.loader.load` is the Python binding of that path. Here
every request of the version's warm-up file (`assets.extra/tf_serving_warmup_requests`, parsed
with `prediction_log_pb2`) is replayed through that session, and the session's answers must
equal the embedded server's answers over gRPC for each signature.

Stock TF Serving 2.20 cannot be run here (nothing may be downloaded), so its op registry is
approximated: the brute-force export's ops must all be core TensorFlow ops, registered in this
TensorFlow 2.20 (`tf.raw_ops`, the ops any TF Serving 2.20 build links), and none from the
denylist of ops stock TF Serving lacks (ScaNN's, Python callbacks). ScaNN exports, by contrast,
must use ScaNN ops: that is why the embedded server serves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fixtures.exports import exported_version
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc

from export.contract import ASSETS_EXTRA, WARMUP_FILE
from export.index import BRUTE_FORCE, SCANN
from export.loading import register_scann_ops
from serving.server.config import ServingConfig
from serving.server.server import EmbeddedServer

pytestmark = pytest.mark.integration

TIMEOUT = 60
INIT_OP = "__saved_model_init_op"
# Ops stock TF Serving does not register: ScaNN's custom ops and Python callbacks.
DENYLIST_PREFIXES = ("Scann", "PyFunc", "EagerPyFunc")


@pytest.fixture(scope="module", params=[BRUTE_FORCE, SCANN])
def export(request, export_root: Path) -> Path:
    return exported_version(export_root, request.param)


@pytest.fixture(scope="module")
def served(export: Path) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    config = ServingConfig(model_base_path=export.parent, grpc_port=0, rest_port=None)
    server = EmbeddedServer(config)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.ports.grpc}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    server.stop(1.0)


def _warmup_requests(version_dir: Path) -> list:
    path = version_dir / ASSETS_EXTRA / WARMUP_FILE
    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        requests.append(log.predict_log.request)
    return requests


def _tf_serving_session(version_dir: Path):
    """A TF1 session loaded as TF Serving loads it: "serve" tag, restore, init op."""
    register_scann_ops()  # as a TF Serving build with ScaNN ops linked in would
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    return session, meta_graph


def test_every_signature_answers_on_tf_servings_loader_path_as_the_embedded_server(
    export: Path, served
):
    session, meta_graph = _tf_serving_session(export)
    signatures = {k: v for k, v in meta_graph.signature_def.items() if k != INIT_OP}
    assert INIT_OP in meta_graph.signature_def  # the init op TF Serving runs after restoring
    requests = _warmup_requests(export)
    assert {request.model_spec.signature_name or "serving_default" for request in requests} == set(
        signatures
    ), "the warm-up file should exercise every signature"

    for request in requests:
        name = request.model_spec.signature_name or "serving_default"
        signature = signatures[name]
        feeds = {
            signature.inputs[key].name: tf.make_ndarray(proto)
            for key, proto in request.inputs.items()
        }
        fetch_keys = sorted(signature.outputs)
        fetched = session.run([signature.outputs[key].name for key in fetch_keys], feeds)
        answer = served.Predict(request, timeout=TIMEOUT)

        for key, value in zip(fetch_keys, fetched, strict=True):
            embedded = tf.make_ndarray(answer.outputs[key])
            if value.dtype == object:
                assert embedded.tolist() == value.tolist(), (name, key)
            else:
                np.testing.assert_allclose(embedded, value, rtol=1e-5, atol=1e-6, err_msg=name)
    session.close()


def _graph_ops(meta_graph) -> set[str]:
    ops = {node.op for node in meta_graph.graph_def.node}
    for function in meta_graph.graph_def.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


def test_brute_force_export_uses_only_ops_stock_tf_serving_registers(export_root: Path):
    meta_graph = _tf_serving_session(exported_version(export_root, BRUTE_FORCE))[1]
    ops = _graph_ops(meta_graph)

    core = {name for name in dir(tf.raw_ops) if not name.startswith("_")}
    assert not {op for op in ops if op.startswith(DENYLIST_PREFIXES)}
    assert ops <= core, sorted(ops - core)


def test_scann_export_needs_scann_ops(export_root: Path):
    meta_graph = _tf_serving_session(exported_version(export_root, SCANN))[1]

    assert any(op.startswith("Scann") for op in _graph_ops(meta_graph))
