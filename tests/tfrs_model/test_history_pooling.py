"""History pooling: mean, attention, GRU and transformer summaries, checked against hand
computations."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrs_model.config import ModelConfig
from tfrs_model.errors import ConfigError
from tfrs_model.features.spec import FeatureSpec
from tfrs_model.layers import HistoryEmbedding

SPEC = FeatureSpec("history", "query", ("a", "b", "c"), 4, 3)
HISTORIES = tf.constant([["", "", "a", "b"], ["", "", "", ""], ["a", "b", "c", "a"]])


def _layer(pooling: str) -> HistoryEmbedding:
    tf.keras.utils.set_random_seed(0)
    layer = HistoryEmbedding(SPEC, 1, pooling)
    layer(HISTORIES)
    return layer


def _item_vectors(layer: HistoryEmbedding, items: list[str]) -> np.ndarray:
    return layer.embedding(layer.lookup(tf.constant(items))).numpy()


@pytest.mark.parametrize("pooling", ["mean", "attention", "gru", "transformer"])
def test_output_is_summary_then_last_item_and_zero_without_history(pooling):
    layer = _layer(pooling)
    out = layer(HISTORIES).numpy()
    assert out.shape == (3, 6)
    np.testing.assert_allclose(out[1], 0.0, atol=1e-7)
    np.testing.assert_allclose(out[0, 3:], _item_vectors(layer, ["b"])[0], rtol=1e-6)


def test_mean_pooling_averages_the_items():
    layer = _layer("mean")
    a, b, c = _item_vectors(layer, ["a", "b", "c"])
    np.testing.assert_allclose(layer(HISTORIES).numpy()[2, :3], (a + b + c + a) / 4, rtol=1e-6)


def test_attention_with_flat_scores_is_the_mean_and_recency_can_pick_the_last():
    layer = _layer("attention")
    layer.item_score.kernel.assign(tf.zeros_like(layer.item_score.kernel))
    np.testing.assert_allclose(
        layer(HISTORIES).numpy()[:, :3], _layer("mean")(HISTORIES).numpy()[:, :3], rtol=1e-5
    )
    # A large score on the most recent position puts all the weight there.
    layer.position_score.assign([0.0, 0.0, 0.0, 50.0])
    out = layer(HISTORIES).numpy()
    np.testing.assert_allclose(out[:, :3], out[:, 3:], rtol=1e-5, atol=1e-7)


def test_gru_ignores_left_padding():
    layer = _layer("gru")
    items = _item_vectors(layer, ["a", "b"])[None, :, :]  # the unpadded history a, b
    expected = layer.gru(tf.constant(items)).numpy()[0]
    np.testing.assert_allclose(layer(HISTORIES).numpy()[0, :3], expected, rtol=1e-5)


def test_transformer_ignores_what_padding_holds_and_reads_the_most_recent_position():
    layer = _layer("transformer")
    codes = layer.codes(HISTORIES[:1])
    mask = tf.not_equal(codes, 0)
    embedded = layer.embedding(codes)
    # Whatever sits in the padded positions, the masked attention never reads it.
    noisy = tf.where(mask[:, :, None], embedded, tf.random.normal(tf.shape(embedded)) * 10)
    expected = layer.block(noisy, mask).numpy()[0, -1]
    np.testing.assert_allclose(layer(HISTORIES).numpy()[0, :3], expected, rtol=1e-5, atol=1e-6)


def test_transformer_is_causal_an_earlier_position_does_not_see_later_items():
    layer = _layer("transformer")
    codes = layer.codes(tf.constant([["a", "b", "c", "a"], ["a", "b", "a", "c"]]))
    mask = tf.not_equal(codes, 0)
    out = layer.block(layer.embedding(codes), mask).numpy()
    # Same first two items, different later ones: positions 0 and 1 agree.
    np.testing.assert_allclose(out[0, :2], out[1, :2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0, 3], out[1, 3])


def test_unknown_pooling_is_refused():
    with pytest.raises(ConfigError, match="history_pooling must be mean, attention, gru or"):
        ModelConfig(history_pooling="max")
