"""Non-neural baselines ranked in the same harness as the two-tower model.

- random: uniform scores (seeded).
- popularity: number of known interactions per item.
- ease: EASE (Steck, WWW 2019), a closed-form item-item linear model:
  B = -P / diag(P) with P = (X^T X + lambda I)^-1 and diag(B) = 0; scores = X B.
- svd: PureSVD (Cremonesi et al., RecSys 2010): X ~ U S V^T with `factors` singular vectors;
  scores = X V V^T.
X is the binary user-item matrix of interactions known before the evaluated split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tfrs_model.evaluation.protocol import EvalSet, interaction_matrix, top_k_excluding

ScoreFn = Callable[[slice], np.ndarray]  # rows of eval users -> [rows, items] scores


def rank_in_batches(
    score_rows: ScoreFn, eval_set: EvalSet, k: int, batch: int = 2048
) -> np.ndarray:
    """`[U, k]` rankings, scoring `batch` users at a time to bound memory."""
    parts = []
    for start in range(0, len(eval_set.user_ids), batch):
        rows = slice(start, start + batch)
        parts.append(top_k_excluding(score_rows(rows), eval_set.excluded[rows], k))
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class RandomBaseline:
    seed: int = 0
    name: str = "random"

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rank_in_batches(
            lambda rows: rng.random((len(eval_set.user_ids[rows]), eval_set.num_items)), eval_set, k
        )


@dataclass(frozen=True)
class PopularityBaseline:
    name: str = "popularity"

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        matrix, _ = interaction_matrix(eval_set)
        counts = matrix.sum(axis=0)
        return rank_in_batches(
            lambda rows: np.broadcast_to(counts, (len(eval_set.user_ids[rows]), len(counts))),
            eval_set,
            k,
        )


def _user_rows(eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    """The full known matrix (all users, for fitting) and the eval users' rows in it."""
    matrix, users = interaction_matrix(eval_set)
    position = {user: i for i, user in enumerate(users)}
    rows = np.array([position.get(u, -1) for u in eval_set.user_ids])
    return matrix, rows


def _matrix_rows(matrix: np.ndarray, rows: np.ndarray, selection: slice) -> np.ndarray:
    chosen = rows[selection]
    out = np.zeros((len(chosen), matrix.shape[1]), dtype=matrix.dtype)
    out[chosen >= 0] = matrix[chosen[chosen >= 0]]
    return out


@dataclass(frozen=True)
class EaseBaseline:
    l2: float = 500.0
    name: str = "ease"

    def item_weights(self, matrix: np.ndarray) -> np.ndarray:
        gram = (matrix.T @ matrix).astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        return weights.astype(np.float32)

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        matrix, rows = _user_rows(eval_set)
        weights = self.item_weights(matrix)
        return rank_in_batches(lambda s: _matrix_rows(matrix, rows, s) @ weights, eval_set, k)


@dataclass(frozen=True)
class SvdBaseline:
    factors: int = 64
    name: str = "svd"

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        matrix, rows = _user_rows(eval_set)
        factors = min(self.factors, min(matrix.shape) - 1)
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        projection = vt[:factors].T @ vt[:factors]
        return rank_in_batches(lambda s: _matrix_rows(matrix, rows, s) @ projection, eval_set, k)


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
