"""Typed results of the serving client: what a caller gets back instead of raw protos.

Signatures are described with `export.specs.TensorSpec` (a DataType number and a shape), the type
the server, the exporter and the model card use; version states with `serving.status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from export.specs import TensorSpec
from serving.status import VersionStatus

__all__ = [
    "ModelMetadata",
    "ModelStatus",
    "QueryResult",
    "Recommendation",
    "SignatureDescription",
    "VersionStatus",
]


@dataclass(frozen=True)
class Recommendation:
    """One ranked item: its id, the model's score and, when fetched, its title."""

    item_id: str
    score: float
    title: str | None = None


@dataclass(frozen=True)
class SignatureDescription:
    """A signature's name, method and its inputs and outputs.

    Attributes:
      name: the signature key, e.g. "recommend".
      method_name: the SignatureDef's method, e.g. "tensorflow/serving/predict".
      inputs, outputs: by the signature's tensor key (e.g. `contract.USER_ID`, not a graph tensor
        name), the declared dtype and shape; `spec.dtype_name` is e.g. "DT_STRING".
    """

    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


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
class ModelStatus:
    """Every version of a model the server knows, ascending by version."""

    model_name: str
    versions: tuple[VersionStatus, ...]

    @property
    def available_versions(self) -> tuple[int, ...]:
        return tuple(v.version for v in self.versions if v.available)


@dataclass(frozen=True)
class QueryResult:
    """Ranked lists for a batch of ids from one signature (e.g. one `twotower query`).

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
