"""Keras layers used by the towers and the training heads."""

from tfrs_model.layers.feature_embedding import FeatureEmbedding, HistoryEmbedding
from tfrs_model.layers.pointwise_head import PointwiseHead

__all__ = ["FeatureEmbedding", "HistoryEmbedding", "PointwiseHead"]
