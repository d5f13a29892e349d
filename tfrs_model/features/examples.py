"""Model inputs as dicts of numpy arrays, and the `tf.data` pipelines that feed them.

Training examples are the positive interactions of the training split, each with the user's
features, the history strictly before it, and the item's features. Query snapshots describe a
user as of the start of an evaluation split (history = the last items known before it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_model.data.splits import TRAIN, SplitData
from tfrs_model.errors import ConfigError
from tfrs_model.features.history import history_before_each, latest_history
from tfrs_model.features.spec import HISTORY, ITEM_ID, USER_ID, FeatureSet
from tfrs_model.features.tables import FeatureTables

SAMPLING_PROBABILITY = "candidate_sampling_probability"
WEIGHT = "sample_weight"
RATING = "rating"

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


def training_examples(
    split: SplitData, features: FeatureSet, tables: FeatureTables, with_ratings: bool = False
) -> Arrays:
    """One example per training positive, with the history strictly before it.

    With `with_ratings`, one example per training interaction instead, plus its `rating`
    ([n] float32): the non-positives get `sample_weight` 0, so they train the rating head and
    serve as in-batch negatives but never as retrieval positives.

    Returns:
      Query and candidate inputs plus `candidate_sampling_probability` ([n] float32) and
      `sample_weight` ([n] float32).
    """
    train = split.interactions[split.interactions["split"] == TRAIN].reset_index(drop=True)
    length = _history_length(features)
    history_all = history_before_each(train, length) if length else None
    keep = np.ones(len(train), bool) if with_ratings else train["positive"].to_numpy()
    rows = train[keep]
    history = history_all[keep] if history_all is not None else None
    probability = item_sampling_probability(split, positives_only=not with_ratings)
    weight = rows["weight"].to_numpy(dtype=np.float32) * rows["positive"].to_numpy()
    arrays = {
        **query_inputs(features, tables, rows["user_id"].to_numpy(), history),
        **candidate_inputs(features, tables, rows["item_id"].to_numpy()),
        SAMPLING_PROBABILITY: probability.reindex(rows["item_id"]).to_numpy(dtype=np.float32),
        WEIGHT: weight.astype(np.float32),
    }
    if with_ratings:
        arrays[RATING] = _ratings(rows)
    return arrays


def _ratings(rows: pd.DataFrame) -> np.ndarray:
    ratings = rows["rating"].to_numpy(dtype=np.float32)
    missing = int(np.isnan(ratings).sum())
    if missing:
        raise ConfigError(
            f"rating_weight > 0 trains a rating head, but {missing} of {len(ratings)} training "
            "interactions have no rating; map a rating column or set rating_weight to 0"
        )
    return ratings


def snapshot_queries(
    split: SplitData, features: FeatureSet, tables: FeatureTables, target: str, user_ids: np.ndarray
) -> Arrays:
    """Query inputs for `user_ids` as of the start of split `target` (history from the past)."""
    length = _history_length(features)
    history = latest_history(split.known_before(target), user_ids, length) if length else None
    return query_inputs(features, tables, user_ids, history)


def evaluation_examples(
    split: SplitData, features: FeatureSet, tables: FeatureTables, target: str
) -> Arrays:
    """(query snapshot, positive item) pairs of split `target`, for Keras validation metrics."""
    positives = split.positives(target)
    users = positives["user_id"].to_numpy()
    unique, inverse = np.unique(users, return_inverse=True)
    queries = snapshot_queries(split, features, tables, target, unique)
    probability = item_sampling_probability(split)
    return {
        **{name: values[inverse] for name, values in queries.items()},
        **candidate_inputs(features, tables, positives["item_id"].to_numpy()),
        SAMPLING_PROBABILITY: probability.reindex(positives["item_id"])
        .fillna(probability.min())
        .to_numpy(dtype=np.float32),
        WEIGHT: positives["weight"].to_numpy(dtype=np.float32),
    }


def to_tensor_dict(arrays: Arrays) -> dict:
    """Object arrays become tf.string tensors, the rest keep their dtype."""
    import tensorflow as tf

    return {
        name: tf.constant(values.astype(str) if values.dtype == object else values)
        for name, values in arrays.items()
    }


def make_dataset(arrays: Arrays, batch_size: int, *, shuffle: bool, seed: int):
    """A batched, prefetched `tf.data.Dataset` over in-memory example arrays."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(to_tensor_dict(arrays))
    if shuffle:
        size = len(next(iter(arrays.values())))
        dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
