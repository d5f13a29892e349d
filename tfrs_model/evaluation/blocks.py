"""Users ranked a block at a time, with progress: the one loop every ranker shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from tfrs_model.meter import Meter

logger = logging.getLogger(__name__)


def user_blocks(num_users: int, block: int, what: str) -> Iterator[slice]:
    """Consecutive slices of at most `block` of `num_users` users, reporting progress
    ("ranking `what`": users, users/s, ETA) as each block is done."""
    with Meter(num_users, "users", f"ranking {what}", logger=logger) as meter:
        for start in range(0, num_users, block):
            stop = min(start + block, num_users)
            yield slice(start, stop)
            meter.update_to(stop)
