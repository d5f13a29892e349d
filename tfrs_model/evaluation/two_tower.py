"""Ranks the catalog with a trained two-tower model: exact dot products, known items excluded."""

from __future__ import annotations

import numpy as np

from tfrs_model.data.splits import SplitData
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
    known items only); candidates are the whole catalog.
    """

    name = "two_tower"

    def __init__(self, model, features: FeatureSet, split: SplitData) -> None:
        self.model = model
        self.features = features
        self.split = split
        self.tables = FeatureTables(split.data)

    def embeddings(self, eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
        """Query embeddings `[U, d]` of the evaluated users and candidate embeddings `[I, d]`."""
        queries = snapshot_queries(
            self.split, self.features, self.tables, eval_set.split, eval_set.user_ids
        )
        catalog = candidate_inputs(self.features, self.tables, eval_set.catalog)
        return embed(self.model.query_model, queries), embed(self.model.candidate_model, catalog)

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        import tensorflow as tf

        # About 1 GB of float32 scores per batch, whatever the catalog size.
        batch_size = max(1, min(1024, (1 << 28) // max(1, eval_set.num_items)))
        query_embeddings, candidate_embeddings = self.embeddings(eval_set)
        candidates = tf.constant(candidate_embeddings)
        parts = []
        for start in range(0, len(query_embeddings), batch_size):
            rows = slice(start, start + batch_size)
            # The same TF matmul the exported brute-force index runs, so scores match bit for bit.
            scores = tf.linalg.matmul(query_embeddings[rows], candidates, transpose_b=True)
            parts.append(top_k_excluding(scores.numpy(), eval_set.excluded[rows], k))
        return np.concatenate(parts, axis=0)
