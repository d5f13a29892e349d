"""The gRPC client of served two-tower models: `TwoTowerClient` and what it is built from.

Modules:
  `channel`: `ClientConfig`, `TlsConfig`, `RetryPolicy` (rendered into gRPC's service config),
    `channel_options`, `create_channel`.
  `client`: `TwoTowerClient`, typed calls of the exported signatures.
  `requests`: building PredictRequests and reading the answers, no channel needed.
  `results`: the typed results (`Recommendation`, `ModelMetadata`, `ModelStatus`, ...).
  `errors`: `ServingError` (with the gRPC code and a hint) and `ResponseError`.

Tensors convert with `serving.codec`, shared with the embedded server.
"""

from serving.client.channel import (
    ClientConfig,
    RetryPolicy,
    TlsConfig,
    channel_options,
    create_channel,
)
from serving.client.client import TwoTowerClient
from serving.client.errors import ResponseError, ServingError, hint_for
from serving.client.requests import (
    build_predict_request,
    filter_pairs,
    filtered_inputs,
    fit_inputs,
    model_spec,
    pad_ragged,
    parse_metadata,
    parse_predict_response,
    parse_status,
    recommend_inputs,
    signature_of,
)
from serving.client.results import (
    ModelMetadata,
    ModelStatus,
    QueryResult,
    Recommendation,
    SignatureDescription,
    VersionStatus,
)
from serving.codec import string_array

__all__ = [
    "ClientConfig",
    "ModelMetadata",
    "ModelStatus",
    "QueryResult",
    "Recommendation",
    "ResponseError",
    "RetryPolicy",
    "ServingError",
    "SignatureDescription",
    "TlsConfig",
    "TwoTowerClient",
    "VersionStatus",
    "build_predict_request",
    "channel_options",
    "create_channel",
    "filter_pairs",
    "filtered_inputs",
    "fit_inputs",
    "hint_for",
    "model_spec",
    "pad_ragged",
    "parse_metadata",
    "parse_predict_response",
    "parse_status",
    "recommend_inputs",
    "signature_of",
    "string_array",
]
