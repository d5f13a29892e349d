"""TF Serving's Predict, GetModelMetadata and GetModelStatus, independent of the transport.

`ServingApi` works on TF Serving's request and response protos, with its semantics and status
codes, and raises `StatusError`; the gRPC servicers (`serving.server.services`) and the REST front
end (`serving.server.rest`) both call it, so the two transports answer alike.
"""

from __future__ import annotations

import time

from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from serving.server.model_manager import ModelManager
from serving.server.monitoring import RequestRecord
from serving.server.requests import decode_inputs, encode_tensor, invalid_argument
from serving.server.servable import Servable, Signature

SIGNATURE_DEF_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving supports


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
            signature.name, signature.inputs, request.inputs, self._config.tensor_limits
        )
        started = time.perf_counter()
        outputs = signature.run(inputs, request.output_filter, deadline)
        if record is not None:
            record.runtime_s = time.perf_counter() - started
        response = predict_pb2.PredictResponse(model_spec=_answering_spec(servable, signature.name))
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(encode_tensor(array, signature.outputs[key].dtype))
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
