"""Training progress: examples, rate and ETA within an epoch; throughput in the epoch's logs."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from tfrs_model.progress import EXAMPLES_PER_SECOND, EpochProgress, StepProgress


def _fit(progress: StepProgress, epochs: int = 2) -> tf.keras.callbacks.History:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    features = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((features, features[:, :1])).batch(8).repeat()
    return model.fit(
        data, epochs=epochs, steps_per_epoch=8, callbacks=[progress.stopwatch, progress], verbose=0
    )


def test_without_a_terminal_progress_is_logged_with_rate_and_eta(caplog):
    progress = StepProgress("train", 2, steps_per_epoch=8, batch_size=8, bar=False, log_every_s=0.0)
    with caplog.at_level(logging.INFO, logger="tfrs_model.progress"):
        history = _fit(progress)
    lines = [record.getMessage() for record in caplog.records]
    # One line per execution of 2 steps (16 examples) with rate and ETA, then the epoch's line.
    assert "epoch 1/2: 16/64 examples" in lines[0]
    assert "examples/s, ETA" in lines[0]
    epoch_lines = [line for line in lines if "(train): 64 examples in" in line]
    assert len(epoch_lines) == 2
    assert len(history.history[EXAMPLES_PER_SECOND]) == 2
    assert all(rate > 0 for rate in history.history[EXAMPLES_PER_SECOND])
    assert progress.examples_per_second() > 0
    assert len(progress.training_seconds) == 2


def test_with_a_bar_nothing_is_logged_until_the_epoch_ends(caplog):
    progress = StepProgress("train", 1, steps_per_epoch=8, batch_size=8, bar=True)
    with caplog.at_level(logging.INFO, logger="tfrs_model.progress"):
        _fit(progress, epochs=1)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("epoch 1/1 (train): 64 examples in")


def test_epoch_progress_has_no_batch_hooks_and_still_measures_each_epoch(caplog):
    progress = EpochProgress("train", 2, steps_per_epoch=8, batch_size=8)
    assert not progress._implements_train_batch_hooks()  # ParameterServerStrategy refuses them
    with caplog.at_level(logging.INFO, logger="tfrs_model.progress"):
        history = _fit(progress)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "epoch 1/2 (train)",
        "epoch 2/2 (train)",
    ]
    assert all(rate > 0 for rate in history.history[EXAMPLES_PER_SECOND])
    throughput = progress.throughput()
    assert throughput.warmup_seconds == 0.0
    assert throughput.after_warmup == throughput.examples_per_second > 0
