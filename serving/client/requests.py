"""Requests to and answers from TF Serving's APIs, as numpy arrays and typed results.

Pure functions on protos, no channel: building the inputs of the two-tower signatures
(`recommend_inputs`, `fit_inputs`, `pad_ragged`) and a `PredictRequest` for them, and reading
Predict, GetModelMetadata and GetModelStatus answers. Tensors convert with the codec the server
uses too (`serving.codec`); signature specs with `export.specs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from export import contract
from export.specs import spec_from_tensor_info
from serving.client.channel import ClientConfig
from serving.client.errors import ResponseError
from serving.client.results import (
    ModelMetadata,
    ModelStatus,
    Recommendation,
    SignatureDescription,
    VersionStatus,
)
from serving.codec import TensorCodecError, string_array, to_ndarray, to_tensor_proto
from serving.status import status_code
from tfrs_model.errors import ConfigError


def model_spec(config: ClientConfig, signature: str = "") -> model_pb2.ModelSpec:
    """The ModelSpec proto naming the model, its version or label, and `signature`."""
    spec = model_pb2.ModelSpec(name=config.model_name, signature_name=signature)
    if config.version is not None:
        spec.version.value = config.version
    elif config.version_label:
        spec.version_label = config.version_label
    return spec


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
    if isinstance(first, list | tuple):
        if all(isinstance(x, str) for row in values for x in row):
            return pad_ragged(values)
    elif isinstance(first, str):
        return string_array(values)
    try:
        return np.asarray(values)
    except ValueError as error:
        raise ConfigError(
            f"feature {name!r}: numeric lists must all have the same length (only string lists "
            f"are padded, with {contract.PAD!r})"
        ) from error


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
      ConfigError: a per-user list has a different length than `user_ids`, or numeric feature
        lists of different lengths.
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


def filter_pairs(filters: Mapping[str, Sequence[str]] | Sequence[str]) -> list[str]:
    """ "feature=value" strings of `filters`: `{"lang": ["hi", "en"]}` or `["lang=hi", ...]`.

    Raises:
      ConfigError: a feature name that is empty or holds "=", an empty value, or a string that is
        not "feature=value" (the server would answer INVALID_ARGUMENT).
    """
    sep = contract.FILTER_SEPARATOR
    if isinstance(filters, Mapping):
        pairs = []
        for feature, values in filters.items():
            if not feature or sep in feature:
                raise ConfigError(f"filter feature {feature!r} must be non-empty, without {sep!r}")
            if isinstance(values, str):
                values = [values]
            pairs += [f"{feature}{sep}{value}" for value in values]
    else:
        pairs = list(filters)
    for pair in pairs:
        feature, _, value = pair.partition(sep)
        if not feature or not value:
            raise ConfigError(
                f"filter {pair!r} is not feature{sep}value with both parts non-empty, "
                f"e.g. genres{sep}Comedy"
            )
    return pairs


def filtered_inputs(
    batch: int,
    k: int,
    allow: Sequence[str] | None = None,
    filters: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """K, ALLOW and FILTERS of a filtered signature, the same for each of `batch` rows.

    Args:
      k: results per row, 1..the exported maximum.
      allow: only these item ids; None or empty: every item.
      filters: see `filter_pairs`; None or empty: no filter.

    Returns:
      K `[batch]` int32, ALLOW `[batch, A]` and FILTERS `[batch, F]` DT_STRING (padded with "").

    Raises:
      ConfigError: k < 1, or a malformed filter.
    """
    if k < 1:
        raise ConfigError(f"k must be at least 1, not {k}")
    pairs = filter_pairs(filters or [])
    return {
        contract.K: np.full(batch, k, dtype=np.int32),
        contract.ALLOW: pad_ragged([list(allow or [])] * batch),
        contract.FILTERS: pad_ragged([pairs] * batch),
    }


def max_k_of(signature: SignatureDescription) -> int:
    """The exported maximum k: the width of the signature's ITEM_IDS output.

    Raises:
      ConfigError: the signature does not declare it; pass k.
    """
    spec = signature.outputs.get(contract.ITEM_IDS)
    width = None if spec is None or spec.shape is None or len(spec.shape) != 2 else spec.shape[1]
    if width is None:
        raise ConfigError(f"signature {signature.name!r} does not declare its k; pass k")
    return width


def fit_inputs(
    signature: SignatureDescription, inputs: Mapping[str, np.ndarray], batch: int
) -> dict[str, np.ndarray]:
    """Completes `inputs` for `signature`: string inputs it takes but were not given are padding.

    `recommend` and `query_embedding` take the query tower's whole context (history and each user
    feature, all DT_STRING, as the export defined them). A caller that knows only some of it gets
    the rest as `contract.PAD`, [batch] or [batch, 1] by the input's rank, which the model reads
    as an unknown value.

    Raises:
      ConfigError: an input the signature does not take, or a missing input that is not a
        DT_STRING of rank 1 or 2.
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
        if spec.dtype != types_pb2.DT_STRING or rank not in (1, 2):
            raise ConfigError(
                f"signature {signature.name!r} needs input {key!r} ({spec.describe()}); pass it "
                "in `features`"
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
    """A PredictRequest for the model in `config`.

    Args:
      inputs: input key -> array or nested lists; `str` and `bytes` are sent as DT_STRING, numbers
        with the dtype numpy gives them (Python floats as DT_DOUBLE, ints as DT_INT64).

    Raises:
      ConfigError: an input cannot be written as a TensorProto.
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_spec(config, signature), output_filter=list(output_filter)
    )
    for key, value in inputs.items():
        try:
            request.inputs[key].CopyFrom(to_tensor_proto(np.asarray(value)))
        except TensorCodecError as error:
            raise ConfigError(f"input {key!r}: {error}") from error
    return request


def parse_predict_response(
    response: predict_pb2.PredictResponse, output_filter: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The response's outputs as numpy arrays (DT_STRING as object arrays of bytes).

    Raises:
      ResponseError: an output named in `output_filter` is missing, or an output is malformed.
    """
    outputs = {}
    for key, proto in response.outputs.items():
        try:
            outputs[key] = to_ndarray(proto)
        except TensorCodecError as error:
            raise ResponseError(f"output {key!r} of the response: {error}") from error
    missing = [key for key in output_filter if key not in outputs]
    if missing:
        raise ResponseError(
            f"the response lacks outputs {missing} (it has {sorted(outputs)}); does the model "
            "follow export/contract.py?"
        )
    return outputs


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
            inputs={k: spec_from_tensor_info(v) for k, v in sorted(signature.inputs.items())},
            outputs={k: spec_from_tensor_info(v) for k, v in sorted(signature.outputs.items())},
        )
        for name, signature in sorted(signature_map.signature_def.items())
        if name != contract.INIT_OP_SIGNATURE
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
            error_code=status_code(status.status.error_code),
            error_message=status.status.error_message,
        )
        for status in sorted(response.model_version_status, key=lambda s: s.version)
    )
    return ModelStatus(model_name=model_name, versions=versions)


def signature_of(metadata: ModelMetadata, name: str) -> SignatureDescription:
    """The description of signature `name`.

    Raises:
      ConfigError: the model has no such signature (the message lists those it has).
    """
    try:
        return metadata.signatures[name]
    except KeyError:
        # The KeyError only repeats `name`; the message says more.
        raise ConfigError(
            f"model {metadata.model_name!r} (version {metadata.version}) has no signature "
            f"{name!r}; it has {sorted(metadata.signatures)}"
        ) from None


def decode_strings(array: np.ndarray) -> np.ndarray:
    """DT_STRING object array of bytes -> same-shaped object array of str (invalid UTF-8 replaced)."""
    return np.vectorize(_as_str, otypes=[object])(array) if array.size else array.astype(object)


def _as_str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def ranked_lists(
    item_ids: np.ndarray, scores: np.ndarray, k: int | None
) -> list[list[Recommendation]]:
    """Zips [batch, k] ids and scores into per-row lists, dropping padding ids (`contract.PAD`).

    Raises:
      ResponseError: the two arrays are not of one [batch, k] shape.
    """
    if item_ids.ndim != 2 or item_ids.shape != scores.shape:
        raise ResponseError(
            f"expected {contract.ITEM_IDS} and {contract.SCORES} of one shape [batch, k], got "
            f"{item_ids.shape} and {scores.shape}"
        )
    ids = decode_strings(item_ids)
    lists = []
    for row in range(ids.shape[0]):
        ranked = [
            Recommendation(item_id=item_id, score=float(score))
            for item_id, score in zip(ids[row], scores[row], strict=True)
            if item_id != contract.PAD
        ]
        lists.append(ranked[:k])
    return lists
