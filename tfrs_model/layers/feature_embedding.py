"""Embeddings of string features: scalar lookups, pooled multi-valued ones, and histories."""

from __future__ import annotations

import tensorflow as tf

from tfrs_model.features.spec import FeatureSpec

_PAD = ""


class FeatureEmbedding(tf.keras.layers.Layer):
    """Embeds one categorical string feature.

    Inputs: `[batch]` strings (scalar feature) or `[batch, L]` strings padded with "".
    Output: `[batch, spec.embedding_dim]` float32; a multi-valued feature is the mean of its
    non-padding values (zeros when all are padding). Values outside the vocabulary share
    `oov_buckets` hashed out-of-vocabulary embeddings.
    """

    def __init__(self, spec: FeatureSpec, oov_buckets: int = 1, **kwargs) -> None:
        super().__init__(name=kwargs.pop("name", f"{spec.name}_embedding"), **kwargs)
        self.spec = spec
        self.lookup = tf.keras.layers.StringLookup(
            vocabulary=list(spec.vocabulary) or None,
            mask_token=_PAD if spec.multivalued else None,
            num_oov_indices=oov_buckets,
        )
        # An empty vocabulary (a feature with no training values) still gets OOV rows.
        size = len(spec.vocabulary) + oov_buckets + (1 if spec.multivalued else 0)
        self.embedding = tf.keras.layers.Embedding(size, spec.embedding_dim)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        ids = self.lookup(values)
        embedded = self.embedding(ids)
        if not self.spec.multivalued:
            return embedded
        return _masked_mean(embedded, tf.not_equal(values, _PAD))


def _masked_mean(embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of `[batch, L, dim]` where `mask` ([batch, L]) is true."""
    weights = tf.cast(mask, embedded.dtype)[:, :, None]
    total = tf.reduce_sum(embedded * weights, axis=1)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
    return total / count


class HistoryEmbedding(FeatureEmbedding):
    """Embeds a user's recent items, most recent last.

    Input: `[batch, H]` item ids, left-padded with "".
    Output: `[batch, 2 * dim]`: the mean of all history items concatenated with the most recent
    item's embedding, so both long-term taste and the latest intent reach the tower.
    """

    def call(self, values: tf.Tensor) -> tf.Tensor:
        embedded = self.embedding(self.lookup(values))
        mean = _masked_mean(embedded, tf.not_equal(values, _PAD))
        last = embedded[:, -1, :] * tf.cast(tf.not_equal(values[:, -1:], _PAD), embedded.dtype)
        return tf.concat([mean, last], axis=1)
