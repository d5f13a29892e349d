"""Model lifecycle and server lifecycle of the embedded server: swaps, failures, warm-up, drain."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_service_pb2_grpc

from export.contract import SCORES, USER_ID
from serving.server.config import VersionPolicy
from serving.server.server import EmbeddedServer
from tfrs_model.errors import ConfigError

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 10


def _states(server: EmbeddedServer, tiny) -> dict[int, str]:
    return {s.version: s.state for s in server.manager.status(tiny.model_name)}


def _slow_request(tiny, delay_s: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = tiny.model_name
    request.model_spec.signature_name = tiny.slow
    request.inputs[USER_ID].CopyFrom(tf.make_tensor_proto(["slow-user"]))
    request.inputs["delay_s"].CopyFrom(tf.make_tensor_proto(delay_s, dtype=tf.float32))
    return request


@pytest.fixture
def served(tmp_path, tiny, write_version):
    """Starts a server over `tmp_path/base` after `setup(base)`; stops it after the test."""
    started = []

    def start(setup=None, **overrides):
        base = tmp_path / "base"
        base.mkdir()
        if setup is not None:
            setup(base)
        server = EmbeddedServer(tiny.config(base, **overrides))
        server.start()
        stubs = tiny.Stubs(server.ports.grpc)
        started.append((server, stubs))
        return base, server, stubs

    yield start
    for server, stubs in started:
        stubs.close()
        server.stop(1)


def test_version_swap_under_load_fails_no_request_and_serves_the_new_version(
    served, tiny, write_version
):
    base, server, stubs = served(lambda base: write_version(base, 1))
    request = tiny.predict_request(["ab"])
    failures, versions, stop = [], set(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                response = stubs.prediction.Predict(request, timeout=TIMEOUT)
                versions.add(response.model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    write_version(base, 2)  # staged in a hidden sibling, then renamed, as the exporter does
    swapped = tiny.wait_for(lambda: 1 not in server.manager.available_versions)
    time.sleep(0.3)  # keep the load on after the swap
    stop.set()
    for thread in threads:
        thread.join()

    assert swapped
    assert failures == []
    assert versions == {1, 2}
    response = stubs.prediction.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 2
    assert _states(server, tiny) == {2: "AVAILABLE", 1: "END"}


def test_broken_versions_are_skipped_while_the_old_one_serves_and_retried_when_fixed(
    served, tiny, write_version, tiny_model_cache
):
    base, server, stubs = served(lambda base: write_version(base, 1))
    request = tiny.predict_request(["ab"])

    # Version 2 has no saved_model.pb.
    write_version(base, 2, edit=lambda staging: (staging / "saved_model.pb").unlink())
    assert tiny.wait_for(lambda: _states(server, tiny).get(2) == "END")
    # Version 3 loads, but its warm-up request sends a float user_id.
    bad_warmup = tiny.predict_request(["ab"])
    bad_warmup.inputs[USER_ID].CopyFrom(tf.make_tensor_proto([1.0]))
    write_version(base, 3, warmup=[bad_warmup])
    assert tiny.wait_for(lambda: _states(server, tiny).get(3) == "END")

    statuses = {s.version: s for s in server.manager.status(tiny.model_name)}
    assert statuses[2].error_code == grpc.StatusCode.NOT_FOUND
    assert "no saved_model.pb" in statuses[2].error_message
    assert statuses[3].error_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "warm-up file" in statuses[3].error_message
    assert "record 0:" in statuses[3].error_message
    assert "dtype DT_FLOAT, expected DT_STRING" in statuses[3].error_message
    assert statuses[1].state == "AVAILABLE"
    response = stubs.prediction.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 1
    # GetModelStatus carries the error to clients.
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = tiny.model_name
    status_request.model_spec.version.value = 3
    reply = stubs.model.GetModelStatus(status_request, timeout=TIMEOUT)
    assert reply.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.END
    assert "warm-up file" in reply.model_version_status[0].status.error_message

    # Fixing version 2 in place changes its directory, so it is tried again and takes over.
    shutil.copytree(tiny_model_cache(2), base / "2", dirs_exist_ok=True)
    assert tiny.wait_for(lambda: server.manager.available_versions == (2,))
    assert stubs.prediction.Predict(request, timeout=TIMEOUT).model_spec.version.value == 2


def test_warmup_requests_are_replayed_and_counted(served, tiny, write_version):
    warmup = [
        tiny.predict_request(["a"]),
        tiny.predict_request(["b", "c"], signature="query_embedding"),
    ]
    warmup.append(tiny.predict_request(["d"]))

    _, server, _ = served(lambda base: write_version(base, 1, warmup=warmup))

    (status,) = server.manager.status(tiny.model_name)
    assert (status.state, server.manager.warmup_requests(1)) == ("AVAILABLE", 3)
    assert (
        'serving_warmup_requests_total{model="tiny"} 3.0' in server.metrics.exposition()[0].decode()
    )


def test_hidden_and_non_numeric_directories_are_ignored(served, tiny, write_version):
    def setup(base: Path) -> None:
        write_version(base, 1)
        (base / ".tmp-5").mkdir()
        (base / "notes").mkdir()
        (base / "7.bak").mkdir()

    _, server, _ = served(setup)

    assert [s.version for s in server.manager.status(tiny.model_name)] == [1]


def test_specific_policy_serves_exactly_the_listed_versions(served, tiny, write_version):
    def setup(base: Path) -> None:
        for version in (1, 2, 3):
            write_version(base, version)

    _, server, _ = served(setup, version_policy=VersionPolicy.specific(1, 3))

    assert server.manager.available_versions == (1, 3)


def test_batching_answers_each_concurrent_request_with_its_own_rows(served, tiny, write_version):
    _, server, stubs = served(lambda base: write_version(base, 1), enable_batching=True)
    users = [f"user-{'x' * i}" for i in range(12)]
    results: dict[str, np.ndarray] = {}

    def ask(user: str) -> None:
        response = stubs.prediction.Predict(tiny.predict_request([user]), timeout=TIMEOUT)
        results[user] = tf.make_ndarray(response.outputs[SCORES])

    threads = [threading.Thread(target=ask, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for user in users:
        np.testing.assert_array_equal(results[user], [tiny.expected_recommendation(user, 1)[1]])
    assert "serving_batch_size_count" in server.metrics.exposition()[0].decode()


def test_start_fails_clearly_without_a_model_base_path(tmp_path, tiny):
    server = EmbeddedServer(tiny.config(tmp_path / "missing"))

    with pytest.raises(ConfigError, match="is not a directory"):
        server.start()


def test_start_fails_clearly_when_the_grpc_port_is_taken(served, tiny, write_version, tmp_path):
    _, first, _ = served(lambda base: write_version(base, 1))
    second = EmbeddedServer(tiny.config(tmp_path / "base", grpc_port=first.ports.grpc))

    with pytest.raises(ConfigError, match="cannot listen for gRPC"):
        second.start()


def test_stop_drains_in_flight_calls_and_tells_health_watchers(served, tiny, write_version):
    _, server, stubs = served(lambda base: write_version(base, 1))
    health = health_pb2_grpc.HealthStub(stubs.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = stubs.prediction.Predict.future(_slow_request(tiny, 1.0), timeout=TIMEOUT)
    assert tiny.wait_for(
        lambda: (
            'serving_requests_in_flight{protocol="grpc"} 1.0'
            in server.metrics.exposition()[0].decode()
        )
    )

    stopper = threading.Thread(target=server.stop, args=(5.0,))
    stopper.start()

    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    assert in_flight.result().outputs["echo"].string_val == [b"slow-user"]
    stopper.join()
    assert server.wait(0)


def _read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def test_sigterm_drains_the_cli_server_and_exits_zero(tmp_path, tiny, write_version):
    base = tmp_path / "base"
    write_version(base, 1)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable, "-m", "twotower", "serve", "--embedded",
        "--model-base-path", str(base), "--model-name", tiny.model_name,
        "--port", "0", "--rest-api-port", "0", "--drain-grace", "10", "--workers", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True).start()
    try:
        grpc_port, rest_port = _ports_from_log(lines, timeout=60)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        in_flight = stub.Predict.future(_slow_request(tiny, 1.5), timeout=30)
        assert tiny.wait_for(lambda: _in_flight(rest_port) == 1)
        process.send_signal(signal.SIGTERM)

        response = in_flight.result()
        assert response.outputs["echo"].string_val == [b"slow-user"]
        assert process.wait(timeout=30) == 0
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = "".join(lines)
    assert "received SIGTERM; draining" in log
    assert "serving with the embedded server (--embedded)" in log


def _ports_from_log(lines: list[str], timeout: float) -> tuple[int, int]:
    pattern = re.compile(r"gRPC on 127\.0\.0\.1:(\d+), REST on http://127\.0\.0\.1:(\d+)")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(lines):
            match = pattern.search(line)
            if match:
                return int(match.group(1)), int(match.group(2))
        time.sleep(0.1)
    raise AssertionError("the server did not log its ports:\n" + "".join(lines))


def _in_flight(rest_port: int) -> float:
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        page = reply.read().decode()
    match = re.search(r'serving_requests_in_flight\{protocol="grpc"\} (\S+)', page)
    return float(match.group(1)) if match else 0.0
