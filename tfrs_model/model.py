"""`TwoTowerModel`: the two towers composed with a TFRS retrieval task."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_model.config import ModelConfig
from tfrs_model.features.examples import LIKE, RATING, SAMPLING_PROBABILITY, WEIGHT
from tfrs_model.features.negatives import NEGATIVES, UNIFORM_PROBABILITY
from tfrs_model.features.spec import CANDIDATE, ITEM_ID, QUERY, FeatureSet
from tfrs_model.layers import PointwiseHead
from tfrs_model.towers import EnsembleTower, Tower, candidate_tower, member_outputs, query_tower

TOP_KS = (1, 5, 10, 50, 100)


# The name prefix of `tfrs.metrics.FactorizedTopK`'s metrics.
_TOP_K_METRICS = "factorized_top_k/"


class TwoTowerModel(tfrs.Model):
    """Softmax retrieval over a query and a candidate tower.

    Features: the towers' string inputs plus `candidate_sampling_probability` ([batch] float32,
    used for logQ correction when enabled) and `sample_weight` ([batch] float32). Training
    batches may also carry `negatives` (see `features.negatives`): `[M]` extra catalog items
    scored against every query beside the in-batch candidates, `rating` ([batch] float32)
    when `rating_weight` > 0: the rating head's mean squared error, times `rating_weight`, is
    added to the retrieval loss, and `like` ([batch] float32 0/1) when `like_weight` > 0: the
    like head's binary cross-entropy, times `like_weight`, is added too.
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
        self.query_model: Tower | EnsembleTower = query_tower(features, config)
        self.candidate_model: Tower | EnsembleTower = candidate_tower(features, config)
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
            num_hard_negatives=config.hard_negatives or None,
        )
        # Pointwise heads: (input key, head, task, weight) for each one switched on.
        self.heads: list[tuple[str, PointwiseHead, tfrs.tasks.Ranking, float]] = []
        if config.rating_weight > 0:
            self.rating_head = PointwiseHead("rating")
            self.rating_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.MeanSquaredError(),
                metrics=[tf.keras.metrics.RootMeanSquaredError(name="rating_rmse")],
            )
            self.heads.append((RATING, self.rating_head, self.rating_task, config.rating_weight))
        if config.like_weight > 0:
            self.like_head = PointwiseHead("like_logit")
            self.like_task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                metrics=[tf.keras.metrics.AUC(from_logits=True, name="like_auc")],
            )
            self.heads.append((LIKE, self.like_head, self.like_task, config.like_weight))

    def compute_loss(
        self,
        features: dict[str, tf.Tensor] | Sequence[dict[str, tf.Tensor]],
        training: bool = False,
    ) -> tf.Tensor:
        """The retrieval loss (plus the weighted rating and like losses) of one batch.

        `features` holds each tower's inputs either flat, or under the keys `query` and
        `candidate` (as streamed training batches do: a users' and an items' feature may share a
        name), beside `candidate_sampling_probability`, `sample_weight` and optional `rating`
        and `negatives`. With `ensemble_members` > 1 it may be a sequence of such batches, one
        per member, drawn independently (`training_dataset` per member seed): each member then
        learns from its own batches, as a separately trained model would.
        """
        if isinstance(features, Sequence):
            return self._member_batches_loss(features, training)
        query_embeddings, candidate_embeddings, task_inputs = self._embed(
            features, self.query_model, self.candidate_model, training
        )
        loss = self._retrieval_loss(
            query_embeddings, candidate_embeddings, compute_metrics=not training, **task_inputs
        )
        return loss + self._head_losses(features, query_embeddings, candidate_embeddings)

    def _embed(
        self,
        features: dict[str, tf.Tensor],
        query_model: tf.keras.Model,
        candidate_model: tf.keras.Model,
        training: bool,
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor | None]]:
        """Query embeddings `[B, d]`, candidate embeddings `[C, d]` (the batch's items, then any
        uniform negatives) and the retrieval task's other inputs for them."""
        query_inputs = features.get(QUERY, features)
        candidate_inputs = features.get(CANDIDATE, features)
        query_embeddings = query_model(query_inputs, training=training)
        candidate_embeddings = candidate_model(candidate_inputs, training=training)
        candidate_ids = candidate_inputs[ITEM_ID]
        probability = features[SAMPLING_PROBABILITY]
        negatives = features.get(NEGATIVES) if training else None
        if negatives is not None:
            candidate_embeddings = tf.concat(
                [candidate_embeddings, candidate_model(negatives, training=training)], axis=0
            )
            candidate_ids = tf.concat([candidate_ids, negatives[ITEM_ID]], axis=0)
            probability = _mixed_sampling_probability(
                tf.concat([probability, negatives[SAMPLING_PROBABILITY]], axis=0),
                batch_size=tf.shape(query_embeddings)[0],
                negatives=negatives,
            )
        task_inputs = {
            "sample_weight": features.get(WEIGHT),
            "candidate_sampling_probability": self._logq(probability),
            "candidate_ids": candidate_ids if self.config.remove_accidental_hits else None,
        }
        return query_embeddings, candidate_embeddings, task_inputs

    def _member_batches_loss(
        self, batches: Sequence[dict[str, tf.Tensor]], training: bool
    ) -> tf.Tensor:
        """The sum of every ensemble member's retrieval loss on its own batch; the heads (on the
        whole ensemble's embeddings) learn from the first batch."""
        members = zip(self.query_model.members, self.candidate_model.members, batches, strict=True)
        losses = [
            self._task_loss(*self._embed(batch, query_member, candidate_member, training))
            for query_member, candidate_member, batch in members
        ]
        loss = tf.add_n(losses)
        if self.heads:
            query, candidate, _ = self._embed(
                batches[0], self.query_model, self.candidate_model, training
            )
            loss += self._head_losses(batches[0], query, candidate)
        return loss

    def _head_losses(
        self,
        features: dict[str, tf.Tensor],
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
    ) -> tf.Tensor:
        """The pointwise heads' weighted losses (0 with none switched on)."""
        loss = tf.constant(0.0)
        batch = tf.shape(query_embeddings)[0]
        for key, head, task, weight in self.heads:
            if key in features:
                predictions = head(query_embeddings, candidate_embeddings[:batch])
                loss += weight * task(labels=features[key], predictions=predictions)
        return loss

    def _retrieval_loss(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        compute_metrics: bool,
        **task_inputs: tf.Tensor | None,
    ) -> tf.Tensor:
        """The retrieval task's loss; with ensemble members (sharing this batch), the sum of each
        member's own loss, so members still learn independently of each other.

        The top-K metrics, when computed, rank with the whole (ensemble) embeddings: what is
        served. Their call's loss is not added; it would train the members' sum jointly.
        """
        members = self.config.ensemble_members
        if members == 1:
            return self._task_loss(
                query_embeddings, candidate_embeddings, task_inputs, compute_metrics
            )
        pairs = zip(
            member_outputs(query_embeddings, members),
            member_outputs(candidate_embeddings, members),
            strict=True,
        )
        loss = tf.add_n(
            [self._task_loss(query, candidate, task_inputs) for query, candidate in pairs]
        )
        if compute_metrics:
            self._task_loss(query_embeddings, candidate_embeddings, task_inputs, compute_metrics)
        return loss

    def _task_loss(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        task_inputs: dict[str, tf.Tensor | None],
        compute_metrics: bool = False,
    ) -> tf.Tensor:
        """One call of the retrieval task (`[B, d]` queries against `[C, d]` candidates)."""
        return self.task(
            query_embeddings,
            candidate_embeddings,
            compute_metrics=compute_metrics,
            compute_batch_metrics=False,
            **task_inputs,
        )

    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """TFRS' train step, logging only what training computed.

        The top-K metrics are computed on evaluation batches only, so during training they would
        print as zeros; the regularization loss is dropped when the model has none (the total
        loss then equals the loss).
        """
        logs = super().train_step(inputs)
        skipped = {"regularization_loss", "total_loss"} if not self.losses else set()
        return {
            name: value
            for name, value in logs.items()
            if name not in skipped and not name.startswith(_TOP_K_METRICS)
        }

    def _logq(self, probability: tf.Tensor) -> tf.Tensor | None:
        """The probabilities whose logs the task subtracts: `p ** logq_strength`, or None."""
        if not self.config.logq_correction:
            return None
        if self.config.logq_strength == 1.0:
            return probability
        return tf.pow(probability, self.config.logq_strength)


def _mixed_sampling_probability(
    in_batch_probability: tf.Tensor, batch_size: tf.Tensor, negatives: dict[str, tf.Tensor]
) -> tf.Tensor:
    """Expected occurrences of each candidate among the batch's `B` positives and `M` uniform draws.

    Args:
      in_batch_probability: `[C]` each candidate's chance of being one batch positive.
      batch_size: `B`, the number of queries.
      negatives: the uniform draws, with `uniform_probability` (`[M]`, 1 / catalog size).

    Returns:
      `[C]` float32 `B * p_in_batch + M / N`: the logQ correction for the union of both samples.
    """
    num_negatives = tf.cast(tf.shape(negatives[UNIFORM_PROBABILITY])[0], tf.float32)
    uniform = negatives[UNIFORM_PROBABILITY][0] * num_negatives
    return tf.cast(batch_size, tf.float32) * in_batch_probability + uniform
