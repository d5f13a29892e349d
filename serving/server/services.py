"""The gRPC front end: TF Serving's PredictionService and ModelService over a `ServingApi`.

The servicers implement the official generated stubs (`tensorflow_serving.apis`): Predict and
GetModelMetadata, and GetModelStatus; the other methods stay UNIMPLEMENTED. Each call is counted
in the metrics, and a `StatusError` becomes the call's gRPC status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.server.api import ServingApi
from serving.server.drain import Admission
from serving.server.monitoring import RequestRecord, ServingMetrics
from serving.server.requests import StatusError

logger = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


class _Answering:
    """What both servicers share: the API, the metrics, and admission while draining."""

    def __init__(
        self, api: ServingApi, metrics: ServingMetrics, admission: Admission | None = None
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._admission = admission or Admission()

    def _answer(
        self, name: str, context: grpc.ServicerContext, call: Callable[[RequestRecord], Any]
    ) -> Any:
        return _answer(self._admission, self._metrics, name, context, call)


class PredictionServicer(_Answering, prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService/Predict and GetModelMetadata; the other methods stay UNIMPLEMENTED."""

    def Predict(self, request, context):
        return self._answer(
            "Predict",
            context,
            lambda record: self._api.predict(request, _deadline(context), record),
        )

    def GetModelMetadata(self, request, context):
        return self._answer(
            "GetModelMetadata", context, lambda record: self._api.model_metadata(request, record)
        )


class ModelServicer(_Answering, model_service_pb2_grpc.ModelServiceServicer):
    """ModelService/GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def GetModelStatus(self, request, context):
        return self._answer(
            "GetModelStatus", context, lambda record: self._api.model_status(request, record)
        )


def _answer(
    admission: Admission,
    metrics: ServingMetrics,
    api: str,
    context: grpc.ServicerContext,
    call: Callable[[RequestRecord], Any],
) -> Any:
    """Runs `call(record)`, counting it; a StatusError becomes the call's gRPC status.

    While the server drains, the call is not run: it ends UNAVAILABLE, which clients retry.
    """
    with metrics.request(api, "grpc") as record:
        if not admission.admit():
            record.code = grpc.StatusCode.UNAVAILABLE.name
            code = grpc.StatusCode.UNAVAILABLE
            message = "the server is shutting down; retry on another replica"
            context.abort(code, message)
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
        finally:
            admission.release()
    context.abort(code, message)


def _deadline(context: grpc.ServicerContext) -> float | None:
    """The client's deadline as a `time.monotonic()` value; None when it set none."""
    remaining = context.time_remaining()
    # Without a client deadline gRPC reports a practically infinite remaining time.
    if remaining is None or remaining > 1e8:
        return None
    return time.monotonic() + remaining
