"""Feature specifications: which tower reads a feature, its vocabulary and its shape."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tfrs_model.errors import RunDirError

QUERY, CANDIDATE = "query", "candidate"
USER_ID, ITEM_ID, HISTORY = "user_id", "item_id", "history"


@dataclass(frozen=True)
class FeatureSpec:
    """One string input of a tower.

    Attributes:
      name: the input key (a column of the users or items table, or `history`).
      tower: `query` or `candidate`.
      vocabulary: known values, learned from training data; others go to OOV buckets.
      max_values: 0 for a scalar input `[batch]`; L for a padded multi-valued input `[batch, L]`
        (padding is "").
      embedding_dim: size of this feature's embedding.
    """

    name: str
    tower: Literal["query", "candidate"]
    vocabulary: tuple[str, ...]
    max_values: int
    embedding_dim: int

    @property
    def multivalued(self) -> bool:
        return self.max_values > 0


@dataclass(frozen=True)
class FeatureSet:
    """All tower inputs of a model, in a stable order."""

    specs: tuple[FeatureSpec, ...]

    def for_tower(self, tower: str) -> tuple[FeatureSpec, ...]:
        return tuple(s for s in self.specs if s.tower == tower)

    @property
    def query(self) -> tuple[FeatureSpec, ...]:
        return self.for_tower(QUERY)

    @property
    def candidate(self) -> tuple[FeatureSpec, ...]:
        return self.for_tower(CANDIDATE)

    def names(self, tower: str) -> tuple[str, ...]:
        return tuple(s.name for s in self.for_tower(tower))

    def get(self, name: str) -> FeatureSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps([asdict(s) for s in self.specs]) + "\n")

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        if not path.is_file():
            raise RunDirError(f"{path} is missing; the run directory is incomplete")
        raw = json.loads(path.read_text())
        return cls(tuple(FeatureSpec(**{**s, "vocabulary": tuple(s["vocabulary"])}) for s in raw))
