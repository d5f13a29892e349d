"""TF Serving's REST API over the embedded server's `ServingApi`, plus the Prometheus page.

Routes (TF Serving's paths; a version is `/versions/<v>` or `/labels/<label>`, optional):
  GET  /v1/models/<name>[/versions/<v>]            model status, GetModelStatusResponse as JSON
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature defs, as TF Serving prints them
  POST /v1/models/<name>[/versions/<v>]:predict    predict, TF Serving's JSON format
  GET  /monitoring/prometheus/metrics               Prometheus text exposition

Predict bodies are {"signature_name": ..., "instances": [...]} (row format: one entry per batch
row, an object per row when the signature has several inputs) or {"inputs": ...} (columnar:
one value, or an object of values, with the batch dimension inside). Answers are
{"predictions": [...]} or {"outputs": ...} to match. Binary strings travel as {"b64": "..."};
string outputs whose key ends in "_bytes" are sent that way too. Errors are {"error": message}
with TF Serving's HTTP status for the gRPC code (INVALID_ARGUMENT and FAILED_PRECONDITION 400,
NOT_FOUND 404, DEADLINE_EXCEEDED 504, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from export.specs import TensorSpec, dtype_name
from serving.codec import TensorCodecError, numpy_dtype
from serving.server.api import SIGNATURE_DEF_FIELD, ServingApi
from serving.server.config import ServingConfig
from serving.server.monitoring import PROMETHEUS_PATH, RequestRecord, ServingMetrics
from serving.server.requests import (
    StatusError,
    check_input,
    check_input_names,
    decode_tensor,
    encode_tensor,
    invalid_argument,
)
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

_VERSION = r"(?:/versions/(\d+)|/labels/([^/:]+))?"
_PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.I)
_MODEL_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?", re.I)
_B64 = "b64"

# TF Serving's mapping of status codes to HTTP statuses (http_server.cc, ToHTTPStatusCode).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for gRPC status `code`."""
    return _HTTP_STATUS.get(code, 500)


def parse_predict_body(body: bytes) -> tuple[str, str, Any]:
    """Splits a predict body into (signature_name, format, payload).

    `format` is "row" for "instances" and "columnar" for "inputs".

    Raises:
      StatusError: INVALID_ARGUMENT, the body is not a JSON object with exactly one of
        "instances" and "inputs", or signature_name is not a string.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}") from error
    if not isinstance(document, dict):
        raise invalid_argument("the request body must be a JSON object")
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances == has_inputs:
        raise invalid_argument(
            "the request body must have exactly one of the 'instances' (row format) and "
            "'inputs' (columnar format) keys"
        )
    if has_instances:
        return signature_name, "row", document["instances"]
    return signature_name, "columnar", document["inputs"]


def decode_json_inputs(
    signature_name: str,
    specs: Mapping[str, TensorSpec],
    request_format: str,
    payload: Any,
    max_batch_size: int,
) -> dict[str, np.ndarray]:
    """Converts the "instances" or "inputs" payload to one array per input of the signature.

    Raises:
      StatusError: INVALID_ARGUMENT for a payload that does not fit the signature: wrong or
        missing input names, ragged lists, values of the wrong type, a batch too large.
    """
    if request_format == "row":
        if not isinstance(payload, list) or not payload:
            raise invalid_argument("'instances' must be a non-empty list, one entry per row")
        if _is_named(payload[0]):
            for row, instance in enumerate(payload):
                if not _is_named(instance) or instance.keys() != payload[0].keys():
                    raise invalid_argument(
                        f"instance {row} must be an object with the keys of instance 0: "
                        f"{sorted(payload[0])}"
                    )
            columns = {name: [instance[name] for instance in payload] for name in payload[0]}
        else:
            columns = {_only_input(signature_name, specs): payload}
    elif _is_named(payload):
        columns = payload
    else:
        columns = {_only_input(signature_name, specs): payload}
    check_input_names(signature_name, specs, columns)
    arrays = {}
    for name, value in columns.items():
        array = json_to_array(value, specs[name].dtype, name)
        check_input(signature_name, name, specs[name], array, max_batch_size)
        arrays[name] = array
    return arrays


def json_to_array(value: Any, dtype: int, name: str) -> np.ndarray:
    """Converts a JSON value (nested lists of scalars) to an array of DataType `dtype`.

    Strings are UTF-8 encoded; {"b64": "..."} objects are decoded to bytes.

    Raises:
      StatusError: INVALID_ARGUMENT for ragged lists or values of the wrong JSON type.
    """
    shape = _json_shape(value, name)
    try:
        target = numpy_dtype(dtype)
    except TensorCodecError as error:
        raise invalid_argument(
            f"{dtype_name(dtype)} tensors cannot be converted from JSON"
        ) from error
    leaves = [_leaf(item, target, name) for item in _flatten(value)]
    if target.kind == "O":
        flat = np.empty(len(leaves), dtype=object)
        flat[:] = leaves
    else:
        flat = np.array(leaves, dtype=target)
    return flat.reshape(shape)


def encode_json_outputs(outputs: Mapping[str, np.ndarray], request_format: str) -> dict:
    """The predict answer: {"predictions": [...]} for the row format, {"outputs": ...} else.

    Raises:
      StatusError: INVALID_ARGUMENT, a row-format answer whose outputs are scalars or differ in
        batch size.
    """
    values = {key: _to_json(array, key) for key, array in outputs.items()}
    if request_format == "columnar":
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    batch_sizes = {key: array.shape[0] if array.ndim else None for key, array in outputs.items()}
    if None in batch_sizes.values() or len(set(batch_sizes.values())) > 1:
        raise invalid_argument(
            f"outputs have no common batch size {batch_sizes}; use the columnar 'inputs' format"
        )
    rows = next(iter(batch_sizes.values()), 0)
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{key: values[key][row] for key in values} for row in range(rows)]}


class RestServer:
    """A threaded HTTP server answering TF Serving's REST API; binds when constructed.

    Raises:
      ConfigError: the REST port cannot be bound.
    """

    def __init__(self, api: ServingApi, metrics: ServingMetrics, config: ServingConfig) -> None:
        try:
            self._httpd = _HttpServer((config.host, config.rest_port), api, metrics, config)
        except OSError as error:
            raise ConfigError(
                f"cannot listen for REST on {config.host}:{config.rest_port}: {error}"
            ) from error
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="rest",
            daemon=True,
        )
        self._thread.start()

    def stop(self, grace: float | None) -> None:
        """Stops accepting, lets requests in flight finish for up to `grace` seconds, closes."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.wait_idle(grace)
        self._httpd.server_close()


class _HttpServer(ThreadingHTTPServer):
    """Holds what the handlers need, and counts requests in flight for the drain."""

    daemon_threads = True
    block_on_close = False  # stop() waits for in-flight requests itself, with a time limit

    def __init__(
        self,
        address: tuple[str, int],
        api: ServingApi,
        metrics: ServingMetrics,
        config: ServingConfig,
    ) -> None:
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.api = api
        self.metrics = metrics
        self.config = config
        self._in_flight = 0
        self._idle = threading.Condition()

    def process_request_thread(self, request, client_address):
        with self._idle:
            self._in_flight += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    server_version = "twotower-embedded-serving"
    timeout = 60  # seconds a connection may stay silent mid-request

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == PROMETHEUS_PATH:
            body, content_type = self.server.metrics.exposition()
            self._send(200, body, content_type)
            return
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            self._send_error(
                StatusError(grpc.StatusCode.NOT_FOUND, f"no such resource: GET {path}")
            )
            return
        name, version, label, subresource = match.groups()
        if subresource:
            self._json_call(
                "GetModelMetadata", lambda record: self._metadata(name, version, label, record)
            )
        else:
            self._json_call(
                "GetModelStatus", lambda record: self._status(name, version, label, record)
            )

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        match = _PREDICT_PATH.fullmatch(path)
        if match is None:
            self._send_error(
                StatusError(grpc.StatusCode.NOT_FOUND, f"no such resource: POST {path}")
            )
            return
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            self._send_error(
                StatusError(
                    grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported; use predict"
                )
            )
            return
        self._json_call("Predict", lambda record: self._predict(name, version, label, record))

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _predict(
        self, name: str, version: str | None, label: str | None, record: RequestRecord
    ) -> dict:
        config = self.server.config
        length = int(self.headers.get("Content-Length") or 0)
        if length > config.max_message_bytes:
            raise invalid_argument(
                f"the request is {length} bytes, over this server's max_message_bytes of "
                f"{config.max_message_bytes}; send fewer rows per request"
            )
        deadline = time.monotonic() + config.rest_timeout_s
        signature_name, request_format, payload = parse_predict_body(self.rfile.read(length))
        spec = _model_spec(name, version, label, signature_name)
        _, signature = self.server.api.signature(spec, record)
        arrays = decode_json_inputs(
            signature.name, signature.inputs, request_format, payload, config.max_batch_size
        )
        request = predict_pb2.PredictRequest(model_spec=spec)
        for key, array in arrays.items():
            request.inputs[key].CopyFrom(encode_tensor(array, signature.inputs[key].dtype))
        response = self.server.api.predict(request, deadline, record)
        outputs = {key: decode_tensor(proto) for key, proto in response.outputs.items()}
        return encode_json_outputs(outputs, request_format)

    def _status(
        self, name: str | None, version: str | None, label: str | None, record: RequestRecord
    ) -> dict:
        if not name:
            raise invalid_argument("Missing model name in request.")
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=_model_spec(name, version, label)
        )
        return _as_dict(self.server.api.model_status(request, record))

    def _metadata(
        self, name: str | None, version: str | None, label: str | None, record: RequestRecord
    ) -> dict:
        if not name:
            raise invalid_argument("Missing model name in request.")
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(name, version, label), metadata_field=[SIGNATURE_DEF_FIELD]
        )
        response = self.server.api.model_metadata(request, record)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_defs)
        # TF Serving prints the packed map unpacked, under metadata.signature_def.
        return {
            "model_spec": _as_dict(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _as_dict(signature_defs)},
        }

    def _json_call(self, api: str, call: Callable[[RequestRecord], dict]) -> None:
        with self.server.metrics.request(api, "rest") as record:
            try:
                document = call(record)
            except StatusError as error:
                record.code = error.code.name
                self._send_error(error)
                return
            except Exception as error:  # a bug: answer 500 rather than drop the connection
                logger.exception("REST %s failed", api)
                record.code = grpc.StatusCode.INTERNAL.name
                self._send_error(
                    StatusError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
                )
                return
        self._send(200, json.dumps(document, indent=1).encode(), "application/json")

    def _send_error(self, error: StatusError) -> None:
        body = json.dumps({"error": error.message}).encode()
        self._send(http_status(error.code), body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _model_spec(
    name: str, version: str | None, label: str | None, signature_name: str = ""
) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name), signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def _as_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _is_named(value: Any) -> bool:
    """True for a JSON object of named inputs; a {"b64": ...} object is a single value."""
    return isinstance(value, dict) and set(value) != {_B64}


def _only_input(signature_name: str, specs: Mapping[str, TensorSpec]) -> str:
    if len(specs) != 1:
        raise invalid_argument(
            f"signature {signature_name!r} has {len(specs)} inputs ({', '.join(sorted(specs))}); "
            'name them: {"instances": [{"<input>": ...}, ...]} or {"inputs": {"<input>": ...}}'
        )
    return next(iter(specs))


def _json_shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_json_shape(item, name) for item in value}
    if len(shapes) > 1:
        raise invalid_argument(f"input {name!r} is a ragged list (rows of shapes {sorted(shapes)})")
    return (len(value), *shapes.pop())


def _flatten(value: Any):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def _leaf(value: Any, target: np.dtype, name: str) -> Any:
    """Checks and converts one JSON scalar to a value of numpy dtype `target`."""
    if target.kind == "O":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict) and set(value) == {_B64} and isinstance(value[_B64], str):
            try:
                return base64.b64decode(value[_B64], validate=True)
            except binascii.Error as error:
                raise invalid_argument(f"input {name!r}: invalid base64 in {value}") from error
        raise invalid_argument(f"input {name!r} expects strings, got {json.dumps(value)}")
    if target == np.bool_:
        if isinstance(value, bool):
            return value
        raise invalid_argument(f"input {name!r} expects true or false, got {json.dumps(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_argument(
            f"input {name!r} expects numbers ({target}), got {json.dumps(value)}"
        )
    if target.kind in "iu" and not isinstance(value, int):
        raise invalid_argument(f"input {name!r} expects integers ({target}), got {value}")
    return value


def _to_json(array: np.ndarray, key: str) -> Any:
    """Nested lists for JSON: strings decoded (b64 objects for "*_bytes" keys), floats short."""
    if array.dtype == object:
        if key.endswith("_bytes"):
            convert = lambda value: {_B64: base64.b64encode(value).decode("ascii")}  # noqa: E731
        else:
            convert = lambda value: value.decode("utf-8", errors="replace")  # noqa: E731
        flat = [convert(value) for value in array.reshape(-1)]
    elif array.dtype == np.float32:
        # float32 -> the shortest decimal that reads back as the same float32, as TF Serving does
        flat = [float(str(value)) for value in array.reshape(-1)]
    else:
        return array.tolist()
    return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
