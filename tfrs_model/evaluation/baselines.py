"""Non-neural baselines ranked in the same harness as the two-tower model.

- random: uniform scores (seeded).
- popularity: number of known interactions per item.
- ease: EASE (Steck, WWW 2019), a closed-form item-item linear model:
  B = -P / diag(P) with P = (X^T X + lambda I)^-1 and diag(B) = 0; scores = X B.
  Its item x item matrices take `3 * 8 * I^2` bytes; over the memory budget it is skipped.
- svd: PureSVD (Cremonesi et al., RecSys 2010): X ~ U S V^T with `factors` singular vectors
  (a sparse truncated SVD); scores = X V V^T, computed as (X V) V^T.
X is the binary `[users, I]` CSR matrix of interactions known before the evaluated split; the
evaluated users are scored a block of rows at a time, so no `[users, I]` dense matrix exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh

from tfrs_model.config import EvaluationConfig
from tfrs_model.errors import ConfigError
from tfrs_model.evaluation.blocks import user_blocks
from tfrs_model.evaluation.memory import ease_skip_reason, users_per_block
from tfrs_model.evaluation.protocol import EvalSet, interaction_matrix, top_k_excluding

# Rows of eval users -> `[rows, I]` scores, a fresh array the ranking may overwrite.
ScoreFn = Callable[[slice], np.ndarray]
DEFAULT_MEMORY_BUDGET_GB = EvaluationConfig().memory_budget_gb


def rank_in_batches(
    score_rows: ScoreFn,
    eval_set: EvalSet,
    k: int,
    batch: int | None = None,
    *,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    what: str = "users",
) -> np.ndarray:
    """`[U, k]` rankings, scoring a block of users at a time to bound memory.

    Args:
      batch: users per block; None sizes blocks from `memory_budget_gb` (`users_per_block`).
      what: the ranker's name, for the progress lines.

    Raises:
      ConfigError: one user's scores alone exceed `memory_budget_gb`.
    """
    batch = batch or users_per_block(eval_set.num_items, memory_budget_gb)
    parts = [np.zeros((0, k), dtype=np.int64)]
    for rows in user_blocks(eval_set.num_users, batch, what):
        scores = score_rows(rows)
        parts.append(top_k_excluding(scores, eval_set.excluded[rows], k, overwrite=True))
    return np.concatenate(parts, axis=0)


def eval_user_matrix(eval_set: EvalSet) -> sp.csr_matrix:
    """`[U, I]` float32 CSR: the evaluated users' known interactions, in `user_ids` order."""
    matrix, _ = interaction_matrix(eval_set, users=eval_set.user_ids)
    return matrix


@dataclass(frozen=True)
class RandomBaseline:
    seed: int = 0
    name: str = "random"
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rank_in_batches(
            lambda rows: rng.random((len(eval_set.user_ids[rows]), eval_set.num_items)),
            eval_set,
            k,
            what=self.name,
            memory_budget_gb=self.memory_budget_gb,
        )


def item_counts(matrix: sp.csr_matrix) -> np.ndarray:
    """`[I]` float32: how many rows of a binary `[users, I]` CSR matrix hold each item."""
    return np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)


def _first_allowed(order_rank: np.ndarray, excluded: sp.csr_matrix, k: int) -> np.ndarray:
    """`[B, k]` positions in a shared order of each row's first `k` items not in `excluded`
    (`[B, I]`), -1 past the end; `order_rank[item]` is the item's position in the order."""
    per_row = np.diff(excluded.indptr)
    width = int(min(len(order_rank), k + per_row.max(initial=0)))
    owner = np.repeat(np.arange(excluded.shape[0]), per_row)
    position = order_rank[excluded.indices]
    masked = np.zeros((excluded.shape[0], width), dtype=bool)
    masked[owner[position < width], position[position < width]] = True
    # A stable sort puts the allowed positions first, in order.
    first = np.argsort(masked, axis=1, kind="stable")[:, :k]
    first = np.where(np.take_along_axis(masked, first, axis=1), -1, first)
    padding = np.full((len(first), k - first.shape[1]), -1, dtype=first.dtype)
    return np.concatenate([first, padding], axis=1)


def rank_shared_scores(
    scores: np.ndarray,
    eval_set: EvalSet,
    k: int,
    *,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    what: str = "users",
) -> np.ndarray:
    """`[U, k]` rankings when every user has the same `[I]` scores: per user, the best `k`
    items (ties by lower index) it has not excluded, as `top_k_excluding` would rank the
    broadcast `[U, I]` scores, from one sort of the catalog and without such a matrix.

    Raises:
      ConfigError: one user's share of the work exceeds `memory_budget_gb`.
    """
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    order_rank = np.empty(len(order), dtype=np.int64)
    order_rank[order] = np.arange(len(order))
    widest = int(np.diff(eval_set.excluded.indptr).max(initial=0))
    batch = users_per_block(min(eval_set.num_items, k + widest), memory_budget_gb)
    parts = [np.zeros((0, k), dtype=np.int64)]
    for rows in user_blocks(eval_set.num_users, batch, what):
        first = _first_allowed(order_rank, eval_set.excluded[rows], k)
        parts.append(np.where(first >= 0, order[np.maximum(first, 0)], -1).astype(np.int64))
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class PopularityBaseline:
    name: str = "popularity"
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        matrix, _ = interaction_matrix(eval_set)
        counts = item_counts(matrix)
        return rank_shared_scores(
            counts, eval_set, k, memory_budget_gb=self.memory_budget_gb, what=self.name
        )


@dataclass(frozen=True)
class EaseBaseline:
    l2: float = 500.0
    name: str = "ease"
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB

    def skip_reason(self, num_items: int) -> str | None:
        """Why EASE does not fit `memory_budget_gb` on `num_items` items; None when it does."""
        return ease_skip_reason(num_items, self.memory_budget_gb)

    def item_weights(self, matrix: sp.csr_matrix | np.ndarray) -> np.ndarray:
        """`[I, I]` float32 weights B from the binary `[users, I]` matrix X (sparse or dense)."""
        gram = matrix.T @ matrix
        gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
        gram = gram.astype(np.float64, copy=False)
        gram[np.diag_indices_from(gram)] += self.l2
        weights = np.linalg.inv(gram)
        del gram
        weights /= -np.diag(weights)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        return weights.astype(np.float32)

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        """`[U, k]` rankings.

        Raises:
          ConfigError: the item x item matrices exceed `memory_budget_gb` (`skip_reason`).
        """
        reason = self.skip_reason(eval_set.num_items)
        if reason is not None:
            raise ConfigError(f"EASE cannot run: {reason}")
        matrix, _ = interaction_matrix(eval_set)
        weights = self.item_weights(matrix)
        del matrix
        rows = eval_user_matrix(eval_set)
        return rank_in_batches(
            lambda s: rows[s] @ weights,
            eval_set,
            k,
            memory_budget_gb=self.memory_budget_gb,
            what=self.name,
        )


def svd_item_factors(matrix: sp.csr_matrix, factors: int, seed: int = 0) -> np.ndarray:
    """`[I, f]` float32 right singular vectors of `matrix` `[users, I]`, by decreasing singular
    value, with `f = min(factors, min(matrix.shape) - 1)` (0 columns when that is below 1).

    A sparse truncated SVD: Lanczos (ARPACK, seeded start vector) on the Gram operator of the
    smaller side, `X^T X` (`[I, I]`) or `X X^T`, applied through X without forming it. Its
    eigenvectors are the singular vectors (V directly, or V = X^T U S^-1). Memory: about
    `(2f + 1)` vectors of that side plus the result; no dense `[users, I]` or `[users, f]`
    matrix (which `scipy.sparse.linalg.svds` builds to refine its left vectors).
    """
    users, items = matrix.shape
    factors = min(factors, min(users, items) - 1)
    if factors < 1:
        return np.zeros((items, 0), dtype=np.float32)
    x = sp.csr_matrix(matrix, dtype=np.float64)
    xt = x.T.tocsr()
    side = min(users, items)
    start = np.random.default_rng(seed).uniform(-1.0, 1.0, size=side)
    if items <= users:
        gram = LinearOperator((items, items), matvec=lambda v: xt @ (x @ v), dtype=np.float64)
        values, vectors = eigsh(gram, k=factors, v0=start)
    else:
        gram = LinearOperator((users, users), matvec=lambda u: x @ (xt @ u), dtype=np.float64)
        values, left = eigsh(gram, k=factors, v0=start)
        singular = np.sqrt(np.clip(values, 0.0, None))
        scale = np.divide(1.0, singular, out=np.zeros_like(singular), where=singular > 1e-12)
        vectors = (xt @ left) * scale
    order = np.argsort(-values, kind="stable")
    return np.ascontiguousarray(vectors[:, order], dtype=np.float32)


@dataclass(frozen=True)
class SvdBaseline:
    factors: int = 64
    name: str = "svd"
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        matrix, _ = interaction_matrix(eval_set)
        item_factors = svd_item_factors(matrix, self.factors)
        del matrix
        rows = eval_user_matrix(eval_set)
        return rank_in_batches(
            lambda s: (rows[s] @ item_factors) @ item_factors.T,
            eval_set,
            k,
            memory_budget_gb=self.memory_budget_gb,
            what=self.name,
        )


EASE_L2_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
SVD_FACTOR_GRID = (16, 32, 64, 128, 256)


def tune(
    make: Callable[[float], object],
    grid: Sequence[float],
    validation: EvalSet,
    score: Callable[[np.ndarray], float],
    k: int,
) -> tuple[float, dict[float, float]]:
    """The grid value whose baseline scores best on `validation` (and every value's score)."""
    results = {value: score(make(value).rank(validation, k)) for value in grid}
    return max(results, key=results.get), results
