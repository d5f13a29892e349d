"""Padded string arrays of user and item features, looked up by id in one vectorized step."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_model.data.schema import FeatureColumn, InteractionData

PAD = ""


def pad_values(rows: pd.Series | list, width: int) -> np.ndarray:
    """Multi-valued rows (sequences of strings) as a `[len(rows), width]` object array, padded
    with "" on the right and truncated to `width`."""
    out = np.full((len(rows), width), PAD, dtype=object)
    for i, row in enumerate(rows):
        values = list(row)[:width]
        out[i, : len(values)] = values
    return out


def _column_array(table: pd.DataFrame, column: FeatureColumn) -> np.ndarray:
    if column.multivalued:
        return pad_values(table[column.name].tolist(), column.max_values)
    return table[column.name].fillna(PAD).astype(str).to_numpy(dtype=object)


class FeatureTables:
    """User and item side features as arrays indexed by id.

    Unknown ids get empty features (all ""), which the towers map to OOV buckets.
    """

    def __init__(self, data: InteractionData) -> None:
        self._user_index = pd.Index(data.users["user_id"])
        self._item_index = pd.Index(data.items["item_id"])
        self._user_columns = {c.name: _column_array(data.users, c) for c in data.user_features}
        self._item_columns = {c.name: _column_array(data.items, c) for c in data.item_features}
        self._user_specs = data.user_features
        self._item_specs = data.item_features

    @staticmethod
    def _lookup(
        index: pd.Index, columns: dict[str, np.ndarray], ids: np.ndarray
    ) -> dict[str, np.ndarray]:
        rows = index.get_indexer(ids)
        known = rows >= 0
        out = {}
        for name, array in columns.items():
            values = np.full((len(ids), *array.shape[1:]), PAD, dtype=object)
            values[known] = array[rows[known]]
            out[name] = values
        return out

    def user_features(self, user_ids: np.ndarray) -> dict[str, np.ndarray]:
        """`{feature: [n] or [n, L] object array}` for `user_ids` ([n] strings)."""
        return self._lookup(self._user_index, self._user_columns, user_ids)

    def item_features(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """`{feature: [n] or [n, L] object array}` for `item_ids` ([n] strings)."""
        return self._lookup(self._item_index, self._item_columns, item_ids)
