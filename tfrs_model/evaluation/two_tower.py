"""Ranks the catalog with a trained two-tower model: exact dot products, known items excluded."""

from __future__ import annotations

import numpy as np

from tfrs_model.data.splits import SplitData
from tfrs_model.evaluation.baselines import DEFAULT_MEMORY_BUDGET_GB
from tfrs_model.evaluation.blocks import user_blocks
from tfrs_model.evaluation.memory import users_per_block
from tfrs_model.evaluation.protocol import EvalSet, top_k_excluding
from tfrs_model.features.examples import Arrays, candidate_inputs, snapshot_queries, to_tensor_dict
from tfrs_model.features.spec import FeatureSet
from tfrs_model.features.tables import FeatureTables


def embed(tower, arrays: Arrays, batch_size: int = 4096) -> np.ndarray:
    """`[n, embedding_dim]` float32 tower outputs for in-memory inputs, computed in batches."""
    size = len(next(iter(arrays.values())))
    parts = []
    for start in range(0, size, batch_size):
        chunk = {name: values[start : start + batch_size] for name, values in arrays.items()}
        parts.append(tower(to_tensor_dict(chunk), training=False).numpy())
    return np.concatenate(parts, axis=0)


class TwoTowerRanker:
    """Ranks for `EvalSet`s with the towers of a `TwoTowerModel`.

    Query features are the evaluated users' snapshots at the start of the split (history of
    known items only); candidates are the whole catalog. Users are scored in blocks sized from
    `memory_budget_gb` (`evaluation.memory_budget_gb`).
    """

    name = "two_tower"

    def __init__(
        self,
        model,
        features: FeatureSet,
        split: SplitData,
        memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    ) -> None:
        self.model = model
        self.features = features
        self.split = split
        self.tables = FeatureTables(split.data)
        self.memory_budget_gb = memory_budget_gb

    def embeddings(self, eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
        """Query embeddings `[U, d]` of the evaluated users and candidate embeddings `[I, d]`."""
        queries = snapshot_queries(
            self.split, self.features, self.tables, eval_set.split, eval_set.user_ids
        )
        catalog = candidate_inputs(self.features, self.tables, eval_set.catalog)
        return embed(self.model.query_model, queries), embed(self.model.candidate_model, catalog)

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        """`[U, k]` catalog rows, best first, known items excluded.

        Raises:
          ConfigError: one user's scores exceed `memory_budget_gb`.
        """
        import tensorflow as tf

        batch_size = users_per_block(eval_set.num_items, self.memory_budget_gb)
        query_embeddings, candidate_embeddings = self.embeddings(eval_set)
        candidates = tf.constant(candidate_embeddings)
        parts = [np.zeros((0, k), dtype=np.int64)]
        for rows in user_blocks(len(query_embeddings), batch_size, self.name):
            # The same TF matmul the exported brute-force index runs, so scores match bit for bit.
            scores = tf.linalg.matmul(query_embeddings[rows], candidates, transpose_b=True)
            parts.append(
                top_k_excluding(scores.numpy(), eval_set.excluded[rows], k, overwrite=True)
            )
        return np.concatenate(parts, axis=0)
