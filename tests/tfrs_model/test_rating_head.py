"""The pointwise rating head: its examples, its share of the loss, and its refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_model.config import DataConfig, ModelConfig
from tfrs_model.data.schema import build_dataset
from tfrs_model.data.splits import TRAIN, assign_splits
from tfrs_model.errors import ConfigError
from tfrs_model.features.examples import RATING, SAMPLING_PROBABILITY, WEIGHT, training_examples
from tfrs_model.features.spec import ITEM_ID, USER_ID
from tfrs_model.features.tables import FeatureTables
from tfrs_model.features.vocabulary import build_feature_set
from tfrs_model.layers import RatingHead


def _rated_split(ratings: list[float | None]):
    """One user rating items i0..iN in time order; ratings >= 4 are positives."""
    log = pd.DataFrame(
        {
            "user_id": ["u"] * len(ratings),
            "item_id": [f"i{n}" for n in range(len(ratings))],
            "timestamp": range(len(ratings)),
            "rating": [np.nan if r is None else r for r in ratings],
        }
    )
    config = DataConfig(
        min_positive_rating=4.0, history_length=2, test_fraction=0.2, validation_fraction=0.25
    )
    split = assign_splits(build_dataset("t", log, None, None), config)
    return split, build_feature_set(split, ModelConfig(), config)


def test_rated_examples_are_every_training_interaction_with_non_positives_weighted_zero():
    split, features = _rated_split([5, 2, 4, 1, 3, 5, 4, 2, 5, 5])
    train = split.interactions[split.interactions["split"] == TRAIN]
    examples = training_examples(split, features, FeatureTables(split.data), with_ratings=True)

    assert examples[ITEM_ID].tolist() == train["item_id"].tolist()
    np.testing.assert_array_equal(examples[RATING], train["rating"].to_numpy(np.float32))
    # Only positives (rating >= 4) train retrieval; the others only the rating head.
    np.testing.assert_array_equal(examples[WEIGHT], (train["rating"] >= 4).to_numpy(np.float32))
    # Every item appears once in training, so each is 1/n of the rows the batches are drawn from.
    np.testing.assert_allclose(examples[SAMPLING_PROBABILITY], 1 / len(train), rtol=1e-6)
    # Without ratings: the positives only, and no rating column.
    plain = training_examples(split, features, FeatureTables(split.data))
    assert plain[ITEM_ID].tolist() == train[train["positive"]]["item_id"].tolist()
    assert RATING not in plain


def test_unrated_interactions_are_refused_naming_the_fix():
    split, features = _rated_split([5, None, 4, 1, 3, 5, 4, 2, 5, 5])
    with pytest.raises(ConfigError, match=r"1 of \d+ training interactions have no rating"):
        training_examples(split, features, FeatureTables(split.data), with_ratings=True)


def test_the_loss_adds_the_weighted_mean_squared_rating_error(tiny_retrieval_model):
    batch = {
        USER_ID: tf.constant(["u1", "u2", "u1"]),
        ITEM_ID: tf.constant(["a", "b", "c"]),
        SAMPLING_PROBABILITY: tf.constant([0.4, 0.3, 0.3]),
        WEIGHT: tf.constant([1.0, 1.0, 0.0]),
        RATING: tf.constant([5.0, 4.0, 1.0]),
    }

    def tiny_model(rating_weight: float):
        return tiny_retrieval_model(
            ("u1", "u2"), ("a", "b", "c"), 5, logq_correction=False, rating_weight=rating_weight
        )

    retrieval_only = tiny_model(0.0).compute_loss(batch).numpy()
    model = tiny_model(0.5)
    combined = model.compute_loss(batch).numpy()

    # Same seed, towers built first: the retrieval part is unchanged by adding the head.
    queries = model.query_model(batch)
    candidates = model.candidate_model(batch)
    predicted = model.rating_head(queries, candidates).numpy()[:, 0]
    squared_error = np.mean((predicted - np.array([5.0, 4.0, 1.0])) ** 2)
    assert combined == pytest.approx(retrieval_only + 0.5 * squared_error, rel=1e-5)


def test_rating_head_maps_two_embeddings_to_one_rating():
    head = RatingHead(hidden_layers=(8,))
    out = head(tf.ones((3, 4)), tf.zeros((3, 4)))
    assert out.shape == (3, 1)


def test_negative_rating_weight_is_refused():
    with pytest.raises(ConfigError, match=r"rating_weight must be >= 0 \(0 is off\)"):
        ModelConfig(rating_weight=-1.0)
