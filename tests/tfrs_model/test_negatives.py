"""Extra catalog negatives and the logQ correction: known answers on tiny hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrs_model.config import ModelConfig
from tfrs_model.errors import ConfigError
from tfrs_model.features.examples import SAMPLING_PROBABILITY, WEIGHT
from tfrs_model.features.negatives import (
    NEGATIVES,
    UNIFORM_PROBABILITY,
    attach_negatives,
    negatives_dataset,
)
from tfrs_model.features.spec import ITEM_ID, USER_ID
from tfrs_model.model import _mixed_sampling_probability

ITEMS = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
SHARES = np.array([0.4, 0.3, 0.1, 0.1, 0.1, 0.0])


def _catalog() -> dict[str, np.ndarray]:
    return {ITEM_ID: ITEMS}


def test_enough_negatives_give_the_whole_catalog_in_every_batch():
    batches = list(negatives_dataset(_catalog(), SHARES, 100, seed=0).take(3))
    for batch in batches:
        assert [v.decode() for v in batch[ITEM_ID].numpy()] == list(ITEMS)
        np.testing.assert_allclose(batch[SAMPLING_PROBABILITY].numpy(), SHARES, rtol=1e-6)
        np.testing.assert_allclose(batch[UNIFORM_PROBABILITY].numpy(), np.full(6, 1 / 6))


def test_fewer_negatives_cover_the_catalog_once_per_pass():
    # 6 items, 3 per batch: batches 1-2 are one shuffled pass, 3-4 the next.
    batches = [b[ITEM_ID].numpy() for b in negatives_dataset(_catalog(), SHARES, 3, seed=1).take(4)]
    assert all(len(b) == 3 for b in batches)
    for first, second in ((0, 1), (2, 3)):
        drawn = sorted(v.decode() for v in np.concatenate([batches[first], batches[second]]))
        assert drawn == sorted(ITEMS)


def test_negatives_are_attached_to_every_example_batch():
    examples = tf.data.Dataset.from_tensor_slices({ITEM_ID: ["a", "b", "c", "d"]}).batch(2)
    batches = list(attach_negatives(examples, negatives_dataset(_catalog(), SHARES, 2, seed=0)))
    assert len(batches) == 2
    assert all(batch[NEGATIVES][ITEM_ID].shape == (2,) for batch in batches)


def test_mixed_sampling_probability_counts_both_samples():
    # B = 4 positives drawn by popularity plus M = 2 uniform draws from N = 8 items:
    # an item with in-batch share p is expected 4p + 2/8 times.
    negatives = {UNIFORM_PROBABILITY: tf.constant([0.125, 0.125])}
    probability = _mixed_sampling_probability(tf.constant([0.5, 0.25, 0.0]), 4, negatives)
    np.testing.assert_allclose(probability.numpy(), [2.25, 1.25, 0.25])


@pytest.fixture
def tiny_model(tiny_retrieval_model):
    return lambda **model: tiny_retrieval_model(("u1", "u2", "u3"), ITEMS, 3, **model)


def _batch(with_negatives: bool) -> dict:
    batch = {
        USER_ID: tf.constant(["u1", "u2", "u3"]),
        ITEM_ID: tf.constant(["a", "b", "a"]),
        SAMPLING_PROBABILITY: tf.constant([0.4, 0.3, 0.4]),
        WEIGHT: tf.ones(3),
    }
    if with_negatives:
        batch[NEGATIVES] = next(iter(negatives_dataset(_catalog(), SHARES, 100, seed=0)))
    return batch


def test_whole_catalog_negatives_give_a_full_softmax_by_hand(tiny_model):
    model = tiny_model(logq_correction=False, temperature=0.5)
    batch = _batch(with_negatives=True)
    loss = model.compute_loss(batch, training=True).numpy()

    queries = model.query_model(batch).numpy()
    items = model.candidate_model({ITEM_ID: tf.constant(ITEMS.astype(str))}).numpy()
    positives = [0, 1, 0]  # rows of a, b, a in ITEMS
    expected = 0.0
    for query, positive in zip(queries, positives, strict=True):
        # Candidates: the positive itself, then the catalog. Accidental-hit removal masks the
        # catalog's copy of the positive and the other in-batch columns that are the same item;
        # the in-batch columns of other items stay as negatives.
        scores = items @ query / 0.5
        in_batch_others = [items[p] @ query / 0.5 for p in positives if p != positive]
        logits = np.concatenate([[scores[positive]], np.delete(scores, positive), in_batch_others])
        expected += -(logits[0] - np.log(np.exp(logits).sum()))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_logq_strength_zero_is_no_correction_and_one_is_the_plain_correction(tiny_model):
    batch = _batch(with_negatives=False)
    off = tiny_model(logq_correction=False).compute_loss(batch, training=False)
    zero = tiny_model(logq_strength=0.0).compute_loss(batch, training=False)
    assert zero.numpy() == pytest.approx(off.numpy(), rel=1e-6)
    # Strength 2 subtracts 2 log p: the same as the plain correction with probabilities p^2.
    double = tiny_model(logq_strength=2.0).compute_loss(batch, training=False)
    squared = dict(batch, **{SAMPLING_PROBABILITY: batch[SAMPLING_PROBABILITY] ** 2})
    plain = tiny_model(logq_strength=1.0).compute_loss(squared, training=False)
    assert double.numpy() == pytest.approx(plain.numpy(), rel=1e-5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sampled_negatives", -1, "sampled_negatives and hard_negatives must be >= 0"),
        ("hard_negatives", -2, "sampled_negatives and hard_negatives must be >= 0"),
        ("logq_strength", -0.5, "logq_strength must be >= 0"),
    ],
)
def test_bad_loss_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{field: value})
