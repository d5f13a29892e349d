"""Shuffled fixed-size batches from row chunks: every row once per epoch, reproducible, mixed;
and the training histories cut from wider shard rows (`train.history_skip`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfrs_model.config import TrainConfig
from tfrs_model.errors import ConfigError
from tfrs_model.features.batching import round_robin, shuffled_batches
from tfrs_model.features.streaming import skipped_history


def _chunk(start: int, stop: int) -> dict[str, np.ndarray]:
    rows = np.arange(start, stop)
    return {"row": rows, "double": rows * 2}


def _epochs(chunks):
    return lambda epoch: iter(chunks)


def _take(batches, count):
    return list(itertools.islice(batches, count))


def test_round_robin_alternates_open_sources_and_opens_the_next_when_one_ends():
    sources = [["a1", "a2"], ["b1"], ["c1", "c2"]]
    assert list(round_robin(sources, open_at_once=2)) == ["a1", "b1", "a2", "c1", "c2"]


def test_round_robin_with_every_source_open_interleaves_them_all():
    assert list(round_robin([[1, 4], [2, 5], [3]], open_at_once=8)) == [1, 2, 3, 4, 5]


def test_each_epoch_yields_every_row_exactly_once_in_full_batches():
    # 10 rows, batches of 5, buffer larger than the epoch: two batches per epoch.
    chunks = [_chunk(0, 4), _chunk(4, 10)]
    batches = _take(shuffled_batches(_epochs(chunks), batch_size=5, buffer_rows=64, seed=1), 4)
    assert all(len(batch["row"]) == 5 for batch in batches)
    first_epoch = np.concatenate([batch["row"] for batch in batches[:2]])
    second_epoch = np.concatenate([batch["row"] for batch in batches[2:]])
    assert sorted(first_epoch) == list(range(10))
    assert sorted(second_epoch) == list(range(10))
    # Columns stay aligned through the permutation.
    for batch in batches:
        np.testing.assert_array_equal(batch["double"], batch["row"] * 2)


def test_rows_left_at_an_epoch_end_open_the_next_epoch():
    # 7 rows, batches of 3: 2 batches, and one row carried into the next epoch.
    chunks = [_chunk(0, 7)]
    batches = _take(shuffled_batches(_epochs(chunks), batch_size=3, buffer_rows=64, seed=0), 7)
    rows = np.concatenate([batch["row"] for batch in batches])  # 21 rows = 3 epochs
    assert np.bincount(rows).tolist() == [3] * 7


def test_the_order_is_shuffled_and_reproducible_from_the_seed():
    chunks = [_chunk(0, 1000)]

    def rows(seed):
        batches = shuffled_batches(_epochs(chunks), batch_size=100, buffer_rows=1000, seed=seed)
        return np.concatenate([batch["row"] for batch in _take(batches, 10)])

    assert rows(7).tolist() == rows(7).tolist()
    assert rows(7).tolist() != rows(8).tolist()
    assert rows(7).tolist() != list(range(1000))


def test_a_small_buffer_still_mixes_rows_beyond_one_chunk():
    # Buffer of 200 rows over chunks of 100: a batch mixes rows of several chunks.
    chunks = [_chunk(start, start + 100) for start in range(0, 1000, 100)]
    batches = shuffled_batches(_epochs(chunks), batch_size=50, buffer_rows=200, seed=3)
    chunk_ids = {int(row) // 100 for batch in _take(batches, 4) for row in batch["row"]}
    assert len(chunk_ids) >= 2


def test_an_epoch_without_rows_is_refused():
    with pytest.raises(ValueError, match="epoch 0 has no rows"):
        next(shuffled_batches(_epochs([]), batch_size=2, buffer_rows=8, seed=0))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="batch_size and buffer_rows must be >= 1"):
        next(shuffled_batches(_epochs([_chunk(0, 2)]), batch_size=0, buffer_rows=8, seed=0))


def test_skipped_history_is_a_window_ending_zero_to_skip_items_before_the_last():
    # Width H + S = 2 + 3; row r holds 10r .. 10r + 4, most recent last.
    history = tf.constant([[10 * r + c for c in range(5)] for r in range(200)], tf.int32)
    windows = skipped_history(history, 2).numpy()

    assert windows.shape == (200, 2)
    offsets = windows[:, 1] - 10 * np.arange(200)  # the window's last item, within its row
    np.testing.assert_array_equal(windows[:, 0] + 1, windows[:, 1])  # consecutive items
    # It ends 0..3 items before the row's last (offset 4): each skip drawn, nothing else.
    assert set(offsets.tolist()) == {1, 2, 3, 4}


def test_a_history_as_wide_as_the_towers_take_is_left_whole():
    history = tf.constant([[1, 2, 3]], tf.int32)
    np.testing.assert_array_equal(skipped_history(history, 3), history)


def test_negative_history_skip_is_refused():
    with pytest.raises(ConfigError, match=r"history_skip must be >= 0 \(0 is off\)"):
        TrainConfig(history_skip=-1)


def test_skipped_history_takes_the_given_offsets():
    history = tf.constant([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], tf.int32)
    windows = skipped_history(history, 2, tf.constant([0, 3], tf.int32))
    np.testing.assert_array_equal(windows, [[4, 5], [6, 7]])
