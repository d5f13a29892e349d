"""Keras layers used by the towers and the training heads."""

from tfrs_model.layers.feature_embedding import FeatureEmbedding, HistoryEmbedding
from tfrs_model.layers.rating_head import RatingHead

__all__ = ["FeatureEmbedding", "HistoryEmbedding", "RatingHead"]
