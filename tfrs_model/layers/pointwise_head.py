"""`PointwiseHead`: one score per (query, candidate) pair, for the rating and like heads."""

from __future__ import annotations

import tensorflow as tf


class PointwiseHead(tf.keras.layers.Layer):
    """An MLP over the concatenated tower outputs (the TFRS multitask recipe).

    Inputs: `query` and `candidate` embeddings, both `[batch, D]` float32.
    Output: `[batch, 1]` float32: a predicted rating (rating head, mean squared error) or the
    logit of a like (like head, binary cross-entropy).

    It only shapes the towers during training (a second, pointwise signal that also uses the
    interactions below the positive threshold); serving ranks by the retrieval score.
    """

    def __init__(
        self, output_name: str = "rating", hidden_layers: tuple[int, ...] = (256, 64), **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.hidden = [
            tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
            for i, units in enumerate(hidden_layers)
        ]
        self.output_layer = tf.keras.layers.Dense(1, name=output_name)

    def call(self, query: tf.Tensor, candidate: tf.Tensor) -> tf.Tensor:
        x = tf.concat([query, candidate], axis=1)
        for layer in self.hidden:
            x = layer(x)
        return self.output_layer(x)
