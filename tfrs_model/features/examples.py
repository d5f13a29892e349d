"""Model inputs as dicts of string arrays, for evaluation and export, and the keys of the task.

Query snapshots describe a user as of the start of an evaluation split (history = the last items
known before it); candidate inputs describe catalog items. Training examples are not built here:
they are streamed from the example shards (`shards`, `streaming`) as integer codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_model.data.splits import TRAIN, SplitData
from tfrs_model.features.history import latest_history
from tfrs_model.features.spec import HISTORY, ITEM_ID, USER_ID, FeatureSet
from tfrs_model.features.tables import FeatureTables

SAMPLING_PROBABILITY = "candidate_sampling_probability"
WEIGHT = "sample_weight"
RATING = "rating"
LIKE = "like"  # 1.0 for a positive (liked, engaged) interaction, 0.0 otherwise: the like head

Arrays = dict[str, np.ndarray]


def _select(arrays: Arrays, names: tuple[str, ...]) -> Arrays:
    return {name: arrays[name] for name in names if name in arrays}


def item_sampling_probability(split: SplitData, positives_only: bool = True) -> pd.Series:
    """Share of training rows per item: the in-batch sampling probability for logQ.

    The rows are the training positives, or every training interaction when the batches
    carry them all (`positives_only=False`, for the rating head).
    """
    frame = split.interactions
    rows = split.positives(TRAIN) if positives_only else frame[frame["split"] == TRAIN]
    counts = rows["item_id"].value_counts()
    counts = counts[counts > 0]  # categorical ids also count the catalog's unseen items, as 0
    return counts / counts.sum()


def query_inputs(
    features: FeatureSet,
    tables: FeatureTables,
    user_ids: np.ndarray,
    history: np.ndarray | None,
) -> Arrays:
    """Query-tower inputs for `user_ids` ([n] strings) with a given `[n, H]` history."""
    arrays: Arrays = {USER_ID: user_ids.astype(object), **tables.user_features(user_ids)}
    if history is not None:
        arrays[HISTORY] = history
    return _select(arrays, features.names("query"))


def candidate_inputs(features: FeatureSet, tables: FeatureTables, item_ids: np.ndarray) -> Arrays:
    """Candidate-tower inputs for `item_ids` ([n] strings)."""
    arrays: Arrays = {ITEM_ID: item_ids.astype(object), **tables.item_features(item_ids)}
    return _select(arrays, features.names("candidate"))


def _history_length(features: FeatureSet) -> int:
    return features.get(HISTORY).max_values if HISTORY in features.names("query") else 0


def snapshot_queries(
    split: SplitData, features: FeatureSet, tables: FeatureTables, target: str, user_ids: np.ndarray
) -> Arrays:
    """Query inputs for `user_ids` as of the start of split `target` (history from the past)."""
    length = _history_length(features)
    history = latest_history(split.known_before(target), user_ids, length) if length else None
    return query_inputs(features, tables, user_ids, history)


def to_tensor_dict(arrays: Arrays) -> dict:
    """Object arrays become tf.string tensors, the rest keep their dtype."""
    import tensorflow as tf

    return {
        name: tf.constant(values.astype(str) if values.dtype == object else values)
        for name, values in arrays.items()
    }
