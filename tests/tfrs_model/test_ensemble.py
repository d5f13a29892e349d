"""Ensemble members (`model.ensemble_members`): towers whose outputs are their members' unit
vectors read as one, members that learn each from its own loss and batches, and the training
streams that give each member its own order."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrs_model.config import ModelConfig
from tfrs_model.errors import ConfigError
from tfrs_model.features.examples import SAMPLING_PROBABILITY, WEIGHT
from tfrs_model.features.spec import ITEM_ID, USER_ID
from tfrs_model.towers import EnsembleTower, Tower, member_outputs

USERS = ("u1", "u2", "u3")
ITEMS = ("a", "b", "c", "d")
TEMPERATURE = 0.5


@pytest.fixture
def ensemble(tiny_retrieval_model):
    """A 3-member id-only model: no logQ, no accidental-hit removal, no id dropout, so its
    loss is a plain in-batch softmax per member."""
    return tiny_retrieval_model(
        USERS,
        ITEMS,
        7,
        ensemble_members=3,
        temperature=TEMPERATURE,
        logq_correction=False,
        remove_accidental_hits=False,
    )


def _batch(users: list[str], items: list[str], weights: list[float] | None = None) -> dict:
    return {
        USER_ID: tf.constant(users),
        ITEM_ID: tf.constant(items),
        SAMPLING_PROBABILITY: tf.fill([len(users)], 0.25),
        WEIGHT: tf.constant(weights or [1.0] * len(users)),
    }


def _softmax_loss(queries: np.ndarray, candidates: np.ndarray, weights: np.ndarray) -> float:
    """In-batch softmax worked out by hand: row i's positive is candidate i, the others are
    its negatives; the task sums the weighted cross-entropies over the batch."""
    logits = queries @ candidates.T / TEMPERATURE
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-(weights * np.diag(log_softmax)).sum())


def _member_vectors(tower: EnsembleTower, inputs: dict) -> list[np.ndarray]:
    return [member(inputs).numpy() for member in tower.members]


def test_one_member_is_a_plain_tower_and_bad_counts_are_refused(tiny_retrieval_model):
    single = tiny_retrieval_model(USERS, ITEMS, 7, ensemble_members=1)
    assert type(single.query_model) is Tower
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="ensemble_members must be a whole number >= 1"):
            ModelConfig(ensemble_members=bad)


def test_output_is_the_members_concatenated_unit_norm_and_scores_average(ensemble):
    users = {USER_ID: tf.constant(list(USERS))}
    items = {ITEM_ID: tf.constant(list(ITEMS))}
    queries, candidates = ensemble.query_model(users).numpy(), ensemble.candidate_model(items)
    candidates = candidates.numpy()

    assert queries.shape == (3, 3 * 4) and candidates.shape == (4, 3 * 4)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-6)
    member_queries = _member_vectors(ensemble.query_model, users)
    member_candidates = _member_vectors(ensemble.candidate_model, items)
    # The members differ (independent initialisation) ...
    assert not np.allclose(member_queries[0], member_queries[1])
    # ... and one dot product of the ensemble's vectors is the mean of the members' scores.
    mean_score = sum(q @ c.T for q, c in zip(member_queries, member_candidates, strict=True)) / 3
    np.testing.assert_allclose(queries @ candidates.T, mean_score, rtol=1e-5, atol=1e-6)
    # member_outputs gives each member's own vectors back.
    for split, member in zip(member_outputs(tf.constant(queries), 3), member_queries, strict=True):
        np.testing.assert_allclose(split.numpy(), member, rtol=1e-5, atol=1e-6)


def test_a_shared_batch_trains_each_member_on_its_own_loss(ensemble):
    batch = _batch(["u1", "u2", "u3"], ["a", "c", "d"], [1.0, 0.5, 1.0])
    loss = ensemble.compute_loss(batch, training=True).numpy()

    queries = _member_vectors(ensemble.query_model, {USER_ID: batch[USER_ID]})
    candidates = _member_vectors(ensemble.candidate_model, {ITEM_ID: batch[ITEM_ID]})
    weights = batch[WEIGHT].numpy()
    expected = sum(_softmax_loss(q, c, weights) for q, c in zip(queries, candidates, strict=True))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_member_batches_train_each_member_on_its_own_batch(ensemble):
    batches = (
        _batch(["u1", "u2"], ["a", "b"]),
        _batch(["u3", "u1"], ["c", "a"]),
        _batch(["u2", "u3"], ["d", "b"]),
    )
    loss = ensemble.compute_loss(batches, training=True).numpy()

    expected = 0.0
    members = zip(
        ensemble.query_model.members, ensemble.candidate_model.members, batches, strict=True
    )
    for query_member, candidate_member, batch in members:
        queries = query_member({USER_ID: batch[USER_ID]}).numpy()
        candidates = candidate_member({ITEM_ID: batch[ITEM_ID]}).numpy()
        expected += _softmax_loss(queries, candidates, np.ones(2))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_a_training_step_moves_only_the_members_whose_loss_it_is(ensemble):
    """Members share no variable: a step on member batches changes every member's tables, and
    the gradient of one member's loss reaches no other member."""
    batches = tuple(_batch(["u1", "u2"], ["a", "b"]) for _ in range(3))
    with tf.GradientTape() as tape:
        member_loss = ensemble.task(
            ensemble.query_model.members[0]({USER_ID: batches[0][USER_ID]}),
            ensemble.candidate_model.members[0]({ITEM_ID: batches[0][ITEM_ID]}),
            compute_metrics=False,
            compute_batch_metrics=False,
        )
    variables = ensemble.trainable_variables
    gradients = tape.gradient(member_loss, variables)
    first_member = {v.ref() for v in ensemble.query_model.members[0].trainable_variables} | {
        v.ref() for v in ensemble.candidate_model.members[0].trainable_variables
    }
    for variable, gradient in zip(variables, gradients, strict=True):
        assert (gradient is not None) == (variable.ref() in first_member), variable.name


def test_each_member_reads_its_own_shuffled_stream_of_the_same_examples(
    split_data, tiny_config, tmp_path
):
    """Every member gets every training example once per epoch, each in its own order (its
    own seed), as separately trained models would."""
    import dataclasses

    from tfrs_model import training
    from tfrs_model.features.spec import CANDIDATE
    from tfrs_model.features.vocabulary import build_feature_set

    rows = [(f"u{u}", f"i{(u * 7 + n) % 30}", n, "train", True) for u in range(8) for n in range(8)]
    split = split_data(rows)
    config = tiny_config(batch_size=8, history_skip=0)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, ensemble_members=2)
    )
    features = build_feature_set(split, config.model, config.data)
    strategy = tf.distribute.get_strategy()
    with training._example_shards(split, features, config, tmp_path, {}) as shards:
        compiled = training._compile(split, features, config, strategy, shards, ("train",))
        steps = compiled.steps_per_epoch
        epoch = list(compiled.train_data.take(steps))

    assert steps == 8 and all(len(element) == 2 for element in epoch)
    streams = [
        np.concatenate([element[m][CANDIDATE][ITEM_ID].numpy() for element in epoch])
        for m in range(2)
    ]
    assert sorted(streams[0]) == sorted(streams[1]) and len(streams[0]) == len(rows)
    assert not np.array_equal(streams[0], streams[1])


def test_the_rating_head_learns_from_the_whole_ensemble_on_the_first_batch(
    tiny_retrieval_model,
):
    model = tiny_retrieval_model(
        USERS,
        ITEMS,
        7,
        ensemble_members=2,
        temperature=TEMPERATURE,
        logq_correction=False,
        remove_accidental_hits=False,
        rating_weight=0.5,
    )
    ratings = tf.constant([5.0, 2.0])
    batches = (
        {**_batch(["u1", "u2"], ["a", "b"]), "rating": ratings},
        {**_batch(["u3", "u1"], ["c", "d"]), "rating": tf.constant([1.0, 1.0])},
    )
    loss = model.compute_loss(batches, training=True).numpy()

    retrieval = 0.0
    members = zip(model.query_model.members, model.candidate_model.members, batches, strict=True)
    for query_member, candidate_member, batch in members:
        queries = query_member({USER_ID: batch[USER_ID]}).numpy()
        candidates = candidate_member({ITEM_ID: batch[ITEM_ID]}).numpy()
        retrieval += _softmax_loss(queries, candidates, np.ones(2))
    first = batches[0]
    predicted = model.rating_head(
        model.query_model({USER_ID: first[USER_ID]}),
        model.candidate_model({ITEM_ID: first[ITEM_ID]}),
    ).numpy()[:, 0]
    squared_error = np.mean((predicted - ratings.numpy()) ** 2)
    assert loss == pytest.approx(retrieval + 0.5 * squared_error, rel=1e-5)
