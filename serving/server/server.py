"""The embedded model server: TensorFlow Serving's gRPC API (and REST) in this Python process.

Layers, from the inside out:
  `ServingApi` (`serving.server.api`): Predict, GetModelMetadata and GetModelStatus on TF
    Serving's request and response protos; transport-free, raising `StatusError`.
  Front ends over it: the gRPC servicers (`serving.server.services`) with `grpc.health.v1.Health`,
    and the REST server (`serving.server.rest`).
  `EmbeddedServer`: owns the model manager, both transports, health and metrics; `start()`,
    `stop(grace)`, `wait()`. `run_until_signal(config)` serves until SIGTERM or SIGINT, then
    drains: health NOT_SERVING, no new calls, in-flight calls finish, exit status 0.

A client written against TF Serving works unchanged: same services, model specs, signature
defaults, output filters, TensorProto encodings and error codes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.server.api import ServingApi
from serving.server.config import ServingConfig
from serving.server.drain import Admission
from serving.server.model_manager import ModelManager
from serving.server.monitoring import ServingMetrics
from serving.server.rest_server import RestServer
from serving.server.services import (
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    ModelServicer,
    PredictionServicer,
)
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

# Health is reported for the whole server ("") and for each service, as gRPC clients may ask.
_HEALTH_SERVICES = (health.OVERALL_HEALTH, PREDICTION_SERVICE, MODEL_SERVICE)
# Beyond this, gRPC itself refuses a message before reading it (RESOURCE_EXHAUSTED); up to it,
# the server reads the message and answers INVALID_ARGUMENT naming max_message_bytes.
_HARD_LIMIT_FACTOR = 2
# While draining, this long without an arriving gRPC call means clients have stopped sending.
_DRAIN_QUIET_S = 0.1


@dataclass(frozen=True)
class BoundPorts:
    """The ports the servers listen on; `rest` is None when REST is disabled."""

    grpc: int
    rest: int | None


class EmbeddedServer:
    """TF Serving's gRPC and REST APIs for one model, served from this process.

    Usage:
      server = EmbeddedServer(config)
      ports = server.start()      # loads the model first; port 0 picks a free port
      ...
      server.stop(grace=5.0)      # drains: health NOT_SERVING, in-flight calls finish

    Attributes:
      metrics: this server's Prometheus metrics (its own registry).
      manager: the model manager (versions, states).
      api: the transport-free API the gRPC and REST front ends share.
    """

    def __init__(self, config: ServingConfig) -> None:
        self._config = config
        self.metrics = ServingMetrics()
        self._health = health.HealthServicer()
        self._set_serving(False)
        self.manager = ModelManager(config, self.metrics, on_availability=self._set_serving)
        self.api = ServingApi(self.manager)
        self._admission = Admission()
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None
        self._ports: BoundPorts | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def ports(self) -> BoundPorts:
        if self._ports is None:
            raise RuntimeError("the server is not started; call start() first")
        return self._ports

    def start(self) -> BoundPorts:
        """Binds the ports, loads the model's versions, then starts answering.

        Returns:
          The bound ports (the chosen ones where the config says 0).

        Raises:
          ConfigError: a port cannot be bound, or model_base_path is not a directory.
        """
        config = self._config
        self._grpc = self._make_grpc_server()
        address = _join_host_port(config.host, config.grpc_port)
        try:
            grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError as error:
            raise ConfigError(
                f"cannot listen for gRPC on {address}: {error}; is it in use?"
            ) from error
        try:
            if config.rest_port is not None:
                self._rest = RestServer(self.api, self.metrics, config)
            self.manager.start()
        except BaseException:
            self._close_partial_start()
            raise
        self._grpc.start()
        if self._rest is not None:
            self._rest.start()
        self._ports = BoundPorts(grpc_port, self._rest.port if self._rest is not None else None)
        logger.info(
            "embedded model server for model %r (versions %s): gRPC on %s%s",
            config.model_name,
            list(self.manager.available_versions) or "none yet",
            _join_host_port(config.host, grpc_port),
            f", REST on http://{_join_host_port(config.host, self._ports.rest)}"
            if self._ports.rest is not None
            else "",
        )
        return self._ports

    def stop(self, grace: float | None = None) -> None:
        """Drains and stops: health NOT_SERVING, new calls refused, in-flight calls finish.

        gRPC calls arriving from here on end UNAVAILABLE (retryable) and REST connections are
        refused; calls and requests already admitted run to their end. gRPC's own shutdown
        starts only once gRPC has been quiet (`serving.server.drain`), so no call it received
        is cancelled.

        Args:
          grace: seconds in-flight calls may still take; then they are cancelled. None waits
            for them without limit.
        """
        with self._stop_lock:
            if self._stopped.is_set() or self._grpc is None:
                self._stopped.set()
                return
            logger.info("draining: health NOT_SERVING, finishing in-flight requests")
            end = None if grace is None else time.monotonic() + grace
            # Health watchers hear NOT_SERVING first, so load balancers stop sending.
            self._health.enter_graceful_shutdown()
            rest_stopper = None
            if self._rest is not None:
                rest_stopper = threading.Thread(
                    target=self._rest.stop, args=(grace,), name="rest-drain"
                )
                rest_stopper.start()
            self._admission.drain(_DRAIN_QUIET_S, grace)
            remaining = None if end is None else max(0.0, end - time.monotonic())
            self._grpc.stop(remaining).wait()
            if rest_stopper is not None:
                rest_stopper.join()
            self.manager.stop()
            logger.info("stopped")
            self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the server has stopped; returns False if `timeout` passed first."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(self._config.drain_grace_s)

    def _make_grpc_server(self) -> grpc.Server:
        config = self._config
        # gRPC takes a C int here.
        hard_limit = min(_HARD_LIMIT_FACTOR * config.max_message_bytes, 2**31 - 1)
        server = grpc.server(
            futures.ThreadPoolExecutor(config.grpc_max_workers, thread_name_prefix="grpc"),
            options=[
                # Set explicitly: gRPC's default on Linux is on, which would let any second
                # server bind the same port and split the calls. On only for the workers of one
                # supervisor (`serving.server.supervisor`), which share the port on purpose.
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
                ("grpc.max_receive_message_length", hard_limit),
                ("grpc.max_send_message_length", -1),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.api, self.metrics, self._admission), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.api, self.metrics, self._admission), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        return server

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in _HEALTH_SERVICES:
            self._health.set(service, status)

    def _close_partial_start(self) -> None:
        if self._rest is not None:
            self._rest.stop(0)
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(0)


def run_until_signal(
    config: ServingConfig,
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    on_ready: Callable[[BoundPorts], None] | None = None,
) -> int:
    """Serves until one of `signals` arrives, then drains for up to `config.drain_grace_s`.

    Must run in the main thread (Python delivers signals there). Returns 0, the exit status.
    `on_ready(ports)` is called once the server answers (a worker tells its supervisor).

    Raises:
      ConfigError: as `EmbeddedServer.start`.
    """
    received: list[int] = []
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        received.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        server = EmbeddedServer(config)
        ports = server.start()
        if on_ready is not None:
            on_ready(ports)
        # A timed wait, so the main thread wakes up to run the Python signal handler promptly.
        while not stop_requested.wait(0.5):
            pass
        logger.info(
            "received %s; draining for up to %.0f s",
            signal.Signals(received[0]).name,
            config.drain_grace_s,
        )
        server.stop(config.drain_grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _join_host_port(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
