"""The pointwise rating and like heads and non-positive retrieval weights: their examples, their
share of the loss, and their refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_model.config import DataConfig, ModelConfig
from tfrs_model.data.schema import build_dataset
from tfrs_model.data.splits import TRAIN, assign_splits
from tfrs_model.errors import ConfigError
from tfrs_model.features.engine import EngineConfig
from tfrs_model.features.examples import (
    LIKE,
    RATING,
    SAMPLING_PROBABILITY,
    WEIGHT,
    item_sampling_probability,
)
from tfrs_model.features.shards import read_rows, write_example_shards
from tfrs_model.features.spec import CANDIDATE, ITEM_ID, USER_ID
from tfrs_model.features.streaming import (
    CodeTables,
    ExampleUse,
    check_likes,
    check_ratings,
    model_inputs,
)
from tfrs_model.features.vocabulary import build_feature_set
from tfrs_model.layers import PointwiseHead


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


def _training_batch(split, tmp_path, positives_only: bool) -> dict[str, tf.Tensor]:
    """The split's training rows from the example shards, as one batch in time order."""
    shards = write_example_shards(split, tmp_path / "shards", 2, EngineConfig(threads=1))
    chunks = [chunk for path in shards.files((TRAIN,)) for chunk in read_rows(path, 2)]
    rows = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    order = np.argsort(rows["item_row"])  # items i0..iN are rated in time order
    keep = order[rows["positive"][order]] if positives_only else order
    return {name: tf.constant(values[keep]) for name, values in rows.items()}


def test_rated_examples_are_every_training_interaction_with_non_positives_weighted_zero(
    tmp_path,
):
    split, _ = _rated_split([5, 2, 4, 1, 3, 5, 4, 2, 5, 5])
    train = split.interactions[split.interactions["split"] == TRAIN]
    tables = _id_tables(split, positives_only=False)
    inputs = model_inputs(
        _training_batch(split, tmp_path, False), tables, ExampleUse(with_ratings=True)
    )

    assert inputs[CANDIDATE][ITEM_ID].numpy().tolist() == list(
        range(len(train))
    )  # i0..i5: every row
    np.testing.assert_array_equal(inputs[RATING], train["rating"].to_numpy(np.float32))
    # Only positives (rating >= 4) train retrieval; the others only the rating head.
    np.testing.assert_array_equal(inputs[WEIGHT], (train["rating"] >= 4).to_numpy(np.float32))
    # Every item appears once in training, so each is 1/n of the rows the batches are drawn from.
    np.testing.assert_allclose(inputs[SAMPLING_PROBABILITY], 1 / len(train), rtol=1e-6)
    # Without ratings: the positives only, and no rating column.
    plain = model_inputs(_training_batch(split, tmp_path / "p", True), tables, ExampleUse())
    positives = train["positive"].to_numpy()
    assert plain[CANDIDATE][ITEM_ID].numpy().tolist() == np.flatnonzero(positives).tolist()
    assert RATING not in plain


def test_unrated_interactions_are_refused_naming_the_fix():
    split, _ = _rated_split([5, None, 4, 1, 3, 5, 4, 2, 5, 5])
    with pytest.raises(ConfigError, match=r"1 of \d+ training interactions have no rating"):
        check_ratings(split)


def _losses_with_head(tiny_retrieval_model, label: str, labels: list[float], head: dict):
    """(retrieval-only loss, the model with the head, its combined loss) on a 3-row batch
    whose `label` column holds `labels`; `head` is the ModelConfig field turning it on."""
    batch = {
        USER_ID: tf.constant(["u1", "u2", "u1"]),
        ITEM_ID: tf.constant(["a", "b", "c"]),
        SAMPLING_PROBABILITY: tf.constant([0.4, 0.3, 0.3]),
        WEIGHT: tf.constant([1.0, 1.0, 0.0]),
        label: tf.constant(labels),
    }

    def tiny_model(**config):
        return tiny_retrieval_model(
            ("u1", "u2"), ("a", "b", "c"), 5, logq_correction=False, **config
        )

    retrieval_only = tiny_model().compute_loss(batch).numpy()
    model = tiny_model(**head)
    # Same seed, towers built first: the retrieval part is unchanged by adding the head.
    return retrieval_only, model, model.compute_loss(batch).numpy(), batch


def test_the_loss_adds_the_weighted_mean_squared_rating_error(tiny_retrieval_model):
    retrieval_only, model, combined, batch = _losses_with_head(
        tiny_retrieval_model, RATING, [5.0, 4.0, 1.0], {"rating_weight": 0.5}
    )
    queries = model.query_model(batch)
    candidates = model.candidate_model(batch)
    predicted = model.rating_head(queries, candidates).numpy()[:, 0]
    squared_error = np.mean((predicted - np.array([5.0, 4.0, 1.0])) ** 2)
    assert combined == pytest.approx(retrieval_only + 0.5 * squared_error, rel=1e-5)


def test_rating_head_maps_two_embeddings_to_one_rating():
    head = PointwiseHead(hidden_layers=(8,))
    out = head(tf.ones((3, 4)), tf.zeros((3, 4)))
    assert out.shape == (3, 1)


def test_negative_rating_weight_is_refused():
    with pytest.raises(ConfigError, match=r"rating_weight must be >= 0 \(0 is off\)"):
        ModelConfig(rating_weight=-1.0)


def _id_tables(split, positives_only: bool) -> CodeTables:
    """Code = catalog row, so inputs can be read back as rows."""
    probability = item_sampling_probability(split, positives_only=positives_only)
    return CodeTables(
        user={USER_ID: np.arange(1, dtype=np.int64)},
        item={ITEM_ID: np.arange(len(split.data.items), dtype=np.int64)},
        history=None,
        probability=probability.reindex(split.data.items["item_id"]).fillna(0).to_numpy(np.float32),
    )


def test_like_examples_are_every_interaction_labelled_by_the_positive_rule(tmp_path):
    split, _ = _rated_split([5, 2, 4, 1, 3, 5, 4, 2, 5, 5])
    train = split.interactions[split.interactions["split"] == TRAIN]
    use = ExampleUse(with_likes=True)
    assert not use.positives_only
    inputs = model_inputs(_training_batch(split, tmp_path, False), _id_tables(split, False), use)

    liked = (train["rating"] >= 4).to_numpy(np.float32)
    np.testing.assert_array_equal(inputs[LIKE], liked)
    # Only positives train retrieval; the others only the like head.
    np.testing.assert_array_equal(inputs[WEIGHT], liked)
    assert RATING not in inputs


def test_non_positive_interactions_train_retrieval_with_their_own_weight(tmp_path):
    split, _ = _rated_split([5, 2, 4, 1, 3, 5, 4, 2, 5, 5])
    train = split.interactions[split.interactions["split"] == TRAIN]
    use = ExampleUse(non_positive_weight=0.25)
    inputs = model_inputs(_training_batch(split, tmp_path, False), _id_tables(split, False), use)

    # Ratings 5 2 4 1 3 5 (the first six are train): positives 1.0, the rest 0.25.
    assert train["rating"].tolist() == [5, 2, 4, 1, 3, 5]
    np.testing.assert_allclose(inputs[WEIGHT], [1.0, 0.25, 1.0, 0.25, 0.25, 1.0])
    assert LIKE not in inputs and RATING not in inputs


def test_the_loss_adds_the_weighted_like_cross_entropy(tiny_retrieval_model):
    retrieval_only, model, combined, batch = _losses_with_head(
        tiny_retrieval_model, LIKE, [1.0, 1.0, 0.0], {"like_weight": 2.0}
    )
    logits = model.like_head(model.query_model(batch), model.candidate_model(batch)).numpy()[:, 0]
    probability = 1 / (1 + np.exp(-logits))
    labels = np.array([1.0, 1.0, 0.0])
    cross_entropy = -np.mean(labels * np.log(probability) + (1 - labels) * np.log(1 - probability))
    assert combined == pytest.approx(retrieval_only + 2.0 * cross_entropy, rel=1e-5)


def test_a_like_head_without_non_positive_interactions_is_refused_naming_the_fix():
    split, _ = _rated_split([5, 4, 4, 5, 4, 5, 4, 5, 5, 5])
    with pytest.raises(
        ConfigError, match=r"6 of 6 training interactions are positive.*positive_if"
    ):
        check_likes(split)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("like_weight", -0.5, r"like_weight must be >= 0 \(0 is off\)"),
        ("non_positive_weight", 1.5, r"non_positive_weight must be in \[0, 1\]"),
    ],
)
def test_bad_head_and_weight_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{field: value})
