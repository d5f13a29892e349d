"""Keras layers used by the towers."""

from tfrs_model.layers.feature_embedding import FeatureEmbedding, HistoryEmbedding

__all__ = ["FeatureEmbedding", "HistoryEmbedding"]
