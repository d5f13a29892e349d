"""Ranking metrics against values computed by hand (see each comment)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from tfrs_model.evaluation.metrics import hit_matrix, ranking_metrics

LOG2_3 = math.log2(3)  # discount of rank 2 is 1 / log2(3) ~ 0.6309


def test_one_user_every_metric_by_hand():
    # Ranked 3, 1, 4, 0, 2; relevant {1, 2}. At K=3 the hits are [0, 1, 0].
    ranked = np.array([[3, 1, 4, 0, 2]])
    metrics = ranking_metrics(ranked, [np.array([1, 2])], num_items=10, ks=(3, 5))
    # Recall@3: 1 hit / min(3, |R|=2).
    assert metrics["recall@3"] == pytest.approx(1 / 2)
    assert metrics["precision@3"] == pytest.approx(1 / 3)
    # DCG = 1/log2(3) (hit at rank 2); ideal DCG for 2 relevant = 1 + 1/log2(3).
    assert metrics["ndcg@3"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    # AP@3 = Precision@2 * hit / min(3, 2) = (1/2) / 2.
    assert metrics["map@3"] == pytest.approx(1 / 4)
    assert metrics["hit_rate@3"] == 1.0
    # Items 3, 1, 4 shown out of a 10-item catalog.
    assert metrics["coverage@3"] == pytest.approx(3 / 10)
    # At K=5 both are found, at ranks 2 and 5.
    assert metrics["recall@5"] == 1.0
    assert metrics["precision@5"] == pytest.approx(2 / 5)
    assert metrics["ndcg@5"] == pytest.approx((1 / LOG2_3 + 1 / math.log2(6)) / (1 + 1 / LOG2_3))
    # AP@5 = (P@2 + P@5) / 2 = (1/2 + 2/5) / 2.
    assert metrics["map@5"] == pytest.approx((1 / 2 + 2 / 5) / 2)


def test_recall_divides_by_min_of_k_and_relevant_count():
    # Five relevant items, K=2, both slots hits: a perfect list at K=2 scores 1, not 2/5.
    ranked = np.array([[0, 1, 7]])
    metrics = ranking_metrics(ranked, [np.array([0, 1, 2, 3, 4])], num_items=8, ks=(2,))
    assert metrics["recall@2"] == 1.0
    assert metrics["ndcg@2"] == 1.0
    assert metrics["map@2"] == 1.0
    assert metrics["precision@2"] == 1.0


def test_metrics_are_averaged_over_users():
    # User A: hit at rank 1 (recall 1, ndcg 1). User B: no hit (0, 0).
    ranked = np.array([[5, 6], [5, 6]])
    metrics = ranking_metrics(ranked, [np.array([5]), np.array([9])], num_items=10, ks=(2,))
    assert metrics["recall@2"] == pytest.approx(0.5)
    assert metrics["ndcg@2"] == pytest.approx(0.5)
    assert metrics["hit_rate@2"] == pytest.approx(0.5)
    # Precision: (1/2 + 0/2) / 2.
    assert metrics["precision@2"] == pytest.approx(0.25)
    # Coverage counts distinct items over all users: {5, 6}.
    assert metrics["coverage@2"] == pytest.approx(2 / 10)


def test_empty_slots_are_neither_hits_nor_coverage():
    # -1 marks an empty slot (fewer candidates than K): item 4 at rank 1, then nothing.
    ranked = np.array([[4, -1, -1]])
    metrics = ranking_metrics(ranked, [np.array([4, 8])], num_items=10, ks=(3,))
    assert metrics["recall@3"] == pytest.approx(1 / 2)
    assert metrics["precision@3"] == pytest.approx(1 / 3)
    assert metrics["coverage@3"] == pytest.approx(1 / 10)


def test_hit_matrix_marks_relevant_positions():
    hits = hit_matrix(np.array([[1, 2, 3], [3, 2, 1]]), [np.array([3]), np.array([2, 9])])
    np.testing.assert_array_equal(hits, [[False, False, True], [False, True, False]])


@pytest.mark.parametrize(
    ("ranked", "relevant", "ks", "message"),
    [
        (np.zeros((2, 5), dtype=int), [np.array([0])], (5,), "2 ranked lists for 1 users"),
        (np.zeros((1, 5), dtype=int), [np.array([0])], (10,), "K=10 exceeds the 5"),
    ],
)
def test_inconsistent_inputs_are_rejected(ranked, relevant, ks, message):
    with pytest.raises(ValueError, match=message):
        ranking_metrics(ranked, relevant, num_items=5, ks=ks)


def test_csr_relevant_items_by_hand():
    # The EvalSet form: relevant items as a [users, items] CSR matrix. User A: ranked 3, 1, 4
    # with relevant {1, 2}: one hit at rank 2. User B: ranked 7, -1, -1 (two empty slots) with
    # relevant {7}: a hit at rank 1.
    ranked = np.array([[3, 1, 4], [7, -1, -1]])
    relevant = sp.csr_matrix(np.array([[0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]], bool))
    metrics = ranking_metrics(ranked, relevant, num_items=8, ks=(3,))
    # Recall@3: A 1 / min(3, 2) = 1/2, B 1 / 1 = 1; mean 3/4.
    assert metrics["recall@3"] == pytest.approx(3 / 4)
    # Precision@3: (1/3 + 1/3) / 2.
    assert metrics["precision@3"] == pytest.approx(1 / 3)
    # NDCG@3: A (1/log2(3)) / (1 + 1/log2(3)); B 1 / 1.
    assert metrics["ndcg@3"] == pytest.approx(((1 / LOG2_3) / (1 + 1 / LOG2_3) + 1) / 2)
    # MAP@3: A Precision@2 / 2 = 1/4; B Precision@1 / 1 = 1.
    assert metrics["map@3"] == pytest.approx((1 / 4 + 1) / 2)
    assert metrics["hit_rate@3"] == 1.0
    # Items 3, 1, 4, 7 shown out of 8.
    assert metrics["coverage@3"] == pytest.approx(4 / 8)
    np.testing.assert_array_equal(
        hit_matrix(ranked, relevant), [[False, True, False], [True, False, False]]
    )
    # The same answer from per-user index arrays.
    assert ranking_metrics(ranked, [np.array([1, 2]), np.array([7])], 8, (3,)) == metrics


def test_csr_with_more_users_than_ranked_lists_is_rejected():
    relevant = sp.csr_matrix(np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match="2 ranked lists for 3 users"):
        ranking_metrics(np.zeros((2, 3), dtype=int), relevant, num_items=3, ks=(3,))
