"""Interaction data: loaders, the normalized schema, and temporal splits."""

from tfrs_model.data.schema import FeatureColumn, FilterReport, InteractionData, build_dataset
from tfrs_model.data.sources import load_data
from tfrs_model.data.splits import SplitData, assign_splits

__all__ = [
    "FeatureColumn",
    "FilterReport",
    "InteractionData",
    "SplitData",
    "assign_splits",
    "build_dataset",
    "load_data",
]
