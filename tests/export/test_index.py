"""Tests for export.index: configuration, derived parameters, building, retrieval, export."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from benchmarks.index import recall_at_k, synthetic_catalog
from export.index import (
    BRUTE_FORCE,
    INT_PAD,
    SCANN,
    IndexConfig,
    build_index,
    resolved_parameters,
    retrieve,
)
from export.loading import load_saved_model
from tfrs_model.errors import ConfigError, DataError

TopK = tfrs.layers.factorized_top_k


# --- IndexConfig validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kind": "annoy"}, "IndexConfig.kind must be one of 'scann', 'brute-force'"),
        ({"k": 0}, "IndexConfig.k must be an integer >= 1"),
        ({"k": 2.5}, "IndexConfig.k must be an integer"),
        ({"k": True}, "IndexConfig.k must be an integer"),
        ({"num_leaves": 0}, "IndexConfig.num_leaves must be an integer >= 1 or None"),
        ({"num_leaves_to_search": -3}, "IndexConfig.num_leaves_to_search"),
        ({"num_leaves": 10, "num_leaves_to_search": 11}, "must not exceed num_leaves (10)"),
        ({"training_iterations": 0}, "IndexConfig.training_iterations"),
        ({"dimensions_per_block": 0}, "IndexConfig.dimensions_per_block"),
        ({"num_reordering_candidates": -1}, "IndexConfig.num_reordering_candidates"),
        ({"parallelize_batch_searches": 1}, "IndexConfig.parallelize_batch_searches"),
    ],
)
def test_config_rejects_bad_values_naming_field(kwargs, fragment):
    with pytest.raises(ConfigError) as error:
        IndexConfig(**kwargs)
    assert fragment in str(error.value)


def test_config_defaults_and_zero_reordering_are_valid():
    config = IndexConfig()
    assert (config.kind, config.k, config.num_leaves) == (SCANN, 100, None)
    assert IndexConfig(num_reordering_candidates=0).num_reordering_candidates == 0


# --- resolved_parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_candidates", "k", "leaves", "searched", "reordering"),
    [
        # sqrt(1M) = 1000 leaves of 1000; 5% of 1M = 50K candidates = 50 leaves; max(1000, 20*10).
        (1_000_000, 10, 1000, 50, 1000),
        # k=100 re-scores 20 * 100 = 2000.
        (1_000_000, 100, 1000, 50, 2000),
        # sqrt(100K) = 316.2 -> 316 leaves of 316.5; 10K floor / 316.5 = 31.6 -> 32 leaves.
        (100_000, 10, 316, 32, 1000),
        # sqrt(1700) = 41.2 but 1700 // 50 = 34 leaves; the 10K floor covers all 34; R <= N.
        (1_700, 100, 34, 34, 1700),
        # 40 candidates: one leaf (40 // 50 = 0 -> 1), searched exhaustively.
        (40, 10, 1, 1, 40),
    ],
)
def test_resolved_parameters_derives_defaults(num_candidates, k, leaves, searched, reordering):
    params = resolved_parameters(IndexConfig(k=k), num_candidates, dim=64)
    assert params["kind"] == SCANN
    assert params["num_leaves"] == leaves
    assert params["num_leaves_to_search"] == searched
    assert params["num_reordering_candidates"] == reordering
    assert params["notes"] == []


def test_resolved_parameters_clamps_and_says_so():
    params = resolved_parameters(
        IndexConfig(k=500, num_leaves=100, num_reordering_candidates=5000, dimensions_per_block=8),
        num_candidates=400,
        dim=4,
    )
    # 400 // 50 = 8 leaves at most; k and re-scoring at most N; blocks at most dim.
    assert (params["k"], params["num_leaves"], params["num_reordering_candidates"]) == (400, 8, 400)
    assert params["dimensions_per_block"] == 4
    assert len(params["notes"]) == 4


def test_resolved_parameters_tiny_catalog_falls_back_to_brute_force():
    params = resolved_parameters(IndexConfig(k=10), num_candidates=5)
    assert params["kind"] == BRUTE_FORCE and params["requested_kind"] == SCANN
    assert params["k"] == 5
    assert any("at least 16 candidates" in note for note in params["notes"])


def test_resolved_parameters_rejects_empty_catalog():
    with pytest.raises(DataError):
        resolved_parameters(IndexConfig(), 0)


# --- build_index -----------------------------------------------------------------------------


def _catalog(num_items=600, dim=8, num_queries=16, seed=0):
    candidates, queries, _ = synthetic_catalog(
        num_items, dim, num_queries, distribution="clustered", seed=seed
    )
    return candidates, queries


@pytest.mark.parametrize(
    ("kind", "layer_class"), [(SCANN, TopK.ScaNN), (BRUTE_FORCE, TopK.BruteForce)]
)
def test_build_index_returns_called_tfrs_layer(kind, layer_class):
    candidates, queries = _catalog()
    index = build_index(IndexConfig(kind=kind, k=7), tf.constant(candidates), tf.range(600))
    assert isinstance(index, layer_class)
    assert index.built  # called once, so it saves
    scores, ids = index(tf.constant(queries))
    assert scores.shape == ids.shape == (16, 7)
    assert ids.dtype == tf.int32


def test_build_index_tiny_catalog_logs_the_fallback(caplog):
    candidates = np.eye(4, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="export.index"):
        index = build_index(IndexConfig(kind=SCANN, k=10), tf.constant(candidates), tf.range(4))
    assert isinstance(index, TopK.BruteForce)
    assert "at least 16 candidates" in caplog.text and "k=10 exceeds" in caplog.text


@pytest.mark.parametrize(
    ("candidates", "identifiers", "fragment"),
    [
        (np.zeros((3, 2), np.float64), np.arange(3), "float32"),
        (np.zeros(3, np.float32), np.arange(3), "[N, dim]"),
        (np.zeros((3, 2), np.float32), np.arange(2), "one identifier per candidate"),
        (np.zeros((3, 2), np.float32), np.zeros(3, np.float32), "tf.int32 or tf.int64"),
        (np.zeros((3, 2), np.float32), np.array([b"a", b"b", b"c"]), "catalog rows"),
    ],
)
def test_build_index_rejects_bad_inputs(candidates, identifiers, fragment):
    with pytest.raises(DataError) as error:
        build_index(
            IndexConfig(kind=BRUTE_FORCE), tf.constant(candidates), tf.constant(identifiers)
        )
    assert fragment in str(error.value)


# --- retrieve --------------------------------------------------------------------------------


def test_brute_force_retrieve_hand_checked():
    # Query [1, 0] scores each candidate by its first coordinate: 10=5, 20=4, 30=3, 40=2, 50=1.
    candidates = np.array([[3, 0], [5, 0], [1, 9], [4, 0], [2, 0]], np.float32)
    ids = tf.constant([30, 10, 50, 20, 40])
    index = build_index(IndexConfig(kind=BRUTE_FORCE, k=3), tf.constant(candidates), ids)
    queries = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    # Row 0 excludes 10 and 30 (plus padding): best remaining are 20=4, 40=2, 50=1.
    # Row 1 excludes nothing but padding: 10=5, 20=4, 30=3.
    exclude = tf.constant([[10, 30, INT_PAD], [INT_PAD, INT_PAD, INT_PAD]])
    scores, found = retrieve(index, queries, 3, exclude)
    assert found.numpy().tolist() == [[20, 40, 50], [10, 20, 30]]
    np.testing.assert_allclose(scores.numpy(), [[4, 2, 1], [5, 4, 3]])


def test_retrieve_pads_when_exclusions_leave_fewer_than_k():
    # 3 candidates, 2 excluded, k=3: one real result, then two empty slots.
    candidates = np.array([[1.0], [2.0], [3.0]], np.float32)
    index = build_index(IndexConfig(kind=BRUTE_FORCE, k=3), tf.constant(candidates), tf.range(3))
    scores, found = retrieve(index, tf.constant([[1.0]]), 3, tf.constant([[2, 0]]))
    assert found.numpy().tolist() == [[1, INT_PAD, INT_PAD]]
    assert scores.numpy()[0, 0] == 2.0 and np.all(np.isneginf(scores.numpy()[0, 1:]))


def _numpy_top_k_excluding(candidates, queries, k, exclude_rows):
    scores = queries @ candidates.T
    for row, excluded in enumerate(exclude_rows):
        scores[row, [e for e in excluded if e >= 0]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("id_dtype", [tf.int32, tf.int64])
def test_brute_force_retrieve_equals_numpy_exact_top_k(id_dtype):
    rng = np.random.default_rng(1)
    candidates = rng.standard_normal((300, 8)).astype(np.float32)
    queries = rng.standard_normal((12, 8)).astype(np.float32)
    # Each row excludes 0..40 rows: half from its own top 30 (so exclusion matters), padded.
    exclude_rows = np.full((12, 40), -1)
    top = np.argsort(-(queries @ candidates.T), axis=1)
    for row in range(12):
        chosen = np.concatenate([top[row, :30][rng.random(30) < 0.5], rng.choice(300, 5)])
        exclude_rows[row, : len(chosen)] = chosen
    expected_scores, expected_rows = _numpy_top_k_excluding(candidates, queries, 10, exclude_rows)

    identifiers = tf.range(300, dtype=id_dtype)
    exclude = tf.constant(exclude_rows, dtype=id_dtype)
    expected_ids = expected_rows
    index = build_index(IndexConfig(kind=BRUTE_FORCE, k=10), tf.constant(candidates), identifiers)
    scores, found = retrieve(index, tf.constant(queries), tf.constant(10), exclude)
    np.testing.assert_array_equal(found.numpy(), expected_ids)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5)


def test_retrieve_clamps_k_to_catalog_size():
    candidates, queries = _catalog(num_items=20)
    index = build_index(IndexConfig(kind=BRUTE_FORCE, k=5), tf.constant(candidates), tf.range(20))
    _, found = retrieve(index, tf.constant(queries), 50)
    assert found.shape == (16, 20)
    assert sorted(found.numpy()[0].tolist()) == list(range(20))


def test_retrieve_rejects_exclusions_of_another_dtype():
    candidates, queries = _catalog(num_items=20)
    index = build_index(IndexConfig(kind=BRUTE_FORCE), tf.constant(candidates), tf.range(20))
    with pytest.raises(DataError, match="int32"):
        retrieve(index, tf.constant(queries), 5, tf.constant([[3]] * 16, tf.int64))


def test_scann_defaults_reach_recall_095_on_clustered_catalog():
    candidates, queries, _ = synthetic_catalog(
        5_000, 32, 200, distribution="clustered-normalized", seed=3
    )
    ids = tf.range(5_000)
    scann = build_index(IndexConfig(kind=SCANN, k=10), tf.constant(candidates), ids)
    brute = build_index(IndexConfig(kind=BRUTE_FORCE, k=10), tf.constant(candidates), ids)
    approx = retrieve(scann, tf.constant(queries), 10)[1].numpy()
    exact = retrieve(brute, tf.constant(queries), 10)[1].numpy()
    assert recall_at_k(approx, exact, 10) >= 0.95


def test_scann_retrieve_never_returns_excluded_ids():
    candidates, queries = _catalog(num_items=2_000, dim=16, num_queries=32)
    index = build_index(IndexConfig(kind=SCANN, k=10), tf.constant(candidates), tf.range(2_000))
    first = retrieve(index, tf.constant(queries), 10)[1].numpy()
    exclude = np.concatenate([first[:, :5], np.full((32, 3), INT_PAD)], axis=1).astype(np.int32)
    found = retrieve(index, tf.constant(queries), 10, tf.constant(exclude))[1].numpy()
    for row in range(32):
        assert not set(found[row]) & set(exclude[row, :5])
        assert len(set(found[row])) == 10


def test_scann_marks_slots_it_cannot_fill():
    # 2000 candidates in 40 leaves of ~50, 1 leaf searched, k=300: ScaNN finds ~50 per query.
    # TFRS's layer would pad with NaN scores and the id of row 0; ours says -inf and -1.
    candidates, queries = _catalog(num_items=2_000, dim=16, num_queries=4)
    config = IndexConfig(kind=SCANN, k=300, num_leaves=40, num_leaves_to_search=1)
    index = build_index(config, tf.constant(candidates), tf.range(2_000))
    scores, found = retrieve(index, tf.constant(queries), 300)
    scores, found = scores.numpy(), found.numpy()
    assert scores.shape == found.shape == (4, 300)
    empty = np.isneginf(scores)
    assert empty.any() and not np.isnan(scores).any()
    assert np.all(found[empty] == INT_PAD) and np.all(found[~empty] >= 0)
    assert np.all(np.diff(np.where(empty, -1e9, scores), axis=1) <= 0)  # descending


# --- export as a serving signature -----------------------------------------------------------


class _Serving(tf.Module):
    def __init__(self, index, dim):
        super().__init__()
        self.index = index
        self.recommend = tf.function(
            self._recommend,
            input_signature=[
                tf.TensorSpec([None, dim], tf.float32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([None, None], tf.int32),
            ],
        )

    def _recommend(self, queries, k, exclude):
        scores, ids = retrieve(self.index, queries, k, exclude)
        return {"scores": scores, "item_ids": ids}


@pytest.mark.parametrize("kind", [SCANN, BRUTE_FORCE])
def test_exported_module_round_trip_with_tensor_k(kind, tmp_path):
    candidates, queries = _catalog(num_items=500, dim=8, num_queries=6)
    ids = tf.range(500)
    module = _Serving(build_index(IndexConfig(kind=kind, k=10), tf.constant(candidates), ids), 8)
    exclude = tf.constant([[1, 2, INT_PAD]] * 6)
    before = {k: module.recommend(tf.constant(queries), tf.constant(k), exclude) for k in (3, 7)}
    tf.saved_model.save(
        module,
        str(tmp_path),
        signatures={"recommend": module.recommend},
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
    )
    loaded = load_saved_model(tmp_path)
    for k in (3, 7):  # one saved function, two values of k
        after = loaded.signatures["recommend"](
            queries=tf.constant(queries), k=tf.constant(k), exclude=exclude
        )
        assert after["item_ids"].shape == (6, k)
        np.testing.assert_array_equal(after["item_ids"].numpy(), before[k]["item_ids"].numpy())
        np.testing.assert_allclose(after["scores"].numpy(), before[k]["scores"].numpy())
    # A batch size not seen before, and more exclusion columns.
    more = loaded.recommend(
        tf.constant(queries[:2]), tf.constant(4), tf.constant([[INT_PAD] * 9] * 2)
    )
    assert more["item_ids"].shape == (2, 4)
