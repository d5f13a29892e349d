"""Top-K ranking metrics over ranked lists (numpy; relevant items as a sparse matrix).

For a user with relevant set R and ranked list r_1..r_K (hits h_i = [r_i in R]):
- Recall@K    = sum(h) / min(K, |R|)         (so a perfect list scores 1 even when |R| > K)
- Precision@K = sum(h) / K
- HitRate@K   = [sum(h) > 0]
- NDCG@K      = sum(h_i / log2(i + 1)) / sum_{i <= min(K, |R|)} 1 / log2(i + 1)
- MAP@K       = sum(h_i * Precision@i) / min(K, |R|)
Each is averaged over users with at least one relevant item. Coverage@K is the share of the
catalog that appears in at least one user's top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from tfrs_model.evaluation.protocol import ItemRows, rows_to_csr

DEFAULT_KS = (10, 50, 100)
METRIC_NAMES = ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")
# Users per chunk of the metric computation: a few `[chunk, K]` float64 arrays at a time.
METRIC_CHUNK_USERS = 1 << 16


def hit_matrix(ranked: np.ndarray, relevant: ItemRows) -> np.ndarray:
    """`[U, K]` bool: whether `ranked[u, i]` is relevant to user u.

    Args:
      ranked: `[U, K]` int item indices; -1 (an empty slot) is never a hit.
      relevant: `[U, I]` CSR of each user's relevant items, or a list of per-user index arrays.
    """
    relevant = rows_to_csr(relevant)
    if not relevant.has_sorted_indices:
        relevant = relevant.sorted_indices()
    width = max(relevant.shape[1], int(ranked.max(initial=-1)) + 1, 1)
    # Each (user, item) pair as one sorted int64 key: user * width + item.
    owners = np.repeat(np.arange(relevant.shape[0], dtype=np.int64), np.diff(relevant.indptr))
    keys = owners * width + relevant.indices
    queries = np.arange(len(ranked), dtype=np.int64)[:, None] * width + ranked
    found = np.searchsorted(keys, queries)
    found = np.minimum(found, max(0, len(keys) - 1))
    hits = keys[found] == queries if len(keys) else np.zeros(ranked.shape, dtype=bool)
    return hits & (ranked >= 0)


def _per_user_metrics(
    ranked: np.ndarray, relevant: sp.csr_matrix, ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """`{"recall@10": [U] per-user values, ...}` (every metric but coverage)."""
    hits = hit_matrix(ranked, relevant).astype(np.float64)
    n_relevant = np.diff(relevant.indptr).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    values: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]
        found = top.sum(axis=1)
        ideal_count = np.minimum(k, n_relevant)
        ideal_dcg = np.cumsum(discounts[:k])[ideal_count.astype(int) - 1]
        precision_at_i = np.cumsum(top, axis=1) / np.arange(1, k + 1)
        values[f"recall@{k}"] = found / ideal_count
        values[f"precision@{k}"] = found / k
        values[f"ndcg@{k}"] = (top * discounts[:k]).sum(axis=1) / ideal_dcg
        values[f"map@{k}"] = (precision_at_i * top).sum(axis=1) / ideal_count
        values[f"hit_rate@{k}"] = (found > 0).astype(np.float64)
    return values


def ranking_metrics(
    ranked: np.ndarray,
    relevant: ItemRows,
    num_items: int,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Averages of the module's metrics at each K.

    Args:
      ranked: `[U, K_max]` int item indices, best first; -1 marks an empty slot.
      relevant: `[U, I]` CSR of each user's relevant items (`EvalSet.relevant`; no empty row),
        or a list of per-user index arrays.
      num_items: catalog size, for coverage.
      ks: cut-offs, each <= K_max.

    Returns:
      `{"recall@10": ..., "ndcg@10": ..., ...}`.

    Raises:
      ValueError: `ranked` and `relevant` disagree on the users, or a K exceeds `K_max`.
    """
    users = relevant.shape[0] if sp.issparse(relevant) else len(relevant)
    if len(ranked) != users:
        raise ValueError(f"{len(ranked)} ranked lists for {users} users")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"K={max(ks)} exceeds the {ranked.shape[1]} ranked items per user")
    relevant = rows_to_csr(relevant, num_items)
    sums: dict[str, float] = {}
    for start in range(0, users, METRIC_CHUNK_USERS):
        rows = slice(start, start + METRIC_CHUNK_USERS)
        for name, values in _per_user_metrics(ranked[rows], relevant[rows], ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    results: dict[str, float] = {}
    for k in ks:
        for metric in METRIC_NAMES[:-1]:
            results[f"{metric}@{k}"] = sums.get(f"{metric}@{k}", 0.0) / users if users else 0.0
        shown = ranked[:, :k]
        distinct = np.count_nonzero(np.bincount(shown[shown >= 0].ravel(), minlength=1))
        results[f"coverage@{k}"] = float(distinct / num_items)
    return results
