"""Top-K ranking metrics over ranked lists (pure numpy).

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

DEFAULT_KS = (10, 50, 100)
METRIC_NAMES = ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")


def hit_matrix(ranked: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """`[users, K]` bool: whether `ranked[u, i]` is in `relevant[u]`."""
    hits = np.zeros(ranked.shape, dtype=bool)
    for user, items in enumerate(relevant):
        hits[user] = np.isin(ranked[user], items)
    return hits


def ranking_metrics(
    ranked: np.ndarray,
    relevant: Sequence[np.ndarray],
    num_items: int,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Averages of the module's metrics at each K.

    Args:
      ranked: `[users, K_max]` int item indices, best first; -1 marks an empty slot.
      relevant: per user, the int indices of its relevant items (non-empty).
      num_items: catalog size, for coverage.
      ks: cut-offs, each <= K_max.

    Returns:
      `{"recall@10": ..., "ndcg@10": ..., ...}`.
    """
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists for {len(relevant)} users")
    if max(ks) > ranked.shape[1]:
        raise ValueError(f"K={max(ks)} exceeds the {ranked.shape[1]} ranked items per user")
    hits = hit_matrix(ranked, relevant).astype(np.float64)
    n_relevant = np.array([len(items) for items in relevant], dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    results: dict[str, float] = {}
    for k in ks:
        top = hits[:, :k]
        found = top.sum(axis=1)
        ideal_count = np.minimum(k, n_relevant)
        ideal_dcg = np.cumsum(discounts[:k])[ideal_count.astype(int) - 1]
        precision_at_i = np.cumsum(top, axis=1) / np.arange(1, k + 1)
        shown = ranked[:, :k]
        results[f"recall@{k}"] = float(np.mean(found / ideal_count))
        results[f"precision@{k}"] = float(np.mean(found / k))
        results[f"ndcg@{k}"] = float(np.mean((top * discounts[:k]).sum(axis=1) / ideal_dcg))
        results[f"map@{k}"] = float(np.mean((precision_at_i * top).sum(axis=1) / ideal_count))
        results[f"hit_rate@{k}"] = float(np.mean(found > 0))
        results[f"coverage@{k}"] = float(len(np.unique(shown[shown >= 0])) / num_items)
    return results
