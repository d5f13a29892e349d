"""The training optimizer: sparse updates for embedding tables, a dense optimizer for the rest.

Keras' Adam updates its two moment slots for every row of a variable on every step, also where
the gradient is an `IndexedSlices` of the batch's rows: on an embedding table that is work in
proportion to the vocabulary, and it made training 25x slower on 200K users than on 1K. Adagrad
(and SGD) apply only the gathered rows (`ResourceSparseApplyAdagradV2`), so the per-step cost of
the tables follows the batch, not the vocabulary. TFRS' `CompositeOptimizer` gives the tables
one optimizer and the dense layers (MLPs, attention, heads) another.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_model.config import TrainConfig
from tfrs_model.distribute import shards_of

# Keras 2's legacy optimizers: the ones `CompositeOptimizer` composes (and with sparse kernels).
_OPTIMIZERS = {
    "adam": tf.keras.optimizers.legacy.Adam,
    "adagrad": tf.keras.optimizers.legacy.Adagrad,
    "sgd": tf.keras.optimizers.legacy.SGD,
}


def embedding_tables(model: tf.keras.Model) -> list[tf.Variable]:
    """The tables of every `Embedding` layer in `model`: the variables with sparse gradients.

    A table split across parameter servers (a `ShardedVariable`) gives its shards, which are
    what the model's `trainable_variables` list.
    """
    return [
        piece
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Embedding)
        for piece in shards_of(layer.embeddings)
    ]


def dense_variables(model: tf.keras.Model) -> list[tf.Variable]:
    """Every trainable variable of `model` that is not an embedding table."""
    tables = {table.ref() for table in embedding_tables(model)}
    return [v for v in model.trainable_variables if v.ref() not in tables]


def build_optimizer(model: tf.keras.Model, config: TrainConfig) -> tf.keras.optimizers.Optimizer:
    """`config.optimizer` for the dense variables and `config.embedding_optimizer` for the
    embedding tables (one optimizer for all with `embedding_optimizer="same"`).

    Call it after the model's variables exist (the variable lists are read on every step).
    """
    dense = _OPTIMIZERS[config.optimizer](learning_rate=config.learning_rate)
    if config.embedding_optimizer == "same":
        return dense
    tables = _OPTIMIZERS[config.embedding_optimizer](learning_rate=config.embedding_learning_rate)
    return tfrs.experimental.optimizers.CompositeOptimizer(
        [(tables, lambda: embedding_tables(model)), (dense, lambda: dense_variables(model))]
    )
