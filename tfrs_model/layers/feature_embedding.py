"""Embeddings of categorical features: scalar lookups, pooled multi-valued ones, and histories.

Each layer takes either the feature's strings (the exported graph, evaluation) or the integer codes
its own `codes` gives for them (training batches streamed from shards, looked up once per catalog
row): both reach the same embedding rows.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_model.config import HISTORY_POOLINGS
from tfrs_model.features.spec import FeatureSpec

_PAD = ""
_MASK_CODE = 0  # StringLookup's index of the mask token "" (multi-valued features only)


class FeatureEmbedding(tf.keras.layers.Layer):
    """Embeds one categorical feature.

    Inputs: `[batch]` strings (scalar feature) or `[batch, L]` strings padded with "", or the
    same shapes of int codes from `codes` (padding is code 0).
    Output: `[batch, spec.embedding_dim]` float32; a multi-valued feature is the mean of its
    non-padding values (zeros when all are padding). Values outside the vocabulary share
    `oov_buckets` hashed out-of-vocabulary embeddings.
    """

    def __init__(self, spec: FeatureSpec, oov_buckets: int = 1, **kwargs) -> None:
        super().__init__(name=kwargs.pop("name", f"{spec.name}_embedding"), **kwargs)
        self.spec = spec
        self.lookup = tf.keras.layers.StringLookup(
            # An array, not a list: Keras tracks a list attribute item by item, and saving a
            # SavedModel then walks every id of the vocabulary (25 s at 200K users; 1.8 s so).
            vocabulary=np.asarray(spec.vocabulary, dtype=object) if spec.vocabulary else None,
            mask_token=_PAD if spec.multivalued else None,
            num_oov_indices=oov_buckets,
        )
        # An empty vocabulary (a feature with no training values) still gets OOV rows.
        size = len(spec.vocabulary) + oov_buckets + (1 if spec.multivalued else 0)
        self.embedding = tf.keras.layers.Embedding(size, spec.embedding_dim)

    def codes(self, values: tf.Tensor) -> tf.Tensor:
        """int64 embedding rows of string `values` (any shape); int codes pass through.

        "" is code 0 for a multi-valued feature (its mask); unknown strings get OOV codes.
        """
        if values.dtype == tf.string:
            return self.lookup(values)
        return tf.cast(values, tf.int64)

    def call(self, values: tf.Tensor) -> tf.Tensor:
        codes = self.codes(values)
        embedded = self.embedding(codes)
        if not self.spec.multivalued:
            return embedded
        return _masked_mean(embedded, tf.not_equal(codes, _MASK_CODE))


def _masked_mean(embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of `[batch, L, dim]` where `mask` ([batch, L]) is true."""
    weights = tf.cast(mask, embedded.dtype)[:, :, None]
    total = tf.reduce_sum(embedded * weights, axis=1)
    count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
    return total / count


class HistoryEmbedding(FeatureEmbedding):
    """Embeds a user's recent items, most recent last.

    Input: `[batch, H]` item ids, left-padded with "" (or their codes, padding 0).
    Output: `[batch, 2 * dim]`: a pooled summary of the history concatenated with the most
    recent item's embedding, so both long-term taste and the latest intent reach the tower.
    The summary depends on `pooling`:
      - `mean`: the mean of the non-padding items.
      - `attention`: a softmax-weighted mean, each item's weight learned from its embedding and
        its position counted from the most recent (recency).
      - `gru`: the final state of a GRU (`dim` units) run over the items oldest first.
      - `transformer`: one causal self-attention block over the items plus learned position
        embeddings (SASRec, Kang & McAuley 2018): two heads, residuals, layer norms and a
        feed-forward layer; the summary is the most recent position's output.
    An all-padding history gives zeros.
    """

    def __init__(self, spec: FeatureSpec, oov_buckets: int = 1, pooling: str = "mean", **kwargs):
        super().__init__(spec, oov_buckets, **kwargs)
        if pooling not in HISTORY_POOLINGS:
            raise ValueError(f"pooling must be one of {HISTORY_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if pooling == "attention":
            self.item_score = tf.keras.layers.Dense(1, use_bias=False, name="item_score")
            self.position_score = self.add_weight(
                name="position_score", shape=(spec.max_values,), initializer="zeros"
            )
        elif pooling == "gru":
            self.gru = tf.keras.layers.GRU(spec.embedding_dim, name="gru")
        elif pooling == "transformer":
            self.block = _SelfAttentionBlock(spec.max_values, spec.embedding_dim, name="block")

    def call(self, values: tf.Tensor) -> tf.Tensor:
        codes = self.codes(values)
        embedded = self.embedding(codes)
        mask = tf.not_equal(codes, _MASK_CODE)
        if self.pooling == "attention":
            summary = self._attend(embedded, mask)
        elif self.pooling == "gru":
            summary = self.gru(embedded, mask=mask)
            summary *= tf.cast(tf.reduce_any(mask, axis=1, keepdims=True), summary.dtype)
        elif self.pooling == "transformer":
            summary = self.block(embedded, mask)[:, -1, :]
            summary *= tf.cast(mask[:, -1:], summary.dtype)
        else:
            summary = _masked_mean(embedded, mask)
        last = embedded[:, -1, :] * tf.cast(mask[:, -1:], embedded.dtype)
        return tf.concat([summary, last], axis=1)

    def _attend(self, embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Softmax over valid positions of content score + position score: `[batch, dim]`."""
        scores = tf.squeeze(self.item_score(embedded), axis=2) + self.position_score[None, :]
        scores = tf.where(mask, scores, tf.fill(tf.shape(scores), -1e9))
        weights = tf.nn.softmax(scores, axis=1) * tf.cast(mask, scores.dtype)
        return tf.reduce_sum(embedded * weights[:, :, None], axis=1)


class _SelfAttentionBlock(tf.keras.layers.Layer):
    """One SASRec block: causal multi-head self-attention and a feed-forward layer.

    Inputs: `[batch, H, dim]` item embeddings (most recent last) and their `[batch, H]` bool
    mask (False = padding). Output: `[batch, H, dim]`; position t sees positions <= t only.
    """

    def __init__(self, length: int, dim: int, heads: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.positions = self.add_weight(
            name="positions",
            shape=(length, dim),
            initializer=tf.keras.initializers.RandomNormal(stddev=0.02),
        )
        self.attention = tf.keras.layers.MultiHeadAttention(
            heads, key_dim=max(1, dim // heads), name="attention"
        )
        self.attention_norm = tf.keras.layers.LayerNormalization(name="attention_norm")
        self.feed_forward = tf.keras.layers.Dense(dim, activation="relu", name="feed_forward")
        self.output_norm = tf.keras.layers.LayerNormalization(name="output_norm")

    def call(self, embedded: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        x = embedded + self.positions[None, :, :]
        length = tf.shape(x)[1]
        causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
        attend = tf.logical_and(causal[None, :, :], mask[:, None, :])  # [batch, query, key]
        x = self.attention_norm(x + self.attention(x, x, attention_mask=attend))
        return self.output_norm(x + self.feed_forward(x))
