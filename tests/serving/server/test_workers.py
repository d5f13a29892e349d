"""`twotower serve --embedded --workers N`: worker processes sharing the ports, a supervisor.

The integration tests run the CLI in a subprocess on loopback, with two workers over the tiny
model. Which worker answered is read from `serving_process_info{pid}` on the metrics page, which
a scrape over a fresh connection gets from one worker or the other.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.server.config import (
    ServingConfig,
    VersionPolicy,
    config_from_json,
    config_to_json,
)
from serving.server.supervisor import Supervisor, reserve_port
from tfrs_model.errors import ConfigError
from twotower.cli import build_parser
from twotower.commands.serve import default_workers, serving_config

TIMEOUT = 10
# Fresh connections to try before concluding a worker never answers (the kernel hashes each
# connection to a worker; 2 workers each get one of 40 with probability 1 - 2^-39).
_SCRAPES = 40


# --- units ----------------------------------------------------------------------------------


def test_config_survives_the_trip_to_a_worker(tmp_path):
    config = ServingConfig(
        model_base_path=tmp_path,
        version_policy=VersionPolicy.specific(1, 3),
        version_labels={"stable": 1},
        enable_batching=True,
        workers=2,
        reuse_port=True,
    )
    assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ConfigError, match="unknown ServingConfig fields"):
        config_from_json({**config_to_json(config), "nonsense": 1})


def test_workers_flag_defaults_to_the_cores_and_is_checked(tmp_path):
    args = build_parser().parse_args(["serve", "--model-base-path", str(tmp_path)])
    assert serving_config(args).workers == default_workers() == len(os.sched_getaffinity(0))
    args = build_parser().parse_args(
        ["serve", "--model-base-path", str(tmp_path), "--workers", "3"]
    )
    assert serving_config(args).workers == 3
    with pytest.raises(ConfigError, match="workers must be positive"):
        ServingConfig(model_base_path=tmp_path, workers=0)


@pytest.mark.parametrize(
    ("fields", "cores", "expected"),
    [
        ({"workers": 1}, 2, (0, 0)),  # one process: TensorFlow's choice, one thread per core
        ({"workers": 2}, 2, (1, 1)),  # each worker its share of the cores
        ({"workers": 2}, 8, (4, 4)),
        ({"workers": 3}, 2, (1, 1)),  # never below one thread
        ({"workers": 2, "tensorflow_intra_op_parallelism": 3}, 2, (3, 1)),  # as set
        ({"workers": 1, "tensorflow_inter_op_parallelism": 2}, 8, (0, 2)),
    ],
)
def test_worker_thread_pools_share_the_cores(tmp_path, fields, cores, expected):
    assert ServingConfig(model_base_path=tmp_path, **fields).worker_threads(cores) == expected


def test_workers_get_their_share_of_the_cores_and_bad_sizes_are_refused(tmp_path):
    worker = Supervisor(ServingConfig(model_base_path=tmp_path, workers=2)).worker_config()
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert (worker.workers, worker.reuse_port) == (1, True)
    assert worker.tensorflow_intra_op_parallelism == worker.tensorflow_inter_op_parallelism == share
    with pytest.raises(ConfigError, match="tensorflow_intra_op_parallelism must be >= 0"):
        ServingConfig(model_base_path=tmp_path, tensorflow_intra_op_parallelism=-1)


def test_reserved_ports_are_shared_with_reuse_port_and_refused_to_other_servers():
    held = reserve_port("127.0.0.1", 0)
    port = held.getsockname()[1]
    try:
        shared = reserve_port("127.0.0.1", port)  # a worker's bind, SO_REUSEPORT too
        shared.close()
        other = socket.socket()  # a server without SO_REUSEPORT
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
    finally:
        held.close()


def test_supervisor_refuses_a_missing_model_base_path(tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        Supervisor(ServingConfig(model_base_path=tmp_path / "missing", workers=2))


# --- two worker processes on loopback --------------------------------------------------------


def _scrape(rest_port: int) -> tuple[int, str]:
    """(pid, metrics page) of the worker that a fresh connection reached."""
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
        page = reply.read().decode()
    return int(re.search(r'serving_process_info\{pid="(\d+)"\} 1', page).group(1)), page


def _available_versions(rest_port: int) -> dict[int, int]:
    """pid -> the version it serves, for every worker some of `_SCRAPES` scrapes reached."""
    seen = {}
    for _ in range(_SCRAPES):
        pid, page = _scrape(rest_port)
        match = re.search(r'serving_model_available_version\{model="tiny"\} (\S+)', page)
        seen[pid] = int(float(match.group(1)))
    return seen


def _own_channel(port: int) -> grpc.Channel:
    # A connection of its own, so the kernel may hand it to either worker.
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


@pytest.mark.integration
def test_two_workers_share_the_ports_converge_on_new_versions_and_drain_together(
    tmp_path, tiny, write_version
):
    base = tmp_path / "base"
    write_version(base, 1)
    server = tiny.ServerProcess(base, "--drain-grace", "10", workers=2)
    try:
        assert len(server.worker_pids) == 2
        # Both workers answer on the shared ports, and both serve version 1.
        assert _available_versions(server.rest_port) == dict.fromkeys(server.worker_pids, 1)

        # A new version reaches both.
        write_version(base, 2)
        assert tiny.wait_for(
            lambda: _available_versions(server.rest_port) == dict.fromkeys(server.worker_pids, 2),
            timeout=60,
        )
        channel = _own_channel(server.grpc_port)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(tiny.predict_request(["ab"]), timeout=TIMEOUT)
        assert reply.model_spec.version.value == 2
        channel.close()

        # SIGTERM under load from 16 connections: both drain, no call is CANCELLED.
        codes = _load_then_sigterm(server, tiny)
        assert server.process.wait(timeout=TIMEOUT * 3) == 0
    finally:
        server.stop()
    assert codes["CANCELLED"] == 0, codes
    assert codes["OK"] > 0
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    for pid in server.worker_pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    log = "".join(server.lines)
    assert log.count("received SIGTERM; draining") == 2, log


def _load_then_sigterm(server, tiny) -> Counter:
    codes: Counter = Counter()
    started = threading.Barrier(17)
    request = tiny.predict_request(["u"])

    def client() -> None:
        channel = _own_channel(server.grpc_port)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(request, timeout=TIMEOUT)
        started.wait(TIMEOUT)
        for _ in range(5000):
            try:
                stub.Predict(request, timeout=TIMEOUT)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                if error.code() != grpc.StatusCode.CANCELLED:
                    break  # UNAVAILABLE: the server said it is going
        channel.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    started.wait(TIMEOUT)
    threading.Event().wait(1.0)
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(TIMEOUT * 2)
    return codes


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.integration
def test_a_crashed_worker_is_restarted_and_repeated_crashes_stop_the_server(
    tmp_path, tiny, write_version
):
    base = tmp_path / "base"
    write_version(base, 1)
    server = tiny.ServerProcess(base, "--max-worker-restarts", "1", workers=2)
    try:
        crashed = server.worker_pids[0]
        os.kill(crashed, signal.SIGKILL)
        assert tiny.wait_for(
            lambda: "worker 0 exited with status -9; restarting it" in "".join(server.lines)
        )
        # The restarted worker loads the model and answers on the same ports.
        assert tiny.wait_for(lambda: len(_available_versions(server.rest_port)) == 2, timeout=90)
        assert crashed not in _available_versions(server.rest_port)
        channel = _own_channel(server.grpc_port)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(tiny.predict_request(["ab"]), timeout=TIMEOUT).outputs
        channel.close()

        # A second crash within the minute is one more than --max-worker-restarts 1 allows.
        os.kill(server.worker_pids[1], signal.SIGKILL)
        assert server.process.wait(timeout=60) == 1
    finally:
        server.stop()
    log = "".join(server.lines)
    assert "more than 1 restarts within 60 s; stopping" in log, log
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and any(
        Path(f"/proc/{pid}").exists() and not _is_zombie(pid) for pid in server.worker_pids
    ):
        time.sleep(0.1)
