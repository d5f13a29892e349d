"""Evaluation at scale: sparse ground truth, seeded user samples, memory budgets, and a sparse
PureSVD that ranks like the dense one it replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tfrs_model.config import EvaluationConfig, RunConfig
from tfrs_model.errors import ConfigError, TwoTowerError
from tfrs_model.evaluation.baselines import EaseBaseline, SvdBaseline, svd_item_factors
from tfrs_model.evaluation.evaluate import evaluate_split, markdown_report
from tfrs_model.evaluation.memory import (
    BYTES_PER_SCORE,
    GIB,
    EvaluationMemoryError,
    ease_bytes,
    users_per_block,
)
from tfrs_model.evaluation.protocol import (
    build_eval_set,
    catalog_rows_by_user,
    csr_rows,
    interaction_matrix,
    top_k_excluding,
)

# The hand-built split of test_baselines: users a, b, c over i1..i4 (i5 untouched).
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


def _random_rows(users: int, items: int, per_user: int, seed: int) -> list[tuple]:
    """Per user `per_user` distinct train items, one validation and one test item after them."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        chosen = rng.choice(items, size=per_user + 2, replace=False)
        for time, item in enumerate(chosen[:per_user]):
            rows.append((f"u{user}", f"i{item}", time, "train", True))
        rows.append((f"u{user}", f"i{chosen[-2]}", per_user, "validation", True))
        rows.append((f"u{user}", f"i{chosen[-1]}", per_user + 1, "test", True))
    return rows


def _old_catalog_rows_by_user(frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index):
    """The list-of-arrays implementation the CSR matrices replaced (a Python loop per user)."""
    codes = catalog.get_indexer(frame["item_id"])
    grouped = (
        pd.Series(codes).groupby(frame["user_id"].to_numpy()).agg(lambda s: np.unique(s.to_numpy()))
    )
    empty = np.zeros(0, dtype=np.int64)
    return [grouped.get(user, empty).astype(np.int64) for user in users]


# ---- the sparse EvalSet ----------------------------------------------------------------------


def test_csr_eval_set_by_hand(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    assert sp.isspmatrix_csr(eval_set.relevant) and sp.isspmatrix_csr(eval_set.excluded)
    # [U, I] = 2 test users (a, b) x 5 catalog items.
    assert eval_set.relevant.shape == eval_set.excluded.shape == (2, 5)
    assert eval_set.relevant.dtype == bool
    # a -> i3 (column 2), b -> i1 (column 0); a knew i1, i2, i4 and b knew i2.
    np.testing.assert_array_equal(eval_set.relevant.toarray(), [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(eval_set.excluded.toarray(), [[1, 1, 0, 1, 0], [0, 1, 0, 0, 0]])
    assert eval_set.total_users == eval_set.population == 2


@pytest.mark.parametrize("target", ["validation", "test"])
@pytest.mark.parametrize("hand_built", [True, False], ids=["hand", "random"])
def test_csr_eval_set_equals_the_old_lists(split_data, target, hand_built):
    split = split_data(ROWS, CATALOG) if hand_built else split_data(_random_rows(30, 12, 5, 0))
    eval_set = build_eval_set(split, target)
    catalog = pd.Index(eval_set.catalog)
    positives = split.positives(target)
    known = split.known_before(target)
    old_relevant = _old_catalog_rows_by_user(positives, eval_set.user_ids, catalog)
    old_excluded = _old_catalog_rows_by_user(
        known[known["user_id"].isin(eval_set.user_ids)], eval_set.user_ids, catalog
    )
    for new, old in ((eval_set.relevant, old_relevant), (eval_set.excluded, old_excluded)):
        assert [list(r) for r in csr_rows(new)] == [list(r) for r in old]
    # The list form other modules call stays what it was.
    listed = catalog_rows_by_user(known, eval_set.user_ids, catalog)
    assert [list(r) for r in listed] == [list(r) for r in old_excluded]
    assert all(r.dtype == np.int64 for r in listed)


def test_interaction_matrix_is_sparse_float32(split_data):
    eval_set = build_eval_set(split_data(ROWS, CATALOG), "test")
    matrix, users = interaction_matrix(eval_set, users=np.array(["b", "zed"], dtype=object))
    assert sp.isspmatrix_csr(matrix) and matrix.dtype == np.float32
    # b knew i2; "zed" knew nothing: an empty row.
    np.testing.assert_array_equal(matrix.toarray(), [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert list(users) == ["b", "zed"]


def test_top_k_takes_csr_or_lists_alike():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 9))
    excluded = [np.array([0, 3]), np.array([], int), np.array([8]), np.arange(9)]
    as_csr = sp.csr_matrix(
        (np.ones(12, bool), np.concatenate(excluded), [0, 2, 2, 3, 12]), shape=(4, 9)
    )
    ranked = top_k_excluding(scores, as_csr, 5)
    np.testing.assert_array_equal(ranked, top_k_excluding(scores, excluded, 5))
    # The last user excluded every item: all slots empty.
    assert list(ranked[3]) == [-1] * 5


# ---- the user sample -------------------------------------------------------------------------


def test_eval_users_sample_is_seeded_and_a_subset(split_data):
    split = split_data(_random_rows(50, 20, 4, 1))
    everyone = build_eval_set(split, "test")
    first = build_eval_set(split, "test", max_users=10, seed=3)
    again = build_eval_set(split, "test", max_users=10, seed=3)
    other = build_eval_set(split, "test", max_users=10, seed=4)
    assert list(first.user_ids) == list(again.user_ids)
    assert list(first.user_ids) != list(other.user_ids)
    # 10 of the 50 users, in the full set's (sorted) order, with the same rows as there.
    assert first.num_users == 10 and first.total_users == 50
    assert set(first.user_ids) <= set(everyone.user_ids)
    assert list(first.user_ids) == sorted(first.user_ids)
    position = pd.Index(everyone.user_ids).get_indexer(first.user_ids)
    assert (first.relevant != everyone.relevant[position]).nnz == 0
    assert (first.excluded != everyone.excluded[position]).nnz == 0
    # Asking for more users than there are evaluates every one.
    assert build_eval_set(split, "test", max_users=500).num_users == 50


def test_report_says_how_many_users_were_scored(split_data):
    split = split_data(_random_rows(50, 20, 4, 1))
    report = evaluate_split(split, "test", [], ks=(10,), evaluation=EvaluationConfig(eval_users=10))
    assert (report.users, report.total_users) == (10, 50)
    assert report.tuning["users"] == {"scored": 10, "of": 50, "sample_seed": 0}
    # Validation (tuning) is sampled the same way.
    assert report.tuning["validation_users"]["scored"] == 10
    assert "10 of 50 users (a seeded sample, evaluation.eval_users)" in markdown_report(
        report, ks=(10,)
    )


# ---- sparse PureSVD --------------------------------------------------------------------------


def _dense_pure_svd(eval_set, factors: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The dense implementation the sparse one replaced: full SVD of the dense float32 X,
    projection V V^T of `[I, I]`. Returns the eval users' scores and rankings."""
    sparse_matrix, users = interaction_matrix(eval_set)
    matrix = sparse_matrix.toarray()
    factors = min(factors, min(matrix.shape) - 1)
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    projection = vt[:factors].T @ vt[:factors]
    rows = matrix[pd.Index(users).get_indexer(eval_set.user_ids)]
    scores = rows @ projection
    return scores, top_k_excluding(scores, eval_set.excluded, k)


@pytest.mark.parametrize("factors", [1, 3, 6])
@pytest.mark.parametrize("users", [40, 12], ids=["tall", "wide"])
def test_sparse_svd_ranks_like_the_dense_one(split_data, factors, users):
    # 40 (or 12) users x 30 items, 6 train items each: X^T X (or X X^T, the smaller side) is
    # decomposed. Every item is known to someone, so no score is a tie at exactly 0.
    split = split_data(_random_rows(users, 30, 6, 2))
    eval_set = build_eval_set(split, "test")
    assert interaction_matrix(eval_set)[0].getnnz(axis=0).min() > 0
    dense_scores, dense_ranked = _dense_pure_svd(eval_set, factors, 10)
    ranked = SvdBaseline(factors=factors).rank(eval_set, 10)
    # The same lists, except where two items' dense scores tie (items known by the same users
    # have equal columns, so equal scores; float32 rounding orders them either way).
    differ = ranked != dense_ranked
    assert differ.mean() < 0.05
    tied = np.take_along_axis(dense_scores, ranked, axis=1) - np.take_along_axis(
        dense_scores, dense_ranked, axis=1
    )
    np.testing.assert_allclose(tied[differ], 0.0, atol=1e-5)
    # Scores agree too (the sign of each singular vector cancels in V V^T).
    item_factors = svd_item_factors(interaction_matrix(eval_set)[0], factors)
    rows = interaction_matrix(eval_set, users=eval_set.user_ids)[0]
    np.testing.assert_allclose((rows @ item_factors) @ item_factors.T, dense_scores, atol=1e-5)


def test_svd_factors_are_sorted_by_singular_value():
    # X = diag(3, 1, 2) stacked over a zero row: singular values 3, 2, 1 with right singular
    # vectors e0, e2, e1 (up to sign); two factors are e0 then e2.
    matrix = sp.csr_matrix(np.array([[3.0, 0, 0], [0, 1, 0], [0, 0, 2], [0, 0, 0]]))
    factors = svd_item_factors(matrix, 2)
    np.testing.assert_allclose(np.abs(factors), [[1, 0], [0, 0], [0, 1]], atol=1e-6)
    # Asking for more factors than min(shape) - 1 gives min(shape) - 1 of them.
    assert svd_item_factors(matrix, 10).shape == (3, 2)


# ---- memory budgets --------------------------------------------------------------------------


def test_users_per_block_from_the_budget():
    # 1 GiB over 50,000 items at 16 bytes per score: 1342 users fit; capped by the 2^22-score
    # block (83 users); a catalog of 10 items is capped at 2^22 / 10 users.
    assert users_per_block(50_000, 1.0) == min(
        GIB // (50_000 * BYTES_PER_SCORE), (1 << 22) // 50_000
    )
    assert users_per_block(50_000, 1.0) == 83
    assert users_per_block(10, 1.0) == (1 << 22) // 10
    # 800,000 bytes is exactly one user's 50,000 scores: 1 user per block.
    assert users_per_block(50_000, 800_000 / GIB) == 1


def test_a_catalog_too_large_for_one_user_is_a_config_error():
    with pytest.raises(ConfigError, match=r"memory_budget_gb = .*--memory-budget-gb"):
        users_per_block(50_000, 799_999 / GIB)


def test_ease_is_skipped_with_its_reason_over_the_budget(split_data):
    split = split_data([*ROWS, ("c", "i3", 9, "test", True)], CATALOG)
    # EASE on 5 items needs 3 * 8 * 5^2 = 600 bytes; 500 bytes still score a user (5 * 16).
    assert ease_bytes(5) == 600
    tiny = EvaluationConfig(memory_budget_gb=500 / GIB)
    report = evaluate_split(split, "test", [], ks=(1, 10), evaluation=tiny)
    assert list(report.results) == ["random", "popularity", "svd"]
    assert "5 x 5 item matrices need" in report.skipped["ease"]
    assert report.tuning["skipped"] == report.skipped and "ease_l2" not in report.tuning
    assert f"Skipped ease: {report.skipped['ease']}." in markdown_report(report, ks=(1, 10))
    # The JSON file keeps its {"<model>": {metric: value}} shape.
    assert all(isinstance(v, dict) for v in report.to_json().values())
    with pytest.raises(ConfigError, match="EASE cannot run"):
        EaseBaseline(memory_budget_gb=500 / GIB).rank(build_eval_set(split, "test"), 3)
    # Within 600 bytes it runs, and nothing is skipped.
    enough = evaluate_split(
        split, "test", [], ks=(1, 10), evaluation=EvaluationConfig(memory_budget_gb=600 / GIB)
    )
    assert list(enough.results) == ["random", "popularity", "ease", "svd"]
    assert enough.skipped == {} and "Skipped" not in markdown_report(enough, ks=(1, 10))


class _Exhausting:
    name = "exhausting"

    def rank(self, eval_set, k):
        raise MemoryError("Unable to allocate 37.2 GiB for an array with shape (199982, 50000)")


def test_memory_errors_become_one_line_errors(split_data):
    with pytest.raises(EvaluationMemoryError) as caught:
        evaluate_split(split_data(ROWS, CATALOG), "test", [_Exhausting()], with_baselines=False)
    assert isinstance(caught.value, TwoTowerError)
    assert isinstance(caught.value.__cause__, MemoryError)
    message = str(caught.value)
    assert "evaluation.memory_budget_gb = 4" in message and "--memory-budget-gb" in message
    assert "--eval-users" in message


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"eval_users": 0}, r"evaluation.eval_users must be a whole number >= 1.*--eval-users all"),
        ({"validation_users": 2.5}, "evaluation.validation_users must be a whole number"),
        ({"memory_budget_gb": 0}, "evaluation.memory_budget_gb must be a number of GiB > 0"),
        ({"memory_budget_gb": "4"}, "--memory-budget-gb"),
        ({"seed": -1}, "evaluation.seed must be a whole number >= 0"),
    ],
)
def test_evaluation_config_rejects_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        EvaluationConfig(**values)


def test_run_config_reads_an_evaluation_section_and_old_files_without_one():
    config = RunConfig.from_dict({"evaluation": {"eval_users": 5000, "memory_budget_gb": 2}})
    assert config.evaluation == EvaluationConfig(eval_users=5000, memory_budget_gb=2)
    # config.json of runs written before the section existed.
    assert RunConfig.from_dict({"train": {"epochs": 3}}).evaluation == EvaluationConfig()
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown EvaluationConfig field"):
        RunConfig.from_dict({"evaluation": {"users": 5}})


# ---- bounded memory at production scale -------------------------------------------------------

# 200,000 known users x 50,000 items with 2.5M known interactions (a dense float32 X: 37 GiB);
# 60,000 of the users are ranked (their dense scores: 11 GiB), by popularity and PureSVD.
_SCALE_SCRIPT = textwrap.dedent(
    """
    import json, time
    import numpy as np, pandas as pd
    from tfrs_model.evaluation.baselines import PopularityBaseline, SvdBaseline
    from tfrs_model.evaluation.evaluate import evaluate_rankers
    from tfrs_model.evaluation.protocol import EvalSet, catalog_row_matrix

    def peak_rss_bytes():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    USERS, ITEMS, KNOWN, RANKED = 200_000, 50_000, 2_500_000, 60_000
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    # Skewed item popularity (cubed uniforms favour low item ids), users uniform.
    known = pd.DataFrame({
        "user_id": rng.integers(0, USERS, KNOWN),
        "item_id": (ITEMS * rng.random(KNOWN) ** 3).astype(np.int64),
        "positive": True,
    })
    users = np.sort(rng.choice(USERS, size=RANKED, replace=False))
    catalog = pd.Index(np.arange(ITEMS))
    test = pd.DataFrame({"user_id": users, "item_id": (ITEMS * rng.random(RANKED) ** 3).astype(int)})
    eval_set = EvalSet(
        "test", users, catalog.to_numpy(), catalog_row_matrix(test, users, catalog),
        catalog_row_matrix(known, users, catalog), known, total_users=USERS,
    )
    rankers = [PopularityBaseline(memory_budget_gb=1.0), SvdBaseline(factors=16, memory_budget_gb=1.0)]
    results = evaluate_rankers(eval_set, rankers, (10,))
    print(json.dumps({
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the
        # pytest process's own peak when that is higher.
        "peak_rss_bytes": peak_rss_bytes(),
        "seconds": time.perf_counter() - started,
        "recall@10": {name: values["recall@10"] for name, values in results.items()},
    }))
    """
)


@pytest.mark.slow
def test_popularity_and_svd_at_production_scale_stay_within_memory():
    assert 60_000 * 50_000 * 4 > 10 * 10**9  # the ranked users' dense scores could not exist
    done = subprocess.run(
        [sys.executable, "-c", _SCALE_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(measured)
    assert measured["peak_rss_bytes"] < 3 * 10**9
    # Sanity: the skewed test items are found by popularity far above chance (10 / 50,000).
    assert measured["recall@10"]["popularity"] > 0.01
    assert 0.0 <= measured["recall@10"]["svd"] <= 1.0


def test_shared_scores_rank_like_top_k_on_the_broadcast_scores(split_data):
    from tfrs_model.evaluation.baselines import rank_shared_scores

    # Integer scores with many ties, random exclusions: the reference sorts each row fully by
    # (score descending, index ascending) and skips the excluded items.
    eval_set = build_eval_set(split_data(_random_rows(30, 12, 5, 4)), "test")
    scores = np.random.default_rng(5).integers(0, 4, eval_set.num_items).astype(np.float32)
    order = np.lexsort((np.arange(len(scores)), -scores))
    for k in (1, 3, 12, 20):
        expected = []
        for excluded in csr_rows(eval_set.excluded):
            allowed = [i for i in order if i not in set(excluded)][:k]
            expected.append(allowed + [-1] * (k - len(allowed)))
        np.testing.assert_array_equal(rank_shared_scores(scores, eval_set, k), expected)
    # With k covering the catalog, top_k_excluding sorts fully: the same lists.
    broadcast = np.tile(scores, (eval_set.num_users, 1))
    np.testing.assert_array_equal(
        rank_shared_scores(scores, eval_set, 20), top_k_excluding(broadcast, eval_set.excluded, 20)
    )
