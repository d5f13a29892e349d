"""The latest history of each user: their last items in a frame of known (past) interactions.

Used for evaluation snapshots (`latest_history`, strings) and the history an export bakes per
user (`latest_rows`, the same history as int32 item rows from columnar codes). The history of
every training interaction (strictly earlier items only) is computed by the columnar engine when
it writes the example shards (`tfrs_model.features.shards`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrs_model.features.tables import PAD

_USER_BLOCK = 1 << 16  # users per block when gathering histories


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


def latest_rows(
    user_rows: np.ndarray, item_rows: np.ndarray, num_users: int, length: int
) -> np.ndarray:
    """The columnar form of `latest_history`: each user's last `length` item rows.

    Args:
      user_rows: `[n]` int, each interaction's user (0..num_users-1; -1 = not a requested user).
      item_rows: `[n]` int, each interaction's item row (-1 = an item outside the catalog).
        Within a user, the interactions are in time order (the order `SplitData` keeps:
        timestamp, then item id), so of two rows at the same time the later one is more recent.
        Users need not be contiguous or in order.
      num_users: U, the number of output rows.
      length: H.

    Returns:
      `[U, H]` int32 item rows, left-padded with -1, most recent last. Rows with a user or an
      item of -1 are left out; a user with fewer than H items (or none) is padded. Memory is
      O(n + U * H): no per-user Python objects.
    """
    user_rows = np.asarray(user_rows)
    item_rows = np.asarray(item_rows)
    keep = (user_rows >= 0) & (item_rows >= 0)
    users, items = user_rows[keep], item_rows[keep].astype(np.int32)
    if len(users) and np.any(users[1:] < users[:-1]):
        order = np.argsort(users, kind="stable")  # groups users, keeping time order within
        users, items = users[order], items[order]
    counts = np.bincount(users, minlength=num_users)
    end = np.cumsum(counts)
    first = end - counts
    out = np.full((num_users, length), -1, dtype=np.int32)
    offsets = np.arange(length) - length
    for start in range(0, num_users, _USER_BLOCK):  # bounds the [block, H] int64 positions
        stop = min(start + _USER_BLOCK, num_users)
        positions = end[start:stop, None] + offsets[None, :]
        valid = positions >= first[start:stop, None]
        out[start:stop][valid] = items[positions[valid]]
    return out
