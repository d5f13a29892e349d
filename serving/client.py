"""A client for exported two-tower models served over TensorFlow Serving's gRPC API.

`TwoTowerClient` speaks the official `PredictionService` and `ModelService` stubs over one reused
channel. Every call has a deadline; calls that fail with UNAVAILABLE (server starting, connection
reset) are retried with exponential backoff and jitter, other failures never are. Results come back
as typed objects (`serving.results`) or numpy arrays, never as raw protos, and failures as
`ServingError`, which carries the gRPC status code, the server's message and a hint.

Signature names and tensor keys come from `export.contract`:

    from serving.client import ClientConfig, TwoTowerClient

    with TwoTowerClient(ClientConfig(target="localhost:8500")) as client:
        lists = client.recommend(["196", "186"], k=10)  # one list of Recommendation per user
        print(lists[0][0].item_id, lists[0][0].score)

Importing this module imports TensorFlow (the serving protos live in its package).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from export import contract
from serving.results import (
    ModelMetadata,
    ModelStatus,
    QueryResult,
    Recommendation,
    SignatureDescription,
    TensorDescription,
    VersionStatus,
)
from tfrs_model.errors import ConfigError, TwoTowerError

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
# TF Serving's init op shows up among the SignatureDefs of every SavedModel; it is not callable.
_INIT_OP_SIGNATURE = "__saved_model_init_op"


class ServingError(TwoTowerError):
    """A call to the model server failed.

    Attributes:
      code: the gRPC status code (`grpc.StatusCode`).
      details: the server's message.
      method: the RPC that failed, e.g. "Predict".
      attempts: how many times the call was sent (more than 1 after UNAVAILABLE retries).
      hint: what to check, in words.
    """

    def __init__(
        self, method: str, code: grpc.StatusCode, details: str, target: str, attempts: int = 1
    ) -> None:
        self.method = method
        self.code = code
        self.details = details
        self.attempts = attempts
        self.hint = hint_for(code, target)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(
            f"{method} to {target} failed{tries} with {code.name}: {details or '(no message)'}; "
            f"{self.hint}"
        )


class ResponseError(TwoTowerError):
    """The server answered, but not with what the serving contract (`export.contract`) promises."""


_HINTS = {
    grpc.StatusCode.NOT_FOUND: (
        "is the model name right? GetModelStatus lists versions "
        "(`TwoTowerClient.model_status()`); a requested version or label must be loaded"
    ),
    grpc.StatusCode.UNAVAILABLE: "is a model server listening on {target}? is the address right?",
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "the server did not answer in time: raise the timeout, send fewer ids per request, "
        "or check the server's load"
    ),
    grpc.StatusCode.INVALID_ARGUMENT: (
        "check the signature name and the input keys, dtypes and shapes: "
        "GetModelMetadata lists them (`TwoTowerClient.metadata()`)"
    ),
    grpc.StatusCode.FAILED_PRECONDITION: (
        "the model version or label is not ready: GetModelStatus shows each version's state"
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        "a message exceeded a size limit: raise max_receive_message_bytes / "
        "max_send_message_bytes on both ends, or send fewer ids per request"
    ),
    grpc.StatusCode.UNAUTHENTICATED: "check the TLS client certificate and key",
    grpc.StatusCode.PERMISSION_DENIED: "check the TLS client certificate and key",
    grpc.StatusCode.UNIMPLEMENTED: "the server at {target} does not implement this RPC",
}


def hint_for(code: grpc.StatusCode, target: str) -> str:
    """A one-line suggestion of what to check after a call failed with `code`."""
    return _HINTS.get(code, "see the server's log").format(target=target)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls that failed with UNAVAILABLE, and only those.

    Retry n (n = 1, 2, ...) waits `min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))`
    scaled by a random factor drawn uniformly from [1 - jitter, 1]. At most `max_attempts` calls are
    sent in all (1 disables retries), and never past the call's deadline.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1 (1 = no retries), not {self}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(f"need 0 < initial_backoff_s <= max_backoff_s, got {self}")
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ConfigError(f"need multiplier >= 1 and 0 <= jitter <= 1, got {self}")

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return ceiling * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel. With no root certificates, gRPC's default roots are trusted.

    Attributes:
      root_certificates: PEM file of the CAs that signed the server's certificate.
      client_certificate: PEM certificate chain for mutual TLS; needs `client_key`.
      client_key: PEM private key of `client_certificate`.
      server_name_override: the name to check the server's certificate against when it differs
        from the target's host (e.g. a certificate for "serving.internal" reached by IP).
    """

    root_certificates: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if (self.client_certificate is None) != (self.client_key is None):
            raise ConfigError("mutual TLS needs both a client certificate and its key")

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the PEM files into gRPC channel credentials.

        Raises:
          ConfigError: a file cannot be read.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates),
            private_key=_read_pem(self.client_key),
            certificate_chain=_read_pem(self.client_certificate),
        )


def _read_pem(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read TLS file {path}: {error.strerror}") from None


@dataclass(frozen=True)
class ClientConfig:
    """Where the model is served and how to call it.

    Attributes:
      target: "host:port" of the gRPC endpoint (TF Serving's convention is port 8500).
      model_name: the served model's name.
      version: ask for this version; None (and no label) means the latest available.
      version_label: ask for the version with this label (e.g. "stable"); exclusive with version.
      timeout_s: default deadline of each call in seconds, retries included.
      retry: backoff for UNAVAILABLE.
      tls: TLS settings; None for a plaintext channel.
      max_send_message_bytes: largest request the channel sends.
      max_receive_message_bytes: largest response the channel accepts.
      wait_for_ready: queue calls while the channel connects instead of failing fast with
        UNAVAILABLE (the deadline still applies).
    """

    target: str = f"localhost:{contract.GRPC_PORT}"
    model_name: str = contract.DEFAULT_MODEL_NAME
    version: int | None = None
    version_label: str | None = None
    timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TlsConfig | None = None
    max_send_message_bytes: int = 4 * _MIB
    max_receive_message_bytes: int = 64 * _MIB
    wait_for_ready: bool = False

    def __post_init__(self) -> None:
        if not self.target or not self.model_name:
            raise ConfigError("target and model_name must not be empty")
        if self.version is not None and self.version_label:
            raise ConfigError("ask for a version or a version label, not both")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, not {self.timeout_s}")
        if self.max_send_message_bytes <= 0 or self.max_receive_message_bytes <= 0:
            raise ConfigError("message size limits must be positive")


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    """The gRPC channel arguments `config` implies (message sizes, TLS name override)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
    ]
    if config.tls is not None and config.tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name_override))
    return options


def create_channel(config: ClientConfig, *, aio: bool = False) -> Any:
    """Opens a channel to `config.target`: a `grpc.Channel`, or a `grpc.aio.Channel` if `aio`.

    An aio channel must be created inside the event loop that uses it.
    """
    module: Any = grpc.aio if aio else grpc
    options = channel_options(config)
    if config.tls is None:
        return module.insecure_channel(config.target, options=options)
    return module.secure_channel(config.target, config.tls.credentials(), options=options)


def model_spec(config: ClientConfig, signature: str = "") -> model_pb2.ModelSpec:
    """The ModelSpec proto naming the model, its version or label, and `signature`."""
    spec = model_pb2.ModelSpec(name=config.model_name, signature_name=signature)
    if config.version is not None:
        spec.version.value = config.version
    elif config.version_label:
        spec.version_label = config.version_label
    return spec


def string_array(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """UTF-8 encodes strings into an object array of bytes, TensorFlow's DT_STRING layout."""
    array = np.asarray(values, dtype=object)
    encode = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])
    return encode(array) if array.size else array


def pad_ragged(rows: Sequence[Sequence[str]], pad: str = contract.PAD) -> np.ndarray:
    """Pads variable-length string lists into one [len(rows), max(1, longest)] DT_STRING array.

    Every row gets at least one column, so an all-empty batch still has a well-formed 2-D input.
    """
    width = max([1, *(len(row) for row in rows)])
    padded = [[*row, *([pad] * (width - len(row)))] for row in rows]
    return string_array(padded).reshape(len(rows), width)


def _feature_array(name: str, values: Sequence[Any], batch: int) -> np.ndarray:
    """One feature's input: strings become DT_STRING (ragged lists padded), numbers stay numeric."""
    if len(values) != batch:
        raise ConfigError(f"feature {name!r} has {len(values)} values for {batch} ids")
    first = next((v for v in values if v is not None), None)
    if isinstance(first, (list, tuple)):
        if all(isinstance(x, str) for row in values for x in row):
            return pad_ragged(values)
    elif isinstance(first, str):
        return string_array(values)
    try:
        return np.asarray(values)
    except ValueError:
        raise ConfigError(
            f"feature {name!r}: numeric lists must all have the same length (only string lists "
            f"are padded, with {contract.PAD!r})"
        ) from None


def recommend_inputs(
    user_ids: Sequence[str],
    history: Sequence[Sequence[str]] | None = None,
    exclude: Sequence[Sequence[str]] | None = None,
    features: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, np.ndarray]:
    """The given query context of a batch of users as request inputs (see `fit_inputs` for the rest).

    Args:
      user_ids: [batch] user ids.
      history: per user, the items they interacted with, most recent last; None: not sent.
      exclude: per user, items that must not be recommended; None: not sent.
      features: extra query features, input key -> one value (or list of strings) per user.

    Returns:
      USER_ID [batch], and when given HISTORY [batch, H] and EXCLUDE [batch, E] DT_STRING arrays
      padded with `contract.PAD`, plus one array per feature.

    Raises:
      ConfigError: a per-user list has a different length than `user_ids`.
    """
    batch = len(user_ids)
    inputs = {contract.USER_ID: string_array(user_ids)}
    for key, rows in ((contract.HISTORY, history), (contract.EXCLUDE, exclude)):
        if rows is None:
            continue
        if len(rows) != batch:
            raise ConfigError(f"{key} needs one list per user: {batch} users, {len(rows)} lists")
        inputs[key] = pad_ragged(rows)
    for name, values in (features or {}).items():
        inputs[name] = _feature_array(name, values, batch)
    return inputs


def fit_inputs(
    signature: SignatureDescription, inputs: Mapping[str, np.ndarray], batch: int
) -> dict[str, np.ndarray]:
    """Completes `inputs` for `signature`: string inputs it takes but were not given are padding.

    `recommend` and `query_embedding` take the query tower's whole context (history and each user
    feature, all DT_STRING, as the export defined them). A caller that knows only some of it gets
    the rest as `contract.PAD`, [batch] or [batch, 1] by the input's rank, which the model reads
    as an unknown value.

    Raises:
      ConfigError: an input the signature does not take, or a missing input that is not a string
        of rank 1 or 2.
    """
    unknown = sorted(set(inputs) - signature.inputs.keys())
    if unknown:
        raise ConfigError(
            f"signature {signature.name!r} takes no inputs {unknown}; it takes "
            f"{sorted(signature.inputs)}"
        )
    fitted = dict(inputs)
    for key, spec in signature.inputs.items():
        if key in fitted:
            continue
        rank = 1 if spec.shape is None else len(spec.shape)
        if spec.dtype != "string" or rank not in (1, 2):
            raise ConfigError(
                f"signature {signature.name!r} needs input {key!r} ({spec.dtype}, shape "
                f"{spec.shape}); pass it in `features`"
            )
        fitted[key] = string_array([contract.PAD] * batch)
        if rank == 2:
            fitted[key] = fitted[key].reshape(batch, 1)
    return fitted


def build_predict_request(
    config: ClientConfig,
    inputs: Mapping[str, np.ndarray | Sequence[Any]],
    signature: str = contract.SERVING_DEFAULT,
    output_filter: Sequence[str] = (),
) -> predict_pb2.PredictRequest:
    """A PredictRequest for the model in `config`; string inputs may be `str` or `bytes`."""
    request = predict_pb2.PredictRequest(
        model_spec=model_spec(config, signature), output_filter=list(output_filter)
    )
    for key, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "UO":
            array = string_array(array)
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    return request


def parse_predict_response(
    response: predict_pb2.PredictResponse, output_filter: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays (DT_STRING as object arrays of bytes).

    Raises:
      ResponseError: an output named in `output_filter` is missing.
    """
    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    missing = [key for key in output_filter if key not in outputs]
    if missing:
        raise ResponseError(
            f"the response lacks outputs {missing} (it has {sorted(outputs)}); does the model "
            "follow export/contract.py?"
        )
    return outputs


def _tensor_description(key: str, info: Any) -> TensorDescription:
    shape_proto = info.tensor_shape
    shape = (
        None
        if shape_proto.unknown_rank
        else tuple(d.size if d.size >= 0 else None for d in shape_proto.dim)
    )
    return TensorDescription(key=key, dtype=tf.dtypes.as_dtype(info.dtype).name, shape=shape)


def parse_metadata(response: get_model_metadata_pb2.GetModelMetadataResponse) -> ModelMetadata:
    """Unpacks the SignatureDefMap of a GetModelMetadata response into typed descriptions.

    Raises:
      ResponseError: the response carries no `signature_def` metadata.
    """
    if "signature_def" not in response.metadata:
        raise ResponseError("the GetModelMetadata response has no signature_def metadata")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    signatures = {
        name: SignatureDescription(
            name=name,
            method_name=signature.method_name,
            inputs={k: _tensor_description(k, v) for k, v in sorted(signature.inputs.items())},
            outputs={k: _tensor_description(k, v) for k, v in sorted(signature.outputs.items())},
        )
        for name, signature in sorted(signature_map.signature_def.items())
        if name != _INIT_OP_SIGNATURE
    }
    return ModelMetadata(
        model_name=response.model_spec.name,
        version=response.model_spec.version.value,
        signatures=signatures,
    )


def parse_status(
    response: get_model_status_pb2.GetModelStatusResponse, model_name: str
) -> ModelStatus:
    """The versions in a GetModelStatus response, ascending by version."""
    states = get_model_status_pb2.ModelVersionStatus.State
    versions = tuple(
        VersionStatus(
            version=status.version,
            state=states.Name(status.state) if status.state in states.values() else "UNKNOWN",
            # TensorFlow's error codes share gRPC's numbering.
            error_code=_GRPC_CODE_NAMES.get(
                status.status.error_code, str(status.status.error_code)
            ),
            error_message=status.status.error_message,
        )
        for status in sorted(response.model_version_status, key=lambda s: s.version)
    )
    return ModelStatus(model_name=model_name, versions=versions)


_GRPC_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _as_str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decode(array: np.ndarray) -> np.ndarray:
    """DT_STRING object array of bytes -> same-shaped object array of str."""
    return np.vectorize(_as_str, otypes=[object])(array) if array.size else array.astype(object)


def _ranked_lists(
    item_ids: np.ndarray, scores: np.ndarray, k: int | None
) -> list[list[Recommendation]]:
    """Zips [batch, k] ids and scores into per-row lists, dropping padding ids (`contract.PAD`)."""
    if item_ids.ndim != 2 or item_ids.shape != scores.shape:
        raise ResponseError(
            f"expected {contract.ITEM_IDS} and {contract.SCORES} of one shape [batch, k], got "
            f"{item_ids.shape} and {scores.shape}"
        )
    ids = _decode(item_ids)
    lists = []
    for row in range(ids.shape[0]):
        ranked = [
            Recommendation(item_id=item_id, score=float(score))
            for item_id, score in zip(ids[row], scores[row], strict=True)
            if item_id != contract.PAD
        ]
        lists.append(ranked[:k])
    return lists


def signature_of(metadata: ModelMetadata, name: str) -> SignatureDescription:
    """The description of signature `name`.

    Raises:
      ConfigError: the model has no such signature (the message lists those it has).
    """
    try:
        return metadata.signatures[name]
    except KeyError:
        raise ConfigError(
            f"model {metadata.model_name!r} (version {metadata.version}) has no signature "
            f"{name!r}; it has {sorted(metadata.signatures)}"
        ) from None


def _check_batch(name: str, ids: Sequence[str], k: int | None = None) -> None:
    if len(ids) == 0:
        raise ConfigError(f"give at least one {name}")
    if k is not None and k < 1:
        raise ConfigError(f"k must be at least 1, not {k}")


class TwoTowerClient:
    """Calls one served two-tower model over a single reused gRPC channel.

    Use it as a context manager, or call `close()`. Methods that take ids send all of them in one
    request (one batch); `timeout_s` overrides the config's deadline for that call.

    Args:
      config: where and how to call the model.
      sleep: how to wait between retries (tests pass a recorder).
      rng: source of the backoff jitter.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._channel = create_channel(config)
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._metadata: ModelMetadata | None = None

    def __enter__(self) -> TwoTowerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls after this fail."""
        self._channel.close()

    def _call(
        self, method: str, rpc: Callable[..., Any], request: Any, timeout_s: float | None
    ) -> Any:
        """Sends `request` with a deadline, retrying UNAVAILABLE as `config.retry` says.

        Raises:
          ServingError: the call failed (for UNAVAILABLE: on the last attempt or at the deadline).
        """
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                return rpc(
                    request,
                    timeout=max(deadline - time.monotonic(), 0.0),
                    wait_for_ready=self.config.wait_for_ready,
                )
            except grpc.RpcError as error:
                code, details = error.code(), error.details()
                retry = (
                    code == grpc.StatusCode.UNAVAILABLE and attempt < self.config.retry.max_attempts
                )
                delay = self.config.retry.backoff_s(attempt, self._rng) if retry else 0.0
                if not retry or time.monotonic() + delay >= deadline:
                    raise ServingError(method, code, details, self.config.target, attempt) from None
                logger.debug(
                    "%s: UNAVAILABLE (%s), retry %d in %.3fs", method, details, attempt, delay
                )
                self._sleep(delay)

    def _fitted(
        self, signature: str, inputs: Mapping[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        """`inputs` completed for `signature` (`fit_inputs`), reading metadata on first use."""
        metadata = self._metadata or self.metadata(timeout_s)
        batch = len(next(iter(inputs.values())))
        return fit_inputs(signature_of(metadata, signature), inputs, batch)

    def predict(
        self,
        inputs: Mapping[str, np.ndarray | Sequence[Any]],
        signature: str = contract.SERVING_DEFAULT,
        output_filter: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Calls `signature` with `inputs` and returns its outputs.

        Args:
          inputs: signature input key -> array (or nested lists); `str` is sent as DT_STRING.
          signature: the signature name.
          output_filter: return only these outputs (all when empty); the server skips the rest.
          timeout_s: deadline of this call; the config's when None.

        Returns:
          Output key -> numpy array; DT_STRING outputs are object arrays of bytes.

        Raises:
          ServingError: the server refused or failed the call.
          ResponseError: an output in `output_filter` is missing from the response.
        """
        request = build_predict_request(self.config, inputs, signature, output_filter)
        response = self._call("Predict", self._prediction.Predict, request, timeout_s)
        return parse_predict_response(response, output_filter)

    def _ranked(
        self,
        inputs: Mapping[str, np.ndarray],
        signature: str,
        k: int | None,
        with_titles: bool,
        timeout_s: float | None,
    ) -> list[list[Recommendation]]:
        outputs = self.predict(inputs, signature, (contract.ITEM_IDS, contract.SCORES), timeout_s)
        lists = _ranked_lists(outputs[contract.ITEM_IDS], outputs[contract.SCORES], k)
        if not with_titles:
            return lists
        names = self.titles([[r.item_id for r in ranked] for ranked in lists], timeout_s)
        return [
            [replace(r, title=title) for r, title in zip(ranked, row, strict=True)]
            for ranked, row in zip(lists, names, strict=True)
        ]

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int | None = None,
        signature: str = contract.SERVING_DEFAULT,
        *,
        with_titles: bool = False,
        timeout_s: float | None = None,
    ) -> list[list[Recommendation]]:
        """Top items for each user from a signature that maps USER_ID to ITEM_IDS and SCORES.

        Args:
          user_ids: [batch] user ids, sent in one request.
          k: keep the best k of each list; None keeps all the export returns (the export fixes
            the largest k).
          signature: `serving_default` or another signature with the same inputs and outputs.
          with_titles: also fetch titles through the `item_titles` signature (a second call).

        Returns:
          Per user, in request order, the recommendations best first. Padding ids are dropped.

        Raises:
          ConfigError: no user ids, or k < 1.
          ServingError, ResponseError: as for `predict`.
        """
        _check_batch("user id", user_ids, k)
        inputs = {contract.USER_ID: string_array(user_ids)}
        return self._ranked(inputs, signature, k, with_titles, timeout_s)

    def recommend_with_context(
        self,
        user_ids: Sequence[str],
        history: Sequence[Sequence[str]] | None = None,
        features: Mapping[str, Sequence[Any]] | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
        k: int | None = None,
        *,
        with_titles: bool = False,
        timeout_s: float | None = None,
    ) -> list[list[Recommendation]]:
        """Top items per user from the `recommend` signature, given recent context.

        Args:
          user_ids: [batch] user ids.
          history: per user, recently seen item ids, most recent last (ragged; padded with
            `contract.PAD`). None: no history.
          features: extra query features by input key, one value (or list of strings) per user.
          exclude: per user, item ids never to return (ragged; padded). None: exclude nothing.
          k, with_titles, timeout_s: as for `recommend`.

        Context inputs the signature takes but that are not given are sent as padding
        (`fit_inputs`); the signature's inputs come from GetModelMetadata, read once per client.

        Raises:
          ConfigError: no user ids, k < 1, a per-user list of the wrong length, or inputs that do
            not fit the signature.
          ServingError, ResponseError: as for `predict`.
        """
        _check_batch("user id", user_ids, k)
        inputs = self._fitted(
            contract.RECOMMEND, recommend_inputs(user_ids, history, exclude, features), timeout_s
        )
        return self._ranked(inputs, contract.RECOMMEND, k, with_titles, timeout_s)

    def similar_items(
        self,
        item_ids: Sequence[str],
        k: int | None = None,
        *,
        with_titles: bool = False,
        timeout_s: float | None = None,
    ) -> list[list[Recommendation]]:
        """Nearest items to each item from the `similar_items` signature, best first.

        Raises:
          ConfigError: no item ids, or k < 1.
          ServingError, ResponseError: as for `predict`.
        """
        _check_batch("item id", item_ids, k)
        inputs = {contract.ITEM_ID: string_array(item_ids)}
        return self._ranked(inputs, contract.SIMILAR_ITEMS, k, with_titles, timeout_s)

    def query_embedding(
        self,
        user_ids: Sequence[str],
        history: Sequence[Sequence[str]] | None = None,
        features: Mapping[str, Sequence[Any]] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """The query tower's output for each user: [batch, embedding_dim] float32.

        Args:
          user_ids: [batch] user ids.
          history, features: context as for `recommend_with_context`; what the signature takes
            but is not given is sent as padding.

        Raises:
          ConfigError: no user ids, or inputs that do not fit the signature (`fit_inputs`).
          ServingError, ResponseError: as for `predict`.
        """
        _check_batch("user id", user_ids)
        given = recommend_inputs(user_ids, history, features=features)
        inputs = self._fitted(contract.QUERY_EMBEDDING, given, timeout_s)
        return self._embedding(inputs, contract.QUERY_EMBEDDING, timeout_s)

    def candidate_embedding(
        self, item_ids: Sequence[str], *, timeout_s: float | None = None
    ) -> np.ndarray:
        """The candidate tower's output for each item: [batch, embedding_dim] float32."""
        _check_batch("item id", item_ids)
        inputs = {contract.ITEM_ID: string_array(item_ids)}
        return self._embedding(inputs, contract.CANDIDATE_EMBEDDING, timeout_s)

    def _embedding(
        self, inputs: Mapping[str, np.ndarray], signature: str, timeout_s: float | None
    ) -> np.ndarray:
        outputs = self.predict(inputs, signature, (contract.EMBEDDING,), timeout_s)
        return outputs[contract.EMBEDDING].astype(np.float32, copy=False)

    def titles(
        self, item_ids_2d: Sequence[Sequence[str]] | np.ndarray, timeout_s: float | None = None
    ) -> list[list[str]]:
        """Titles of [batch, n] item ids through the `item_titles` signature; "" when unknown.

        Ragged rows are padded for the request and trimmed back, so the result has their shape.
        """
        if isinstance(item_ids_2d, np.ndarray):
            rows = _decode(item_ids_2d).tolist()
        else:
            rows = [list(row) for row in item_ids_2d]
        if not rows:
            return []
        inputs = {contract.ITEM_IDS: pad_ragged(rows)}
        outputs = self.predict(inputs, contract.ITEM_TITLES, (contract.TITLES,), timeout_s)
        names = _decode(outputs[contract.TITLES])
        return [list(names[i, : len(row)]) for i, row in enumerate(rows)]

    def metadata(self, timeout_s: float | None = None) -> ModelMetadata:
        """The signatures of the model version the config names (latest when none).

        The client keeps the answer to fit `recommend_with_context` and `query_embedding` inputs.

        Raises:
          ServingError: e.g. NOT_FOUND for an unknown model, version or label.
          ResponseError: the response carries no signature_def metadata.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(self.config), metadata_field=["signature_def"]
        )
        response = self._call(
            "GetModelMetadata", self._prediction.GetModelMetadata, request, timeout_s
        )
        self._metadata = parse_metadata(response)
        return self._metadata

    def model_status(self, timeout_s: float | None = None) -> ModelStatus:
        """Every version of the model the server knows and its state (not only the config's).

        Raises:
          ServingError: e.g. NOT_FOUND when the server has no model of this name.
        """
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=model_pb2.ModelSpec(name=self.config.model_name)
        )
        response = self._call("GetModelStatus", self._models.GetModelStatus, request, timeout_s)
        return parse_status(response, self.config.model_name)


@dataclass(frozen=True)
class QueryRequest:
    """What `twotower query` asks for.

    Attributes:
      ids: user ids, or item ids for `similar_items`; sent in one request.
      signature: a signature returning ITEM_IDS and SCORES (serving_default, recommend,
        similar_items).
      k: keep the best k per list; None keeps all.
      titles: fetch titles when the model has the `item_titles` signature.
    """

    ids: tuple[str, ...]
    signature: str = contract.SERVING_DEFAULT
    k: int | None = None
    titles: bool = True


def run_query(config: ClientConfig, request: QueryRequest) -> QueryResult:
    """Reads the model's metadata, then ranks items for each id through `request.signature`.

    Raises:
      ConfigError: the model has no such signature, or it does not return ranked lists.
      ServingError, ResponseError: as for `TwoTowerClient.predict`.
    """
    with TwoTowerClient(config) as client:
        metadata = client.metadata()
        signature = signature_of(metadata, request.signature)
        if not {contract.ITEM_IDS, contract.SCORES} <= signature.outputs.keys():
            raise ConfigError(
                f"signature {request.signature!r} returns {sorted(signature.outputs)}, not ranked "
                f"lists; query {contract.SERVING_DEFAULT}, {contract.RECOMMEND} or "
                f"{contract.SIMILAR_ITEMS}"
            )
        with_titles = request.titles and metadata.has_signature(contract.ITEM_TITLES)
        ids, k = list(request.ids), request.k
        if request.signature == contract.SIMILAR_ITEMS:
            lists = client.similar_items(ids, k, with_titles=with_titles)
        elif request.signature == contract.RECOMMEND:
            lists = client.recommend_with_context(ids, k=k, with_titles=with_titles)
        else:
            lists = client.recommend(ids, k, request.signature, with_titles=with_titles)
    return QueryResult(
        model_name=metadata.model_name or config.model_name,
        version=metadata.version,
        signature=request.signature,
        query_ids=tuple(request.ids),
        recommendations=tuple(tuple(ranked) for ranked in lists),
        titles_fetched=with_titles,
    )
