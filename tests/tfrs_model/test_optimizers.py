"""The composite optimizer: sparse row updates for embedding tables, Adam for dense variables."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrs_model.config import TrainConfig
from tfrs_model.optimizers import build_optimizer, dense_variables, embedding_tables


class _Tiny(tf.keras.Model):
    """Ids -> a 4-wide embedding -> one dense unit."""

    def __init__(self) -> None:
        super().__init__()
        self.table = tf.keras.layers.Embedding(10, 4)
        self.head = tf.keras.layers.Dense(1)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return self.head(self.table(ids))


def _model() -> _Tiny:
    tf.keras.utils.set_random_seed(0)
    model = _Tiny()
    model(tf.constant([0]))
    return model


def _step(model: _Tiny, optimizer, ids: list[int]) -> None:
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.constant(ids)))
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


def test_tables_and_dense_variables_are_told_apart():
    model = _model()
    assert [v.name for v in embedding_tables(model)] == [model.table.embeddings.name]
    assert {v.name for v in dense_variables(model)} == {v.name for v in model.head.weights}


def test_only_the_batch_rows_of_a_table_change_and_adam_keeps_no_slots_for_it():
    model = _model()
    before = model.table.embeddings.numpy().copy()
    optimizer = build_optimizer(model, TrainConfig())
    for _ in range(3):
        _step(model, optimizer, [1, 2, 2])
    after = model.table.embeddings.numpy()
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [1, 2]
    tables, dense = optimizer.optimizers
    assert isinstance(tables, tf.keras.optimizers.legacy.Adagrad)
    assert isinstance(dense, tf.keras.optimizers.legacy.Adam)
    # Adam's moments exist for the dense kernel and bias only: 2 slots each.
    assert len(dense.get_slot_names()) == 2
    adam_slots = [dense.get_slot(v, "m") for v in dense_variables(model)]
    assert len(adam_slots) == 2
    assert tables.get_slot(model.table.embeddings, "accumulator").shape == (10, 4)


def test_same_uses_one_optimizer_for_every_variable():
    model = _model()
    optimizer = build_optimizer(
        model, TrainConfig(optimizer="adam", embedding_optimizer="same", learning_rate=0.01)
    )
    assert isinstance(optimizer, tf.keras.optimizers.legacy.Adam)
    _step(model, optimizer, [3])
    assert optimizer.get_slot(model.table.embeddings, "m").shape == (10, 4)
