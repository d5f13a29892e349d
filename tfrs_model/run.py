"""A training run on disk: write it atomically, read it back with its data and weights.

Layout of a run directory:
  config.json          RunConfig (data, model, train)
  features.json        feature specs with their vocabularies (of the evaluation weights)
  weights/             evaluation weights: TF checkpoint of both towers, fit on train (or train +
                       validation after the refit); what `twotower evaluate --run` scores on test
  production/          the production model, fit on every interaction (train_config.production_fit):
    features.json        its feature specs (vocabularies of all splits)
    weights/             its checkpoint; what `twotower export` exports by default
  data/                the interactions (with split and positive labels), users and items used
  metrics.json         training history, validation and test metrics, seconds per stage,
                       examples/s, data statistics, filters
  training_curves.png  loss, validation recall@10 / NDCG@10 and examples/s per epoch
  logs/                TensorBoard event files (the same scalars, per fit)

Which splits each set of weights has seen is `Run.trained_on(weights)`: evaluation code refuses
to score weights on a split they were fit on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrs_model.config import RunConfig
from tfrs_model.data.schema import FeatureColumn, InteractionData
from tfrs_model.data.splits import SPLITS, TRAIN, VALIDATION, SplitData
from tfrs_model.errors import RunDirError
from tfrs_model.features.spec import FeatureSet
from tfrs_model.model import TwoTowerModel

CONFIG_FILE = "config.json"
FEATURES_FILE = "features.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"
WEIGHTS_DIR = "weights"
DATA_DIR = "data"
LOGS_DIR = "logs"
PRODUCTION_DIR = "production"
_WEIGHTS_PREFIX = "towers"

# The two sets of weights a run keeps.
EVALUATION = "evaluation"
PRODUCTION = "production"
WEIGHTS = (EVALUATION, PRODUCTION)


@contextmanager
def atomic_directory(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling of `final`, renamed to `final` only if the block succeeds.

    Raises:
      RunDirError: `final` exists and `overwrite` is false.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise RunDirError(f"{final} already exists; choose another --out or pass --force")
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield temporary
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def _tuples(values: pd.Series) -> pd.Series:
    """Parquet returns list columns as arrays; the schema uses tuples of str."""
    return values.map(lambda v: tuple(str(x) for x in v) if v is not None else ())


def save_split_data(split: SplitData, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    split.interactions.to_parquet(directory / "interactions.parquet", index=False)
    split.data.users.to_parquet(directory / "users.parquet", index=False)
    split.data.items.to_parquet(directory / "items.parquet", index=False)
    meta = {
        "name": split.data.name,
        "user_features": [[c.name, c.max_values] for c in split.data.user_features],
        "item_features": [[c.name, c.max_values] for c in split.data.item_features],
    }
    (directory / "dataset.json").write_text(json.dumps(meta) + "\n")


def load_split_data(directory: Path) -> SplitData:
    meta = json.loads((directory / "dataset.json").read_text())
    user_features = tuple(FeatureColumn(n, m) for n, m in meta["user_features"])
    item_features = tuple(FeatureColumn(n, m) for n, m in meta["item_features"])
    users = pd.read_parquet(directory / "users.parquet")
    items = pd.read_parquet(directory / "items.parquet")
    for table, columns in ((users, user_features), (items, item_features)):
        for column in columns:
            if column.multivalued:
                table[column.name] = _tuples(table[column.name])
    interactions = pd.read_parquet(directory / "interactions.parquet")
    data = InteractionData(meta["name"], interactions, users, items, user_features, item_features)
    return SplitData(interactions=interactions, data=data, reports=())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


@dataclass
class Run:
    """A loaded run: configuration, features, data, and (after `load_model`) the towers."""

    directory: Path
    config: RunConfig
    features: FeatureSet
    split: SplitData
    metrics: dict[str, Any]

    @classmethod
    def open(cls, directory: Path) -> Run:
        """Reads a run directory.

        Raises:
          RunDirError: `directory` is not a complete run written by `twotower train`.
        """
        directory = Path(directory)
        required = (CONFIG_FILE, FEATURES_FILE, METRICS_FILE, WEIGHTS_DIR, DATA_DIR)
        missing = [name for name in required if not (directory / name).exists()]
        if missing:
            raise RunDirError(
                f"{directory} is not a training run (missing {', '.join(missing)}); pass the "
                "--out directory of a finished `twotower train`"
            )
        return cls(
            directory=directory,
            config=RunConfig.load(directory / CONFIG_FILE),
            features=FeatureSet.load(directory / FEATURES_FILE),
            split=load_split_data(directory / DATA_DIR),
            metrics=json.loads((directory / METRICS_FILE).read_text()),
        )

    @property
    def has_production(self) -> bool:
        return (self.directory / PRODUCTION_DIR / WEIGHTS_DIR).is_dir()

    def trained_on(self, weights: str) -> tuple[str, ...]:
        """The splits whose interactions the `weights` ("evaluation" or "production") were fit on.

        Raises:
          RunDirError: unknown `weights`, or production weights the run does not have.
        """
        self._check_weights(weights)
        if weights == PRODUCTION:
            return SPLITS
        return (TRAIN, VALIDATION) if self.config.train.refit_on_validation else (TRAIN,)

    def features_of(self, weights: str) -> FeatureSet:
        """The feature specs (vocabularies) that go with `weights`."""
        self._check_weights(weights)
        if weights == PRODUCTION:
            return FeatureSet.load(self.directory / PRODUCTION_DIR / FEATURES_FILE)
        return self.features

    def load_model(self, weights: str = EVALUATION):
        """The `TwoTowerModel` with the `weights` ("evaluation" or "production") restored."""
        import tensorflow as tf

        features = self.features_of(weights)
        root = self.directory / PRODUCTION_DIR if weights == PRODUCTION else self.directory
        model = TwoTowerModel(features, self.config.model)
        build_towers(model)
        checkpoint = tf.train.Checkpoint(
            query_model=model.query_model, candidate_model=model.candidate_model
        )
        checkpoint.restore(
            str(root / WEIGHTS_DIR / _WEIGHTS_PREFIX)
        ).expect_partial().assert_nontrivial_match()
        return model

    def _check_weights(self, weights: str) -> None:
        if weights not in WEIGHTS:
            raise RunDirError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        if weights == PRODUCTION and not self.has_production:
            raise RunDirError(
                f"{self.directory} has no production weights (it was trained with "
                "--no-production-fit, or before runs kept them); retrain without that flag, or "
                "use the evaluation weights (twotower export --weights evaluation)"
            )


def build_towers(model) -> None:
    """Creates the towers' variables by calling them once on a padding-only example."""
    import tensorflow as tf

    for tower in (model.query_model, model.candidate_model):
        dummy = {
            spec.name: tf.constant([[""] * spec.max_values] if spec.multivalued else [""])
            for spec in tower.specs
        }
        tower(dummy)


def save_weights(model, directory: Path) -> None:
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(
        query_model=model.query_model, candidate_model=model.candidate_model
    )
    checkpoint.write(str(directory / _WEIGHTS_PREFIX))
