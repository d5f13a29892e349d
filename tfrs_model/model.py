"""`TwoTowerModel`: the two towers composed with a TFRS retrieval task."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_model.config import ModelConfig
from tfrs_model.features.examples import SAMPLING_PROBABILITY, WEIGHT
from tfrs_model.features.spec import ITEM_ID, FeatureSet
from tfrs_model.towers import Tower, candidate_tower, query_tower

TOP_KS = (1, 5, 10, 50, 100)


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval over a query and a candidate tower.

    Features: the towers' string inputs plus `candidate_sampling_probability` ([batch] float32,
    used for logQ correction when enabled) and `sample_weight` ([batch] float32).
    The factorized top-K metrics are computed on evaluation batches only (they rank every
    candidate, which is too slow to do on every training step).
    """

    def __init__(
        self,
        features: FeatureSet,
        config: ModelConfig,
        candidates: tf.data.Dataset | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.query_model: Tower = query_tower(features, config)
        self.candidate_model: Tower = candidate_tower(features, config)
        metrics = None
        if candidates is not None:
            metrics = tfrs.metrics.FactorizedTopK(
                candidates=candidates.map(lambda x: (x[ITEM_ID], self.candidate_model(x))),
                ks=TOP_KS,
            )
        self.task = tfrs.tasks.Retrieval(
            metrics=metrics,
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query_embeddings = self.query_model(features, training=training)
        candidate_embeddings = self.candidate_model(features, training=training)
        probability = features[SAMPLING_PROBABILITY] if self.config.logq_correction else None
        return self.task(
            query_embeddings,
            candidate_embeddings,
            sample_weight=features.get(WEIGHT),
            candidate_sampling_probability=probability,
            candidate_ids=features[ITEM_ID] if self.config.remove_accidental_hits else None,
            compute_metrics=not training,
            compute_batch_metrics=False,
        )
