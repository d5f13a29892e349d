"""A client for exported two-tower models served over TensorFlow Serving's gRPC API.

`TwoTowerClient` speaks the official `PredictionService` and `ModelService` stubs over one reused
channel (`serving.client.channel`). Every call has a deadline; gRPC itself retries calls that
fail with UNAVAILABLE (server starting, connection reset) under the config's `RetryPolicy`, other
failures never. Results come back as typed objects (`serving.client.results`) or numpy arrays,
never as raw protos, and failures as `ServingError`, which carries the gRPC status code, the
server's message and a hint.

Signature names and tensor keys come from `export.contract`:

    from serving.client import ClientConfig, TwoTowerClient

    with TwoTowerClient(ClientConfig(target="localhost:8500")) as client:
        lists = client.recommend(["196", "186"], k=10)  # one list of Recommendation per user
        print(lists[0][0].item_id, lists[0][0].score)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from export import contract
from serving.client.channel import RETRYABLE_CODES, ClientConfig, create_channel
from serving.client.errors import ServingError
from serving.client.requests import (
    build_predict_request,
    decode_strings,
    filtered_inputs,
    fit_inputs,
    max_k_of,
    model_spec,
    pad_ragged,
    parse_metadata,
    parse_predict_response,
    parse_status,
    ranked_lists,
    recommend_inputs,
    signature_of,
)
from serving.client.results import ModelMetadata, ModelStatus, Recommendation
from serving.codec import string_array
from tfrs_model.errors import ConfigError


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
      config: where and how to call the model; its retry policy goes into the channel.

    Raises:
      ConfigError: a TLS file cannot be read.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
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
        """Sends `request` with a deadline; gRPC retries UNAVAILABLE as `config.retry` says.

        Raises:
          ServingError: the call failed (for UNAVAILABLE: on the last attempt or at the deadline).
        """
        try:
            return rpc(
                request,
                timeout=self.config.timeout_s if timeout_s is None else timeout_s,
                wait_for_ready=self.config.wait_for_ready,
            )
        except grpc.RpcError as error:
            code = error.code()
            retryable = code in RETRYABLE_CODES
            raise ServingError(
                method,
                code,
                error.details(),
                self.config.target,
                max_attempts=self.config.retry.max_attempts if retryable else 1,
            ) from error

    def _fitted(
        self, signature: str, inputs: Mapping[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        """`inputs` completed for `signature` (`fit_inputs`), reading metadata on first use."""
        metadata = self._metadata or self.metadata(timeout_s)
        batch = len(next(iter(inputs.values())))
        return fit_inputs(signature_of(metadata, signature), inputs, batch)

    def _with_filters(
        self,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        k: int | None,
        allow: Sequence[str] | None,
        filters: Mapping[str, Sequence[str]] | Sequence[str] | None,
        timeout_s: float | None,
    ) -> dict[str, np.ndarray]:
        """`inputs` plus K (the exported maximum when None), ALLOW and FILTERS, fitted."""
        metadata = self._metadata or self.metadata(timeout_s)
        description = signature_of(metadata, signature)
        batch = len(next(iter(inputs.values())))
        k = max_k_of(description) if k is None else k
        given = {**inputs, **filtered_inputs(batch, k, allow, filters)}
        return fit_inputs(description, given, batch)

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
          ConfigError: an input cannot be written as a TensorProto.
          ServingError: the server refused or failed the call.
          ResponseError: an output in `output_filter` is missing from the response, or an
            output is malformed.
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
        lists = ranked_lists(outputs[contract.ITEM_IDS], outputs[contract.SCORES], k)
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
        allow: Sequence[str] | None = None,
        filters: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        with_titles: bool = False,
        timeout_s: float | None = None,
    ) -> list[list[Recommendation]]:
        """Top items for each user from a signature that maps USER_ID to ITEM_IDS and SCORES.

        Args:
          user_ids: [batch] user ids, sent in one request.
          k: keep the best k of each list; None keeps all the export returns (the export fixes
            the largest k). With `allow` or `filters` the server computes exactly k per row.
          signature: `serving_default` or another signature with the same inputs and outputs;
            `allow` or `filters` switch `serving_default` to `recommend_filtered`.
          allow: only these item ids (for every user); None: every item.
          filters: item feature values, `{"lang": ["hi", "en"], "country": ["IN"]}` or
            `["lang=hi", "lang=en", "country=IN"]`: an item passes when, for every feature
            named, it has one of the listed values. None: no filter.
          with_titles: also fetch titles through the `item_titles` signature (a second call).

        Returns:
          Per user, in request order, the recommendations best first. Padding ids are dropped.

        Raises:
          ConfigError: no user ids, k < 1, or a malformed filter.
          ServingError, ResponseError: as for `predict`; INVALID_ARGUMENT for an unknown filter
            feature or k over the exported maximum.
        """
        _check_batch("user id", user_ids, k)
        inputs = {contract.USER_ID: string_array(user_ids)}
        if signature == contract.SERVING_DEFAULT and (allow is not None or filters is not None):
            signature = contract.RECOMMEND_FILTERED
        if signature == contract.RECOMMEND_FILTERED:
            inputs = self._with_filters(signature, inputs, k, allow, filters, timeout_s)
        return self._ranked(inputs, signature, k, with_titles, timeout_s)

    def recommend_with_context(
        self,
        user_ids: Sequence[str],
        history: Sequence[Sequence[str]] | None = None,
        features: Mapping[str, Sequence[Any]] | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
        k: int | None = None,
        *,
        allow: Sequence[str] | None = None,
        filters: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
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
          k, allow, filters, with_titles, timeout_s: as for `recommend`; `allow` or `filters`
            call `recommend_filtered_context` instead of `recommend`.

        Context inputs the signature takes but that are not given are sent as padding
        (`fit_inputs`); the signature's inputs come from GetModelMetadata, read once per client.

        Raises:
          ConfigError: no user ids, k < 1, a per-user list of the wrong length, or inputs that do
            not fit the signature.
          ServingError, ResponseError: as for `predict`.
        """
        _check_batch("user id", user_ids, k)
        given = recommend_inputs(user_ids, history, exclude, features)
        if allow is None and filters is None:
            inputs = self._fitted(contract.RECOMMEND, given, timeout_s)
            return self._ranked(inputs, contract.RECOMMEND, k, with_titles, timeout_s)
        signature = contract.RECOMMEND_FILTERED_CONTEXT
        inputs = self._with_filters(signature, given, k, allow, filters, timeout_s)
        return self._ranked(inputs, signature, k, with_titles, timeout_s)

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
        """The query tower's output for each user: [batch, d] float32 (d: the model's output_dim).

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
        """The candidate tower's output for each item: [batch, d] float32 (d: the model's output_dim)."""
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
            rows = decode_strings(item_ids_2d).tolist()
        else:
            rows = [list(row) for row in item_ids_2d]
        if not rows:
            return []
        inputs = {contract.ITEM_IDS: pad_ragged(rows)}
        outputs = self.predict(inputs, contract.ITEM_TITLES, (contract.TITLES,), timeout_s)
        names = decode_strings(outputs[contract.TITLES])
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
