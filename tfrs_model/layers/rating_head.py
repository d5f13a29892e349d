"""`RatingHead`: a pointwise rating regressor over a query and a candidate embedding."""

from __future__ import annotations

import tensorflow as tf


class RatingHead(tf.keras.layers.Layer):
    """Predicts a rating from the concatenated tower outputs (the TFRS multitask recipe).

    Inputs: `query` and `candidate` embeddings, both `[batch, D]` float32.
    Output: `[batch, 1]` float32 predicted rating.

    It only shapes the towers during training (a second, pointwise signal that also uses the
    interactions rated below the positive threshold); serving ranks by the retrieval score.
    """

    def __init__(self, hidden_layers: tuple[int, ...] = (256, 64), **kwargs) -> None:
        super().__init__(**kwargs)
        self.hidden = [
            tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
            for i, units in enumerate(hidden_layers)
        ]
        self.output_layer = tf.keras.layers.Dense(1, name="rating")

    def call(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
        x = tf.concat([query, candidate], axis=1)
        for layer in self.hidden:
            x = layer(x)
        return self.output_layer(x)
