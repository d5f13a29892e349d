"""Histories built strictly from the past: no interaction at or after the query time leaks in.

Both functions take interactions sorted by (user_id, timestamp, item_id) and return a
`[n, length]` object array of item ids, oldest first and most recent last, left-padded with "".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_model.features.tables import PAD


def _gather(items: np.ndarray, first: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
    """Rows `items[end-length:end]`, clipped below at `first` (the user's first row)."""
    positions = end[:, None] - length + np.arange(length)[None, :]
    valid = positions >= first[:, None]
    out = np.full(positions.shape, PAD, dtype=object)
    out[valid] = items[positions[valid]]
    return out


def history_before_each(frame: pd.DataFrame, length: int) -> np.ndarray:
    """For each row, the user's last `length` items with a strictly earlier timestamp.

    Rows sharing a timestamp do not see each other: their order within a second is unknown.

    Args:
      frame: interactions sorted by (user_id, timestamp, item_id); every row is a potential
        history item and a query.

    Returns:
      `[len(frame), length]` object array.
    """
    frame = frame.reset_index(drop=True)
    row = np.arange(len(frame))
    first = row - frame.groupby("user_id", sort=False).cumcount().to_numpy()
    same_time_rank = frame.groupby(["user_id", "timestamp"], sort=False).cumcount().to_numpy()
    return _gather(frame["item_id"].to_numpy(dtype=object), first, row - same_time_rank, length)


def latest_history(frame: pd.DataFrame, user_ids: np.ndarray, length: int) -> np.ndarray:
    """For each of `user_ids`, their last `length` items in `frame` (all of it is the past).

    Args:
      frame: the known interactions, sorted by (user_id, timestamp, item_id).
      user_ids: `[n]` users; those absent from `frame` get an all-padding row.

    Returns:
      `[n, length]` object array.
    """
    frame = frame.reset_index(drop=True)
    users = frame["user_id"].to_numpy()
    starts = pd.Series(np.arange(len(frame))).groupby(users, sort=False)
    first_by_user, end_by_user = starts.min(), starts.max() + 1
    first = first_by_user.reindex(user_ids).fillna(0).to_numpy(dtype=np.int64)
    end = end_by_user.reindex(user_ids).fillna(0).to_numpy(dtype=np.int64)
    return _gather(frame["item_id"].to_numpy(dtype=object), first, end, length)
