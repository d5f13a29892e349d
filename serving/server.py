"""The embedded model server: TensorFlow Serving's gRPC API (and REST) in this Python process.

Layers, from the inside out:
  `ServingApi`: Predict, GetModelMetadata and GetModelStatus on TF Serving's request and response
    protos, with its semantics and status codes; transport-free, raising `StatusError`.
  gRPC servicers: `tensorflow.serving.PredictionService`, `tensorflow.serving.ModelService` and
    `grpc.health.v1.Health` through the official generated stubs; `serving.rest` is the REST one.
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
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.config import ServingConfig
from serving.model_manager import ModelManager, Servable, Signature
from serving.monitoring import RequestRecord, ServingMetrics
from serving.tensors import StatusError, decode_inputs, invalid_argument, to_tensor_proto
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving supports
_PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
_MODEL_SERVICE = "tensorflow.serving.ModelService"
# Health is reported for the whole server ("") and for each service, as gRPC clients may ask.
_HEALTH_SERVICES = (health.OVERALL_HEALTH, _PREDICTION_SERVICE, _MODEL_SERVICE)
# Beyond this, gRPC itself refuses a message before reading it (RESOURCE_EXHAUSTED); up to it,
# the server reads the message and answers INVALID_ARGUMENT naming max_message_bytes.
_HARD_LIMIT_FACTOR = 2


class ServingApi:
    """TF Serving's Predict, GetModelMetadata and GetModelStatus, independent of the transport.

    Each method takes the request proto and an optional `RequestRecord` whose model and
    signature labels it fills in for the metrics, and raises `StatusError` on failure.
    """

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self._config = manager.config

    def servable(
        self, model_spec: model_pb2.ModelSpec, record: RequestRecord | None = None
    ) -> Servable:
        """The version `model_spec` asks for (version, version_label, or the latest).

        Raises:
          StatusError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an empty
            name or an unknown label.
        """
        if record is not None and model_spec.name == self._config.model_name:
            record.model = model_spec.name
        return self._manager.resolve(*_version_choice(model_spec))

    def signature(
        self, model_spec: model_pb2.ModelSpec, record: RequestRecord | None = None
    ) -> tuple[Servable, Signature]:
        """The servable and signature `model_spec` names; "" is "serving_default".

        Raises:
          StatusError: as `servable`, and FAILED_PRECONDITION for an unknown signature.
        """
        servable = self.servable(model_spec, record)
        signature = servable.signature(model_spec.signature_name)
        if record is not None:
            record.signature = signature.name
        return servable, signature

    def predict(
        self,
        request: predict_pb2.PredictRequest,
        deadline: float | None = None,
        record: RequestRecord | None = None,
    ) -> predict_pb2.PredictResponse:
        """Runs one signature on the request's input tensors.

        Args:
          request: model_spec (name; version or version_label; signature_name), inputs by key,
            and output_filter (empty: all outputs).
          deadline: `time.monotonic()` value after which the answer is of no use.
          record: gets the model and signature labels for the metrics.

        Returns:
          The outputs by key, and the model_spec that answered (name, version, signature_name).

        Raises:
          StatusError: NOT_FOUND (model, version), FAILED_PRECONDITION (signature),
            INVALID_ARGUMENT (missing, extra or mistyped inputs, bad output_filter, a request
            over max_message_bytes or a batch over max_batch_size), DEADLINE_EXCEEDED.
        """
        size = request.ByteSize()
        if size > self._config.max_message_bytes:
            raise invalid_argument(
                f"the request is {size} bytes, over this server's max_message_bytes of "
                f"{self._config.max_message_bytes}; send fewer rows per request"
            )
        servable, signature = self.signature(request.model_spec, record)
        inputs = decode_inputs(
            signature.name, signature.inputs, request.inputs, self._config.max_batch_size
        )
        outputs = signature.run(inputs, request.output_filter, deadline)
        response = predict_pb2.PredictResponse(model_spec=_answering_spec(servable, signature.name))
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(to_tensor_proto(array, signature.outputs[key].dtype))
        return response

    def model_metadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        record: RequestRecord | None = None,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The SignatureDefs of a version, packed in `metadata["signature_def"]` as TF Serving does.

        Raises:
          StatusError: INVALID_ARGUMENT for a missing model_spec, no metadata_field or one
            other than "signature_def"; as `servable` for the model_spec.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field; the "
                f"supported one is {SIGNATURE_DEF_FIELD!r}"
            )
        for name in request.metadata_field:
            if name != SIGNATURE_DEF_FIELD:
                raise invalid_argument(
                    f"Metadata field {name} is not supported; the supported one is "
                    f"{SIGNATURE_DEF_FIELD!r}"
                )
        servable = self.servable(request.model_spec, record)
        packed = any_pb2.Any()
        packed.Pack(servable.signature_def_map)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_answering_spec(servable)
        )
        response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
        return response

    def model_status(
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        record: RequestRecord | None = None,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """The state of every known version (highest first), or of the one version asked for.

        Failed versions are END with the load error in `status`.

        Raises:
          StatusError: INVALID_ARGUMENT for a missing model_spec or an unknown label; NOT_FOUND
            for an unknown model or version.
        """
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        if record is not None and spec.name == self._config.model_name:
            record.model = spec.name
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self._manager.status(*_version_choice(spec)):
            entry = response.model_version_status.add(
                version=status.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(status.state),
            )
            entry.status.error_code = status.error_code.value[0]
            entry.status.error_message = status.error_message
        return response


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService/Predict and GetModelMetadata; the other methods stay UNIMPLEMENTED."""

    def __init__(self, api: ServingApi, metrics: ServingMetrics) -> None:
        self._api = api
        self._metrics = metrics

    def Predict(self, request, context):
        return _answer(
            self._metrics,
            "Predict",
            context,
            lambda record: self._api.predict(request, _deadline(context), record),
        )

    def GetModelMetadata(self, request, context):
        return _answer(
            self._metrics,
            "GetModelMetadata",
            context,
            lambda record: self._api.model_metadata(request, record),
        )


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """ModelService/GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def __init__(self, api: ServingApi, metrics: ServingMetrics) -> None:
        self._api = api
        self._metrics = metrics

    def GetModelStatus(self, request, context):
        return _answer(
            self._metrics,
            "GetModelStatus",
            context,
            lambda record: self._api.model_status(request, record),
        )


def _answer(metrics: ServingMetrics, api: str, context: grpc.ServicerContext, call):
    """Runs `call(record)`, counting it; a StatusError becomes the call's gRPC status."""
    with metrics.request(api, "grpc") as record:
        try:
            return call(record)
        except StatusError as error:
            record.code = error.code.name
            message = error.message
            code = error.code
        except Exception as error:  # a bug: answer INTERNAL rather than hang the client
            logger.exception("%s failed", api)
            record.code = grpc.StatusCode.INTERNAL.name
            code, message = grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"
    context.abort(code, message)


def _version_choice(spec: model_pb2.ModelSpec) -> tuple[str, int | None, str | None]:
    """(name, version or None, label or None) from a ModelSpec's version_choice oneof."""
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return spec.name, version, label


def _answering_spec(servable: Servable, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    # Without a client deadline gRPC reports a practically infinite remaining time.
    if remaining is None or remaining > 1e8:
        return None
    return time.monotonic() + remaining


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
        self._grpc: grpc.Server | None = None
        self._rest = None
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
        from serving.rest import RestServer

        config = self._config
        self._grpc = self._make_grpc_server()
        address = _join_host_port(config.host, config.grpc_port)
        try:
            grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError as error:
            raise ConfigError(
                f"cannot listen for gRPC on {address}: {error}; is it in use?"
            ) from None
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

        Args:
          grace: seconds in-flight calls may still take; then they are cancelled. None waits
            for them without limit.
        """
        with self._stop_lock:
            if self._stopped.is_set() or self._grpc is None:
                self._stopped.set()
                return
            logger.info("draining: health NOT_SERVING, finishing in-flight requests")
            # Health watchers hear NOT_SERVING first, so load balancers stop sending.
            self._health.enter_graceful_shutdown()
            stopped = self._grpc.stop(grace)
            if self._rest is not None:
                self._rest.stop(grace)
            stopped.wait()
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
                # Without this Linux lets a second server bind the same port and split the calls.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", hard_limit),
                ("grpc.max_send_message_length", -1),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self.api, self.metrics), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            _ModelServicer(self.api, self.metrics), server
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
    config: ServingConfig, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> int:
    """Serves until one of `signals` arrives, then drains for up to `config.drain_grace_s`.

    Must run in the main thread (Python delivers signals there). Returns 0, the exit status.

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
        server.start()
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
