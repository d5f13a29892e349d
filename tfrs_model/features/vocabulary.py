"""Builds the feature vocabularies from training data only, so nothing later leaks in."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from tfrs_model.config import DataConfig, ModelConfig
from tfrs_model.data.schema import FeatureColumn, id_rows
from tfrs_model.data.splits import TRAIN, SplitData
from tfrs_model.features.spec import (
    CANDIDATE,
    HISTORY,
    ITEM_ID,
    QUERY,
    USER_ID,
    FeatureSet,
    FeatureSpec,
)


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    """Sorted distinct non-empty strings (StringLookup reserves "" for padding)."""
    return tuple(sorted({v for v in values if v != ""}))


def _seen(values: pd.Series, table_ids: pd.Series) -> np.ndarray:
    """`[len(table_ids)]` bool: which ids of the table occur in `values` (by integer row)."""
    rows = id_rows(values, table_ids)
    seen = np.zeros(len(table_ids), dtype=bool)
    seen[rows[rows >= 0]] = True
    return seen


def _column_vocabulary(table: pd.DataFrame, column: FeatureColumn) -> tuple[str, ...]:
    values = table[column.name]
    if column.multivalued:
        return _distinct(v for row in values for v in row)
    return _distinct(values.astype(str))


def _side_specs(
    columns: tuple[FeatureColumn, ...], table: pd.DataFrame, tower: str, dim: int
) -> list[FeatureSpec]:
    return [
        FeatureSpec(c.name, tower, _column_vocabulary(table, c), c.max_values, dim) for c in columns
    ]


def build_feature_set(split: SplitData, model: ModelConfig, data: DataConfig) -> FeatureSet:
    """Feature specs for both towers, vocabularies drawn from the training split.

    Ids get a vocabulary only from training interactions: a user or item first seen later maps to
    the out-of-vocabulary bucket and is embedded from its other features (cold start). Side
    features take their values from the users and items tables restricted to training rows.
    """
    train = split.interactions[split.interactions["split"] == TRAIN]
    train_users = split.data.users[_seen(train["user_id"], split.data.users["user_id"])]
    train_items = split.data.items[_seen(train["item_id"], split.data.items["item_id"])]
    item_vocabulary = _distinct(train_items["item_id"])
    dim = model.feature_embedding_dim
    user_vocabulary = _distinct(train_users["user_id"])
    specs = [FeatureSpec(USER_ID, QUERY, user_vocabulary, 0, model.id_embedding_dim)]
    if model.use_user_features:
        specs += _side_specs(split.data.user_features, train_users, QUERY, dim)
    if model.use_history and data.history_length > 0:
        specs.append(
            FeatureSpec(
                HISTORY, QUERY, item_vocabulary, data.history_length, model.id_embedding_dim
            )
        )
    specs.append(FeatureSpec(ITEM_ID, CANDIDATE, item_vocabulary, 0, model.id_embedding_dim))
    if model.use_item_features:
        specs += _side_specs(split.data.item_features, train_items, CANDIDATE, dim)
    return FeatureSet(tuple(specs))
