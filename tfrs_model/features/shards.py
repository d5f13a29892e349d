"""Training examples as Parquet shards on disk, computed by the columnar engine.

Every interaction of the log becomes one example row, whatever its split, so one set of shards
serves every fit of a run (early stopping on train, the refit on train + validation, the
production fit on everything): a fit reads the splits it trains on and keeps the rows it learns
from. Rows hold catalog rows, not strings: the vocabulary codes of a fit are looked up when the
rows are streamed (`tfrs_model.features.streaming`).

Layout of a shards directory:
  manifest.json                       rows and positives per split, history length, shards
  split=<i>/shard=<k>/*.parquet       rows of split SPLITS[i] (train, validation, test):
                                      user_row int32, item_row int32, history list<int32>,
                                      positive bool, weight float32, rating float32

`history` is the user's last `history_length` items (item rows, oldest first) with a strictly
earlier timestamp: interactions sharing a timestamp do not see each other. It is computed
exactly, in one pass of window functions over the log sorted per user, without materializing any
user's whole past: the window of the H rows before each row, taken at the first row of each
(user, timestamp) group and shared by the whole group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tfrs_model.data.schema import id_rows
from tfrs_model.data.splits import SPLITS, SplitData
from tfrs_model.errors import DataError
from tfrs_model.features.engine import EngineConfig, connect, run

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Bump when the shard rows change meaning, so cached shards of an older layout are not reused.
SHARDS_FORMAT = 2
# Rows of one shard file, roughly: enough files for interleaving and per-worker sharding.
ROWS_PER_SHARD = 500_000
MIN_SHARDS = 8
MAX_SHARDS = 256


@dataclass(frozen=True)
class ExampleShards:
    """A written shards directory and what it holds.

    Attributes:
      directory: the shards directory (see the module docstring).
      history_length: H, the width of `history` after padding.
      counts: per split, `{"rows": ..., "positives": ...}`.
    """

    directory: Path
    history_length: int
    counts: dict[str, dict[str, int]]

    def files(self, splits: tuple[str, ...]) -> list[str]:
        """The Parquet files of `splits`, sorted (so every worker lists them alike)."""
        return sorted(
            str(path)
            for split in splits
            for path in self.directory.glob(f"split={SPLITS.index(split)}/*/*")
        )

    def num_examples(self, splits: tuple[str, ...], positives_only: bool = True) -> int:
        key = "positives" if positives_only else "rows"
        return sum(self.counts.get(split, {}).get(key, 0) for split in splits)

    @classmethod
    def open(cls, directory: Path) -> ExampleShards:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
        return cls(Path(directory), manifest["history_length"], manifest["counts"])


def _log_table(split: SplitData) -> pa.Table:
    """The log as int columns for the engine: rows instead of ids, the split as its name."""
    frame = split.interactions
    users, items = split.data.users["user_id"], split.data.items["item_id"]
    user_rows, item_rows = id_rows(frame["user_id"], users), id_rows(frame["item_id"], items)
    if (user_rows < 0).any() or (item_rows < 0).any():
        raise DataError("interactions mention users or items missing from their tables")
    ratings = frame["rating"].to_numpy(dtype=np.float32, na_value=np.nan)
    return pa.table(
        {
            "user_row": user_rows,
            "item_row": item_rows,
            "ts": frame["timestamp"].to_numpy(dtype=np.int64),
            # The split's position in SPLITS: a byte per row instead of a string.
            "split": pd.Categorical(frame["split"], categories=SPLITS).codes.astype(np.int8),
            "positive": frame["positive"].to_numpy(dtype=bool),
            "weight": frame["weight"].to_numpy(dtype=np.float32),
            "rating": ratings,
        }
    )


def _examples_sql(history_length: int, num_shards: int) -> str:
    """Every log row with the `history_length` items its user interacted with strictly before it.

    All windows share one partitioning and order (user, then time, then item), so the engine
    sorts the log once: `rn` numbers a user's rows, `from_group_start` counts the rows before
    this one with the same timestamp, and the history is the `history_length` rows before the
    first of those (interactions in the same second never see each other).
    """
    if history_length:
        history = f"""coalesce(list(item_row) OVER (
                PARTITION BY user_row ORDER BY ts, item_row
                ROWS BETWEEN from_group_start + {history_length} PRECEDING
                     AND from_group_start + 1 PRECEDING), []::INTEGER[])"""
    else:
        history = "[]::INTEGER[]"
    return f"""
        WITH ranked AS (
            SELECT *, row_number() OVER by_time AS rn,
                   CASE WHEN ts = lag(ts) OVER by_time THEN NULL ELSE row_number() OVER by_time
                   END AS group_start
            FROM log
            WINDOW by_time AS (PARTITION BY user_row ORDER BY ts, item_row)
        ), grouped AS (
            SELECT *, rn - max(group_start) OVER (
                PARTITION BY user_row ORDER BY ts, item_row ROWS UNBOUNDED PRECEDING
            ) AS from_group_start
            FROM ranked
        )
        SELECT user_row, item_row, {history} AS history,
               positive, weight, rating, split,
               CAST(hash(user_row, rn) % {num_shards} AS INTEGER) AS shard
        FROM grouped
    """


def shards_key(split: SplitData, history_length: int) -> str:
    """A digest of everything the shards of `split` are made of: every interaction's user and
    item rows, time, split, label, weight and rating, the history length and the format. Equal
    keys mean equal shards, so a cache keyed by it may reuse them."""
    return _log_key(_log_table(split), history_length)


def _log_key(log: pa.Table, history_length: int) -> str:
    digest = hashlib.sha256(f"{SHARDS_FORMAT}:{history_length}:{log.num_rows}".encode())
    for name in log.column_names:
        values = log[name].to_numpy(zero_copy_only=False)
        digest.update(name.encode())
        digest.update(pd.util.hash_array(values, categorize=False).tobytes())
    return digest.hexdigest()[:24]


def cached_example_shards(
    split: SplitData, cache: Path, history_length: int, engine: EngineConfig
) -> ExampleShards:
    """The example shards of `split` from `cache/<shards_key>`, written there first when absent
    (atomically, so a crashed or concurrent writer never leaves half a set to reuse)."""
    started = time.perf_counter()
    log = _log_table(split)  # built once: for the key, and for the shards on a miss
    directory = Path(cache) / _log_key(log, history_length)
    if (directory / MANIFEST).exists():
        logger.info("reusing the example shards in %s (same data, split and history)", directory)
        return ExampleShards.open(directory)
    return _write_log(log, directory, history_length, engine, started)


def _num_shards(rows: int) -> int:
    return int(min(MAX_SHARDS, max(MIN_SHARDS, -(-rows // ROWS_PER_SHARD))))


def write_example_shards(
    split: SplitData, directory: Path, history_length: int, engine: EngineConfig
) -> ExampleShards:
    """Writes every interaction of `split` as an example row (see the module docstring).

    The directory is built in a temporary sibling and renamed when complete.

    Raises:
      DataError: the engine failed or ran out of memory within its limit.
    """
    started = time.perf_counter()
    return _write_log(_log_table(split), directory, history_length, engine, started)


def _write_log(
    log: pa.Table, directory: Path, history_length: int, engine: EngineConfig, started: float
) -> ExampleShards:
    """`write_example_shards` of the log table `_log_table` made (`started`: when it began)."""
    directory = Path(directory)
    split_codes, positive = log["split"].to_numpy(), log["positive"].to_numpy(zero_copy_only=False)
    counts = {
        name: {
            "rows": int(np.sum(split_codes == code)),
            "positives": int(np.sum((split_codes == code) & positive)),
        }
        for code, name in enumerate(SPLITS)
    }
    num_shards = _num_shards(log.num_rows)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with connect(engine) as connection:
            connection.register("log", log)
            sql = _examples_sql(history_length, num_shards)
            run(
                connection,
                f"COPY ({sql}) TO '{staging}' (FORMAT parquet, PARTITION_BY (split, shard), "
                "OVERWRITE_OR_IGNORE)",
                "writing the training example shards",
                engine,
            )
        manifest = {"history_length": history_length, "counts": counts, "shards": num_shards}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "wrote %d example rows in %d shards per split (history of %d) in %.1fs",
        log.num_rows,
        num_shards,
        history_length,
        time.perf_counter() - started,
    )
    return ExampleShards(directory, history_length, counts)


def read_rows(path: str, history_length: int, batch_rows: int = 65_536):
    """Yields the rows of one shard file as dicts of numpy arrays, `batch_rows` at a time.

    `history` becomes `[n, history_length]` int32, left-padded with -1 (most recent last).
    """
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        columns = dict(zip(batch.schema.names, batch.columns, strict=True))
        yield {
            "user_row": columns["user_row"].to_numpy(),
            "item_row": columns["item_row"].to_numpy(),
            "history": left_padded(columns["history"], history_length),
            "positive": columns["positive"].to_numpy(zero_copy_only=False),
            "weight": columns["weight"].to_numpy(),
            "rating": columns["rating"].to_numpy(zero_copy_only=False),
        }


def left_padded(lists: pa.ListArray, width: int) -> np.ndarray:
    """A list<int32> column as `[n, width]` int32: each list right-aligned, -1 before it."""
    out = np.full((len(lists), width), -1, dtype=np.int32)
    if width == 0 or len(lists) == 0:
        return out
    offsets = lists.offsets.to_numpy()
    lengths = np.diff(offsets)
    values = lists.flatten().to_numpy()
    rows = np.repeat(np.arange(len(lists)), lengths)
    # Position of each value counted from its list's end (-1 for the last), offsets of a sliced
    # array being relative to `offsets[0]`.
    from_end = np.arange(len(values)) + offsets[0] - np.repeat(offsets[1:], lengths)
    out[rows, width + from_end] = values
    return out
