"""The latest history of each user: their last items in a frame of known (past) interactions.

Used for evaluation snapshots and the history an export bakes per user. The history of every
training interaction (strictly earlier items only) is computed by the columnar engine when it
writes the example shards (`tfrs_model.features.shards`).
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
