"""The evaluation protocol and the non-neural baselines on tiny matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tfrs_model.errors import DataError
from tfrs_model.evaluation.baselines import (
    EaseBaseline,
    PopularityBaseline,
    RandomBaseline,
    SvdBaseline,
)
from tfrs_model.evaluation.evaluate import evaluate_split
from tfrs_model.evaluation.protocol import (
    build_eval_set,
    csr_rows,
    interaction_matrix,
    top_k_excluding,
)


def _catalog_ids(eval_set, ranked: np.ndarray) -> list[list[str]]:
    return [[eval_set.catalog[i] if i >= 0 else None for i in row] for row in ranked]


# ---- top_k_excluding -----------------------------------------------------------------------


def test_top_k_orders_by_score_and_breaks_ties_by_lower_index():
    scores = np.array([[0.1, 0.5, 0.5, 0.9]])
    np.testing.assert_array_equal(top_k_excluding(scores, [np.array([], int)], 4), [[3, 1, 2, 0]])


def test_top_k_never_returns_excluded_items_and_pads_with_empty_slots():
    # Catalog of 3, item 0 excluded, k=5: items 1 and 2, then three empty slots (-1).
    scores = np.array([[3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(top_k_excluding(scores, [np.array([0])], 5), [[1, 2, -1, -1, -1]])


def test_top_k_excluded_best_item_is_skipped():
    scores = np.array([[9.0, 1.0, 5.0], [9.0, 1.0, 5.0]])
    ranked = top_k_excluding(scores, [np.array([0]), np.array([2])], 2)
    np.testing.assert_array_equal(ranked, [[2, 1], [0, 1]])


# ---- the protocol ----------------------------------------------------------------------------

# Users a, b, c over items i1..i4 (plus i5 nobody touched). Test positives: a -> i3, b -> i1.
ROWS = [
    ("a", "i1", 1, "train", True),
    ("a", "i2", 2, "train", True),
    ("a", "i4", 3, "validation", False),
    ("a", "i3", 4, "test", True),
    ("b", "i2", 1, "train", True),
    ("b", "i1", 5, "test", True),
    ("c", "i2", 1, "train", True),
    ("c", "i4", 2, "validation", True),
]
CATALOG = ["i1", "i2", "i3", "i4", "i5"]


def test_eval_set_relevant_and_excluded_by_hand(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    # Only users with a test positive are evaluated.
    assert list(eval_set.user_ids) == ["a", "b"]
    assert list(eval_set.catalog) == CATALOG
    # Relevant: a -> i3 (index 2), b -> i1 (index 0).
    assert [list(r) for r in csr_rows(eval_set.relevant)] == [[2], [0]]
    # Excluded: everything known before test (train and validation, any rating):
    # a knew i1, i2, i4 (the non-positive validation interaction too); b knew i2.
    assert [list(e) for e in csr_rows(eval_set.excluded)] == [[0, 1, 3], [1]]


def test_validation_eval_set_knows_only_train(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "validation")
    # The only validation positive is c -> i4; a's validation row is not a positive.
    assert list(eval_set.user_ids) == ["c"]
    assert set(eval_set.known["split"]) == {"train"}


def test_eval_set_without_positives_is_a_data_error(split_data):
    rows = [("a", "i1", 1, "train", True), ("a", "i2", 2, "test", False)]
    with pytest.raises(DataError, match="no positive interactions"):
        build_eval_set(split_data(rows), "test")


def test_interaction_matrix_is_binary_known_interactions(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    matrix, users = interaction_matrix(eval_set)
    assert list(users) == ["a", "b", "c"]
    np.testing.assert_array_equal(
        matrix.toarray(),
        [
            [1, 1, 0, 1, 0],  # a: i1, i2, i4
            [0, 1, 0, 0, 0],  # b: i2
            [0, 1, 0, 1, 0],  # c: i2, i4
        ],
    )


# ---- baselines -----------------------------------------------------------------------------


def test_popularity_ranks_by_known_count_excluding_own_items(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    ranked = PopularityBaseline().rank(eval_set, 5)
    # Known counts: i1 1, i2 3, i3 0, i4 2, i5 0. User a knows i1, i2, i4 -> i3, i5 (tied at 0,
    # lower index first), then empty slots. User b knows i2 -> i4, i1, i3, i5.
    assert _catalog_ids(eval_set, ranked) == [
        ["i3", "i5", None, None, None],
        ["i4", "i1", "i3", "i5", None],
    ]


def test_ease_weights_by_hand():
    # X = [[1, 1], [1, 0]]: G = X^T X = [[2, 1], [1, 1]]; with lambda = 1, G + I = [[3, 1], [1, 2]]
    # and P = (G + I)^-1 = [[2, -1], [-1, 3]] / 5. B_ij = -P_ij / P_jj with diag(B) = 0:
    # B_01 = (1/5) / (3/5) = 1/3 and B_10 = (1/5) / (2/5) = 1/2.
    weights = EaseBaseline(l2=1.0).item_weights(np.array([[1.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(weights, [[0.0, 1 / 3], [1 / 2, 0.0]], rtol=1e-6)


def test_ease_recommends_the_co_occurring_item(split_data):
    # u1 and u2 both know x and y; test user t knows x; z co-occurs with nothing t knows.
    rows = [
        ("u1", "x", 1, "train", True),
        ("u1", "y", 2, "train", True),
        ("u2", "x", 1, "train", True),
        ("u2", "y", 2, "train", True),
        ("u3", "z", 1, "train", True),
        ("t", "x", 1, "train", True),
        ("t", "y", 9, "test", True),
    ]
    eval_set = build_eval_set(split_data(rows), "test")
    ranked = EaseBaseline(l2=1.0).rank(eval_set, 2)
    # Counts x 3 (u1, u2, t), y 2, z 1; x and y never meet z, so G + I is block diagonal:
    # [[4, 2], [2, 3]] for (x, y) gives P = [[3, -2], [-2, 4]] / 8 and B_xy = (2/8) / (4/8) = 1/2,
    # while B_xz = 0. t knows x (excluded): y scores 1/2, z scores 0.
    assert _catalog_ids(eval_set, ranked) == [["y", "z"]]


def test_pure_svd_projects_onto_the_top_singular_vector(split_data):
    # Two blocks: u1, u2 and t know {a, b} (t only a), u3 knows {c, d}. X^T X is block diagonal:
    # [[3, 2], [2, 2]] for (a, b), top eigenvalue (5 + sqrt(17)) / 2 ~ 4.56, and [[1, 1], [1, 1]]
    # for (c, d), eigenvalue 2. With one factor, v lies in the (a, b) block with both entries of
    # one sign, so t (knows a, excluded) scores b at v_a * v_b > 0 and c, d at 0 (lower index
    # first).
    rows = [
        ("u1", "a", 1, "train", True),
        ("u1", "b", 2, "train", True),
        ("u2", "a", 1, "train", True),
        ("u2", "b", 2, "train", True),
        ("u3", "c", 1, "train", True),
        ("u3", "d", 2, "train", True),
        ("t", "a", 1, "train", True),
        ("t", "b", 5, "test", True),
    ]
    eval_set = build_eval_set(split_data(rows), "test")
    ranked = SvdBaseline(factors=1).rank(eval_set, 3)
    assert _catalog_ids(eval_set, ranked) == [["b", "c", "d"]]


def test_random_baseline_is_seeded_and_respects_exclusions(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    first = RandomBaseline(seed=3).rank(eval_set, 5)
    np.testing.assert_array_equal(first, RandomBaseline(seed=3).rank(eval_set, 5))
    for row, excluded in zip(first, csr_rows(eval_set.excluded), strict=True):
        assert not set(row) & set(excluded)


def test_evaluate_split_reports_every_baseline_at_every_k(split_data):
    rows = [*ROWS, ("c", "i3", 9, "test", True)]
    report = evaluate_split(split_data(rows, CATALOG), "test", [], ks=(1, 10))
    assert list(report.results) == ["random", "popularity", "ease", "svd"]
    assert set(report.results["ease"]) == {
        f"{m}@{k}"
        for m in ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")
        for k in (1, 10)
    }
    # A catalog of 5 is smaller than K=10: ranking still works (empty slots), and a user's
    # remaining items are all in the top 10, so every test positive not yet known is found.
    assert report.results["popularity"]["recall@10"] == 1.0
    assert report.tuning["metric"] == "validation ndcg@10"
