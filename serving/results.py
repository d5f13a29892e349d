"""Typed results of the serving client: what a caller gets back instead of raw protos.

Pure Python (no TensorFlow, no gRPC), so the CLI can format results without heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recommendation:
    """One ranked item: its id, the model's score and, when fetched, its title."""

    item_id: str
    score: float
    title: str | None = None


@dataclass(frozen=True)
class TensorDescription:
    """One input or output of a signature.

    Attributes:
      key: the signature's key for the tensor (e.g. `contract.USER_ID`), not a graph tensor name.
      dtype: TensorFlow's dtype name, e.g. "string", "float32".
      shape: one entry per dimension, None where the size is unknown (e.g. the batch); the whole
        shape is None when even the rank is unknown.
    """

    key: str
    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureDescription:
    """A signature's name, method and its inputs and outputs keyed by signature key."""

    name: str
    method_name: str
    inputs: dict[str, TensorDescription]
    outputs: dict[str, TensorDescription]


@dataclass(frozen=True)
class ModelMetadata:
    """What GetModelMetadata says about the model version that answered.

    Attributes:
      model_name: the served model's name.
      version: the version whose metadata this is (the latest available one unless a version or
        label was requested).
      signatures: the SignatureDefs by name, without TF Serving's internal `__saved_model_init_op`.
    """

    model_name: str
    version: int
    signatures: dict[str, SignatureDescription]

    def has_signature(self, name: str) -> bool:
        return name in self.signatures


@dataclass(frozen=True)
class VersionStatus:
    """The state of one model version, as GetModelStatus reports it.

    Attributes:
      version: the version number (the directory name under the model base path).
      state: TF Serving's state name: START, LOADING, AVAILABLE, UNLOADING or END (UNKNOWN if
        the server sent a value this client does not know).
      error_code: the load status, "OK" when the version loaded (or is loading) without error.
      error_message: the error's message, "" when `error_code` is "OK".
    """

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"


@dataclass(frozen=True)
class ModelStatus:
    """Every version of a model the server knows, ascending by version."""

    model_name: str
    versions: tuple[VersionStatus, ...]

    @property
    def available_versions(self) -> tuple[int, ...]:
        return tuple(v.version for v in self.versions if v.available)


@dataclass(frozen=True)
class QueryResult:
    """The ranked lists of one `twotower query`: one list per queried id, in request order.

    Attributes:
      model_name: the model that answered.
      version: the model version whose metadata was read before the query.
      signature: the signature that ranked the items.
      query_ids: the user ids (or item ids for `similar_items`), [batch].
      recommendations: per queried id, the ranked items, best first.
      titles_fetched: whether titles came from the `item_titles` signature.
    """

    model_name: str
    version: int
    signature: str
    query_ids: tuple[str, ...]
    recommendations: tuple[tuple[Recommendation, ...], ...]
    titles_fetched: bool = False
