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


def _indices_by_user(frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index) -> list[np.ndarray]:
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
        relevant=_indices_by_user(positives, users, catalog),
        excluded=_indices_by_user(known[known["user_id"].isin(users)], users, catalog),
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
    scores = np.array(scores, dtype=np.float64, copy=True)
    mask = np.zeros(scores.shape, dtype=bool)
    for row, items in enumerate(excluded):
        mask[row, items] = True
    scores[mask] = -np.inf
    # A stable sort on negated scores breaks ties by index, matching tf.math.top_k.
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    # Excluded items sort last but used to fill the list when fewer than k others remained, and
    # a catalog smaller than k gave fewer than k columns, which `ranking_metrics` rejects for
    # K=100. Mark both as empty slots instead.
    ranked = np.where(np.take_along_axis(mask, ranked, axis=1), -1, ranked)
    padding = np.full((len(ranked), k - ranked.shape[1]), -1, dtype=ranked.dtype)
    return np.concatenate([ranked, padding], axis=1)
