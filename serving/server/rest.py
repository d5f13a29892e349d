"""TF Serving's REST API over the embedded server's `ServingApi`, plus the Prometheus page.

This module is the HTTP-server-free half: routes, JSON <-> tensors, error documents
(`RestRoutes.handle`). The HTTP server itself, with its connection and size limits, is
`serving.server.rest_server`.

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
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from serving.server.config import ServingConfig, TensorLimits
from serving.server.limits import check_shape
from serving.server.monitoring import PROMETHEUS_PATH, RequestRecord, ServingMetrics
from serving.server.requests import (
    StatusError,
    check_input,
    check_input_names,
    decode_tensor,
    encode_tensor,
    invalid_argument,
)

logger = logging.getLogger(__name__)

_VERSION = r"(?:/versions/(\d+)|/labels/([^/:]+))?"
_PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.I)
_MODEL_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?", re.I)
_B64 = "b64"
_INT64_MAX = 2**63 - 1

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
    except RecursionError as error:
        raise invalid_argument(
            "JSON Parse error: the document is nested too deeply; tensors have at most "
            f"{TensorLimits.max_rank} dimensions"
        ) from error
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
    limits: TensorLimits | int,
) -> dict[str, np.ndarray]:
    """Converts the "instances" or "inputs" payload to one array per input of the signature.

    Args:
      limits: the server's tensor limits (or just its max_batch_size); each input's shape is
        checked against them before its array is built.

    Raises:
      StatusError: INVALID_ARGUMENT for a payload that does not fit the signature: wrong or
        missing input names, ragged lists, values of the wrong type, nesting deeper than
        `limits.max_rank`, a shape or size over the limits.
    """
    if isinstance(limits, int):
        limits = TensorLimits(max_batch_size=limits)
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
        shape = _json_shape(value, name, limits.max_rank)
        check_shape(name, shape, limits, specs[name].has_free_batch_dim)
        array = json_to_array(value, specs[name].dtype, name)
        check_input(signature_name, name, specs[name], array, limits.max_batch_size)
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


@dataclass(frozen=True)
class RestReply:
    """One HTTP answer: status, body and its Content-Type."""

    status: int
    body: bytes
    content_type: str = "application/json"


class RestRoutes:
    """TF Serving's REST routes over a `ServingApi`, independent of the HTTP server.

    `handle` is blocking (it runs the model); the HTTP front end (`serving.server.rest_server`)
    calls it from a worker thread with a body it has already read within the size limit.
    """

    def __init__(self, api: ServingApi, metrics: ServingMetrics, config: ServingConfig) -> None:
        self._api = api
        self._metrics = metrics
        self._config = config

    def handle(self, method: str, path: str, body: bytes) -> RestReply:
        """Answers one request; never raises (a bug becomes a 500 with a logged traceback).

        Args:
          method: "GET" or "POST" (others: 405).
          path: the URL path, percent-encoded as sent (no query).
          body: the request body (POST).
        """
        if method == "GET":
            return self._get(path)
        if method == "POST":
            return self._post(path, body)
        return _error_reply(
            StatusError(grpc.StatusCode.UNIMPLEMENTED, f"method {method} is not supported"), 405
        )

    def _get(self, path: str) -> RestReply:
        if path == PROMETHEUS_PATH:
            body, content_type = self._metrics.exposition()
            return RestReply(200, body, content_type)
        match = _MODEL_PATH.fullmatch(path)
        if match is None:
            return _error_reply(
                StatusError(grpc.StatusCode.NOT_FOUND, f"no such resource: GET {path}")
            )
        name, version, label, subresource = match.groups()
        if subresource:
            return self._json_call(
                "GetModelMetadata", lambda record: self._metadata(name, version, label, record)
            )
        return self._json_call(
            "GetModelStatus", lambda record: self._status(name, version, label, record)
        )

    def _post(self, path: str, body: bytes) -> RestReply:
        match = _PREDICT_PATH.fullmatch(path)
        if match is None:
            return _error_reply(
                StatusError(grpc.StatusCode.NOT_FOUND, f"no such resource: POST {path}")
            )
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            return _error_reply(
                StatusError(
                    grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported; use predict"
                )
            )
        return self._json_call(
            "Predict", lambda record: self._predict(name, version, label, body, record)
        )

    def _predict(
        self,
        name: str,
        version: str | None,
        label: str | None,
        body: bytes,
        record: RequestRecord,
    ) -> dict:
        config = self._config
        if len(body) > config.max_message_bytes:
            raise request_too_large(len(body), config.max_message_bytes)
        deadline = time.monotonic() + config.rest_timeout_s
        signature_name, request_format, payload = parse_predict_body(body)
        spec = _model_spec(name, version, label, signature_name)
        _, signature = self._api.signature(spec, record)
        arrays = decode_json_inputs(
            signature.name, signature.inputs, request_format, payload, config.tensor_limits
        )
        request = predict_pb2.PredictRequest(model_spec=spec)
        for key, array in arrays.items():
            request.inputs[key].CopyFrom(encode_tensor(array, signature.inputs[key].dtype))
        response = self._api.predict(request, deadline, record)
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
        return _as_dict(self._api.model_status(request, record))

    def _metadata(
        self, name: str | None, version: str | None, label: str | None, record: RequestRecord
    ) -> dict:
        if not name:
            raise invalid_argument("Missing model name in request.")
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(name, version, label), metadata_field=[SIGNATURE_DEF_FIELD]
        )
        response = self._api.model_metadata(request, record)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_defs)
        # TF Serving prints the packed map unpacked, under metadata.signature_def.
        return {
            "model_spec": _as_dict(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _as_dict(signature_defs)},
        }

    def _json_call(self, api: str, call: Callable[[RequestRecord], dict]) -> RestReply:
        with self._metrics.request(api, "rest") as record:
            try:
                document = call(record)
            except StatusError as error:
                record.code = error.code.name
                return _error_reply(error)
            except Exception as error:  # a bug: answer 500 rather than drop the connection
                logger.exception("REST %s failed", api)
                record.code = grpc.StatusCode.INTERNAL.name
                return _error_reply(
                    StatusError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
                )
        return RestReply(200, json.dumps(document, indent=1).encode())


def error_body(message: str) -> bytes:
    """TF Serving's REST error document, {"error": message}, as bytes."""
    return json.dumps({"error": message}).encode()


def _error_reply(error: StatusError, status: int | None = None) -> RestReply:
    return RestReply(status or http_status(error.code), error_body(error.message))


def request_too_large(size: int, limit: int) -> StatusError:
    """The INVALID_ARGUMENT for a body of `size` bytes (at least) over `limit`."""
    return invalid_argument(
        f"the request is {size} bytes, over this server's max_message_bytes of {limit} "
        "(--max-message-bytes); send fewer rows per request"
    )


def _model_spec(
    name: str, version: str | None, label: str | None, signature_name: str = ""
) -> model_pb2.ModelSpec:
    """The ModelSpec of a REST path.

    Raises:
      StatusError: INVALID_ARGUMENT, the version number does not fit in an int64.
    """
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name), signature_name=signature_name)
    if version is not None:
        number = int(version)
        if number > _INT64_MAX:
            raise invalid_argument(
                f"version {version} in the URL does not fit in an int64 (at most {_INT64_MAX})"
            )
        spec.version.value = number
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


def _json_shape(
    value: Any, name: str, max_rank: int = TensorLimits.max_rank, depth: int = 0
) -> tuple[int, ...]:
    """The shape of nested JSON lists.

    Raises:
      StatusError: INVALID_ARGUMENT, ragged lists or nesting deeper than `max_rank`.
    """
    if not isinstance(value, list):
        return ()
    if depth >= max_rank:
        raise invalid_argument(
            f"input {name!r} is nested more than {max_rank} lists deep, over this server's "
            "limit on tensor dimensions"
        )
    if not value:
        return (0,)
    shapes = {_json_shape(item, name, max_rank, depth + 1) for item in value}
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
    if target.kind in "iu":
        if not isinstance(value, int):
            raise invalid_argument(f"input {name!r} expects integers ({target}), got {value}")
        bounds = np.iinfo(target)
        if not bounds.min <= value <= bounds.max:
            # numpy would raise OverflowError (a 500) building the array.
            raise invalid_argument(
                f"input {name!r} expects {target} values in [{bounds.min}, {bounds.max}], "
                f"got {value}"
            )
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
