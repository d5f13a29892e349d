"""The evaluation protocol: who is evaluated, on what, and which items are excluded.

For a target split, the evaluated users are those with at least one positive in it; the
catalog is every item of the items table; each user's known items (interactions before the split,
any rating) are excluded from the ranking and are the only past any scorer may use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfrs_model.data.splits import SplitData
from tfrs_model.errors import DataError


@dataclass(frozen=True)
class EvalSet:
    """Ground truth and exclusions for one split.

    Attributes:
      split: the target split name.
      user_ids: `[U]` evaluated users.
      catalog: `[I]` item ids; rankings are indices into it.
      relevant: per user, `[n_u]` catalog indices of the split's positives.
      excluded: per user, `[e_u]` catalog indices of items known before the split.
      known: interactions before the split (history source for every scorer).
    """

    split: str
    user_ids: np.ndarray
    catalog: np.ndarray
    relevant: list[np.ndarray]
    excluded: list[np.ndarray]
    known: pd.DataFrame

    @property
    def num_items(self) -> int:
        return len(self.catalog)


def catalog_rows_by_user(
    frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index
) -> list[np.ndarray]:
    """Per user of `users`, the sorted distinct catalog rows (int64) of its items in `frame`;
    empty for users absent from `frame`."""
    codes = catalog.get_indexer(frame["item_id"])
    grouped = (
        pd.Series(codes).groupby(frame["user_id"].to_numpy()).agg(lambda s: np.unique(s.to_numpy()))
    )
    empty = np.zeros(0, dtype=np.int64)
    return [grouped.get(user, empty).astype(np.int64) for user in users]


def build_eval_set(split: SplitData, target: str) -> EvalSet:
    """The `EvalSet` of split `target` (validation or test).

    Raises:
      DataError: the split has no positives.
    """
    positives = split.positives(target)
    if positives.empty:
        raise DataError(f"split {target!r} has no positive interactions to evaluate on")
    catalog = pd.Index(split.data.items["item_id"].astype(str))
    users = np.array(sorted(positives["user_id"].unique()), dtype=object)
    known = split.known_before(target)
    return EvalSet(
        split=target,
        user_ids=users,
        catalog=catalog.to_numpy(dtype=object),
        relevant=catalog_rows_by_user(positives, users, catalog),
        excluded=catalog_rows_by_user(known[known["user_id"].isin(users)], users, catalog),
        known=known,
    )


def interaction_matrix(
    eval_set: EvalSet, users: np.ndarray | None = None, positives_only: bool = False
):
    """Binary `[users, items]` scipy-free dense float32 matrix of known interactions.

    Args:
      users: row order; defaults to every user in `known`.
      positives_only: keep only known positive interactions.
    """
    known = eval_set.known
    if positives_only:
        known = known[known["positive"]]
    if users is None:
        users = np.array(sorted(known["user_id"].unique()), dtype=object)
    rows = pd.Index(users).get_indexer(known["user_id"])
    cols = pd.Index(eval_set.catalog).get_indexer(known["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    matrix = np.zeros((len(users), eval_set.num_items), dtype=np.float32)
    matrix[rows[keep], cols[keep]] = 1.0
    return matrix, users


def top_k_excluding(scores: np.ndarray, excluded: list[np.ndarray], k: int) -> np.ndarray:
    """Indices of the `k` best scores per row, excluded items removed, best first.

    Args:
      scores: `[U, I]` float scores.
      excluded: per row, indices to skip.

    Returns:
      `[U, k]` int64 indices; ties keep the lower index first. Slots beyond a row's
      non-excluded items hold -1 (the metrics' empty slot), so the width is always `k`.
    """
    scores = np.array(scores, copy=True)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    for row, items in enumerate(excluded):
        scores[row, items] = -np.inf
    width = min(k, scores.shape[1])
    if width < scores.shape[1]:
        # Partition first: sorting whole rows costs O(I log I) per user on large catalogs.
        candidates = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # Best score first, ties by lower index, matching tf.math.top_k.
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    ranked = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    # Excluded items (score -inf) must never fill a list when fewer than k others remain, and a
    # catalog smaller than k must still give k columns (`ranking_metrics` needs K=100): both
    # become empty slots (-1).
    ranked = np.where(np.take_along_axis(scores, ranked, axis=1) == -np.inf, -1, ranked)
    padding = np.full((len(ranked), k - ranked.shape[1]), -1, dtype=ranked.dtype)
    return np.concatenate([ranked, padding], axis=1)
