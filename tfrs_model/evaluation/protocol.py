"""The evaluation protocol: who is evaluated, on what, and which items are excluded.

For a target split, the evaluated users are those with at least one positive in it (optionally
a seeded sample of them); the catalog is every item of the items table; each user's known items
(interactions before the split, any rating) are excluded from the ranking and are the only past
any scorer may use. Per-user item sets are sparse `[users, catalog]` CSR matrices, so their
memory grows with the interactions, never with users x items.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfrs_model.data.splits import SplitData
from tfrs_model.errors import DataError

# Per user, its item rows: a CSR matrix [users, items], or (older callers) a list of index arrays.
ItemRows = sp.csr_matrix | Sequence[np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """Ground truth and exclusions for one split.

    Attributes:
      split: the target split name.
      user_ids: `[U]` evaluated users.
      catalog: `[I]` item ids; rankings are indices into it.
      relevant: `[U, I]` bool CSR: the split's positives of each user.
      excluded: `[U, I]` bool CSR: the items each user knew before the split.
      known: interactions before the split (history source for every scorer).
      total_users: users with a positive in the split before sampling (`>= U`); `U` when every
        one of them is evaluated.
    """

    split: str
    user_ids: np.ndarray
    catalog: np.ndarray
    relevant: sp.csr_matrix
    excluded: sp.csr_matrix
    known: pd.DataFrame
    total_users: int | None = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def population(self) -> int:
        """How many users could have been evaluated (`total_users`, else `num_users`)."""
        return self.num_users if self.total_users is None else self.total_users


def rows_to_csr(rows: ItemRows, num_columns: int = 0) -> sp.csr_matrix:
    """`rows` as a CSR matrix `[len(rows), max(num_columns, largest index + 1)]` of bool.

    A CSR matrix is returned as is; a list of per-row index arrays is packed (duplicates and
    negative indices dropped).
    """
    if sp.issparse(rows):
        return sp.csr_matrix(rows)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate([np.asarray(r, dtype=np.int64).ravel() for r in rows] or [np.zeros(0)])
    flat = flat.astype(np.int64)
    row_of = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    keep = flat >= 0
    width = max(num_columns, int(flat.max(initial=-1)) + 1)
    return _bool_csr(row_of[keep], flat[keep], (len(rows), width))


def _bool_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A canonical bool CSR matrix (sorted, distinct column indices per row) with True at every
    (rows[n], cols[n]); no dense intermediate."""
    keys = rows.astype(np.int64) * max(1, shape[1]) + cols.astype(np.int64)
    keys.sort()  # then drop repeats: as np.unique, without its slower hashing of int64 keys
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    row_of = keys // max(1, shape[1])
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=shape[0]), out=indptr[1:])
    indices = (keys - row_of * max(1, shape[1])).astype(np.int32 if shape[1] < 2**31 else np.int64)
    data = np.ones(len(keys), dtype=bool)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _positions(values: pd.Series, index: pd.Index) -> np.ndarray:
    """`[n]` int32 (int64 past 2**31 entries) positions of `values` in `index`, -1 where absent.

    Categorical values (the ids `build_dataset` makes) are looked up once per category, not once
    per row.
    """
    dtype = np.int32 if len(index) < 2**31 else np.int64
    if isinstance(values.dtype, pd.CategoricalDtype):
        by_category = index.get_indexer(values.cat.categories).astype(dtype)
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, by_category[codes], -1).astype(dtype, copy=False)
    return index.get_indexer(values).astype(dtype, copy=False)


def catalog_codes(
    frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """Each row of `frame` as (its user's position in `users`, its item's row in `catalog`).

    Returns:
      `[n]` int32 user positions and `[n]` int32 catalog rows, in the order of `frame`; -1 for a
      user not in `users` or an item not in `catalog`.
    """
    return _positions(frame["user_id"], pd.Index(users)), _positions(frame["item_id"], catalog)


def codes_to_csr(
    user_rows: np.ndarray, item_rows: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """`shape` bool CSR, True at every (user_rows[n], item_rows[n]); pairs with a -1 are left out.

    The matrix is canonical (sorted, distinct column indices per row); its index arrays are
    int32 while they fit.
    """
    keep = (user_rows >= 0) & (item_rows >= 0)
    return _bool_csr(user_rows[keep], item_rows[keep], shape)


def catalog_row_matrix(frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index) -> sp.csr_matrix:
    """`[len(users), len(catalog)]` bool CSR: True where `frame` has (user, item).

    Rows of `frame` whose user is not in `users` or whose item is not in `catalog` are ignored;
    users absent from `frame` get empty rows.
    """
    rows, cols = catalog_codes(frame, users, catalog)
    return codes_to_csr(rows, cols, (len(users), len(catalog)))


def csr_rows(matrix: sp.csr_matrix) -> list[np.ndarray]:
    """Per row of a canonical CSR matrix, its sorted column indices (int64)."""
    matrix = sp.csr_matrix(matrix)
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    return np.split(matrix.indices.astype(np.int64), matrix.indptr[1:-1])


def catalog_rows_by_user(
    frame: pd.DataFrame, users: np.ndarray, catalog: pd.Index
) -> list[np.ndarray]:
    """Per user of `users`, the sorted distinct catalog rows (int64) of its items in `frame`;
    empty for users absent from `frame`. Items outside `catalog` are left out.

    The list form of `catalog_row_matrix`, for callers that need one array per user.
    """
    return csr_rows(catalog_row_matrix(frame, users, catalog))


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """A seeded sample of `max_users` of `users`, in their original order; all when None or when
    there are not more than `max_users`."""
    if max_users is None or len(users) <= max_users:
        return users
    chosen = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
    return users[np.sort(chosen)]


def build_eval_set(
    split: SplitData, target: str, *, max_users: int | None = None, seed: int = 0
) -> EvalSet:
    """The `EvalSet` of split `target` (validation or test).

    Args:
      max_users: evaluate a seeded sample of this many of the users with a positive in
        `target` (`evaluation.eval_users`); None evaluates every one.
      seed: the sample's seed.

    Raises:
      DataError: the split has no positives.
    """
    positives = split.positives(target)
    if positives.empty:
        raise DataError(f"split {target!r} has no positive interactions to evaluate on")
    catalog = pd.Index(split.data.items["item_id"].astype(str))
    everyone = np.array(sorted(positives["user_id"].unique()), dtype=object)
    users = sample_users(everyone, max_users, seed)
    known = split.known_before(target)
    return EvalSet(
        split=target,
        user_ids=users,
        catalog=catalog.to_numpy(dtype=object),
        relevant=catalog_row_matrix(positives, users, catalog),
        excluded=catalog_row_matrix(known, users, catalog),
        known=known,
        total_users=len(everyone),
    )


def items_subset(eval_set: EvalSet, columns: np.ndarray, keep_exclusions: bool = True) -> EvalSet:
    """`eval_set` ranked over the catalog `columns` only, for the users with a positive there.

    Args:
      eval_set: the full evaluation set.
      columns: `[C]` int catalog rows, in the order of the new catalog (selection renumbers:
        full-catalog row -> position among `columns`).
      keep_exclusions: keep the users' known items among `columns` excluded; False excludes
        nothing (items nobody has interacted with before, e.g. cold items).
    """
    relevant = eval_set.relevant[:, columns].tocsr()
    keep = np.diff(relevant.indptr) > 0
    if keep_exclusions:
        excluded = eval_set.excluded[:, columns].tocsr()[keep]
    else:
        excluded = sp.csr_matrix((int(keep.sum()), len(columns)), dtype=bool)
    return dataclasses.replace(
        eval_set,
        user_ids=eval_set.user_ids[keep],
        catalog=eval_set.catalog[columns],
        relevant=relevant[keep],
        excluded=excluded,
        total_users=None,
    )


def interaction_matrix(
    eval_set: EvalSet, users: np.ndarray | None = None, positives_only: bool = False
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary `[users, I]` float32 CSR matrix of known interactions, and its row users.

    Args:
      users: row order; defaults to every user in `known`. Users without known interactions
        get empty rows.
      positives_only: keep only known positive interactions.
    """
    known = eval_set.known
    if positives_only:
        known = known[known["positive"]]
    catalog = pd.Index(eval_set.catalog)
    if users is not None:
        return catalog_row_matrix(known, users, catalog).astype(np.float32), users
    # Every known user, sorted: factorizing gives each row's user position directly.
    rows, uniques = pd.factorize(known["user_id"], sort=True)
    cols = catalog.get_indexer(known["item_id"])
    keep = cols >= 0
    matrix = _bool_csr(rows[keep], cols[keep], (len(uniques), len(catalog)))
    return matrix.astype(np.float32), np.asarray(uniques, dtype=object)


def _exclude(scores: np.ndarray, excluded: ItemRows) -> None:
    """Sets `scores[row, item]` to -inf for every excluded (row, item), in place."""
    excluded = rows_to_csr(excluded, scores.shape[1])
    if excluded.shape[0] != scores.shape[0]:
        raise ValueError(f"{excluded.shape[0]} exclusion rows for {scores.shape[0]} score rows")
    rows = np.repeat(np.arange(excluded.shape[0]), np.diff(excluded.indptr))
    scores[rows, excluded.indices] = -np.inf


def top_k_excluding(
    scores: np.ndarray, excluded: ItemRows, k: int, *, overwrite: bool = False
) -> np.ndarray:
    """Indices of the `k` best scores per row, excluded items removed, best first.

    Args:
      scores: `[U, I]` float scores.
      excluded: `[U, I]` CSR of the items to skip per row (a row slice of `EvalSet.excluded`),
        or a list of per-row index arrays.
      overwrite: `scores` may be overwritten (saves a copy of `[U, I]`).

    Returns:
      `[U, k]` int64 indices; ties keep the lower index first. Slots beyond a row's
      non-excluded items hold -1 (the metrics' empty slot), so the width is always `k`.
    """
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    elif not (overwrite and scores.flags.writeable):
        scores = scores.copy()
    _exclude(scores, excluded)
    # Costs: the negated scores, lowest first; excluded items cost +inf.
    costs = np.negative(scores, out=scores)
    width = min(k, costs.shape[1])
    if width < costs.shape[1]:
        # Partition first: sorting whole rows costs O(I log I) per user on large catalogs.
        candidates = np.argpartition(costs, width - 1, axis=1)[:, :width]
    else:
        candidates = np.broadcast_to(np.arange(costs.shape[1]), costs.shape)
    candidate_costs = np.take_along_axis(costs, candidates, axis=1)
    # Best score first, ties by lower index, matching tf.math.top_k.
    order = np.lexsort((candidates, candidate_costs), axis=1)
    ranked = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    # Excluded items (score -inf) must never fill a list when fewer than k others remain, and a
    # catalog smaller than k must still give k columns (`ranking_metrics` needs K=100): both
    # become empty slots (-1).
    ranked = np.where(np.take_along_axis(candidate_costs, order, axis=1) == np.inf, -1, ranked)
    padding = np.full((len(ranked), k - ranked.shape[1]), -1, dtype=ranked.dtype)
    return np.concatenate([ranked, padding], axis=1)
