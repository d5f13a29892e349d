"""Batch recommendations: top-k items for many users from an exported SavedModel, to a file.

Users go through `serving_default` (the baked history and exclusions of each user, exactly as
TF Serving answers) in batches. Rows `user_id, item_id, score, rank` (rank 1 = best) are appended
batch by batch to a hidden temporary file beside the output, renamed onto it only when every user
is done: memory stays bounded by one batch, and a failure leaves no partial output.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from export import contract
from export.loading import load_saved_model
from tfrs_model.errors import DataError, ExportError

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("user_id", "item_id", "score", "rank")
_PARQUET = (".parquet", ".pq")
_CSV = (".csv",)


@dataclass(frozen=True)
class BatchResult:
    """What `recommend_to_file` wrote.

    Attributes:
      users: users recommended for.
      rows: rows written (fewer than users * k when a user has fewer candidates left).
      unknown_users: users not baked into the export (answered from the OOV embedding), or None
        when the baked users could not be read.
      seconds: wall time of the recommendation loop (excluding model loading and one warm-up
        call).
    """

    path: Path
    users: int
    rows: int
    k: int
    unknown_users: int | None
    seconds: float

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds > 0 else float("inf")


def baked_user_ids(loaded: Any) -> np.ndarray | None:
    """`[U]` str: the users baked into a loaded SavedModel, in their baked order.

    Read from the module's `user_rows` lookup table; None when the module has no such table.
    """
    import tensorflow as tf

    table = getattr(loaded, "user_rows", None)
    handle = getattr(table, "resource_handle", None)
    if handle is None:
        return None
    try:
        keys, rows = tf.raw_ops.LookupTableExportV2(
            table_handle=handle, Tkeys=tf.string, Tvalues=tf.int32
        )
    except (tf.errors.OpError, TypeError, ValueError):
        return None
    order = np.argsort(rows.numpy(), kind="stable")
    return keys.numpy()[order].astype(str).astype(object)


def run_user_ids(version_dir: Path) -> np.ndarray:
    """`[U]` str: users of the training run named in the export's model card, as export bakes
    them (the users table and every user with interactions, sorted).

    Raises:
      ExportError: no model card, or its run directory is gone.
    """
    card_path = Path(version_dir) / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE
    try:
        run_dir = Path(json.loads(card_path.read_text())["run_dir"])
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise ExportError(
            f"cannot list the users of {version_dir}: {card_path} is missing or has no run_dir; "
            "pass --users FILE"
        ) from error
    data = run_dir / "data"
    try:
        users = pd.read_parquet(data / "users.parquet", columns=["user_id"])["user_id"]
        active = pd.read_parquet(data / "interactions.parquet", columns=["user_id"])["user_id"]
    except OSError as error:
        raise ExportError(
            f"cannot list the users of {version_dir}: the run {run_dir} it was exported from has "
            "no data/users.parquet; pass --users FILE"
        ) from error
    return np.array(sorted(set(users.astype(str)) | set(active.astype(str))), dtype=object)


def read_user_ids(path: Path) -> np.ndarray:
    """`[U]` str from a file: a `.csv` or `.parquet` with a `user_id` column, or plain text with one
    id per line (blank lines and lines starting with `#` skipped). Repeated ids are kept once.

    Raises:
      DataError: unreadable file, no `user_id` column, or no ids.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET:
            frame = pd.read_parquet(path)
        elif suffix in _CSV:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            lines = (line.strip() for line in path.read_text().splitlines())
            frame = pd.DataFrame({"user_id": [x for x in lines if x and not x.startswith("#")]})
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read users from {path}: {error}") from error
    if "user_id" not in frame.columns:
        raise DataError(
            f"{path} has no user_id column (it has {list(frame.columns)}); name the column "
            "user_id, or give a text file with one id per line"
        )
    ids = frame["user_id"].dropna().astype(str)
    ids = ids[ids != ""]
    if ids.empty:
        raise DataError(f"{path} lists no user ids")
    return pd.unique(ids.to_numpy(dtype=object))


class _Writer:
    """Appends result batches to a Parquet or CSV file."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._parquet = None
        self._first = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, schema=_arrow_schema(), preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            frame.to_csv(
                self.path, mode="w" if self._first else "a", header=self._first, index=False
            )
        self._first = False

    def close(self) -> None:
        if self.kind == "parquet":
            if self._parquet is None:  # no rows at all: still a valid, empty file
                self.write(_empty_frame())
            self._parquet.close()
        elif self._first:
            _empty_frame().to_csv(self.path, index=False)


def _arrow_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("score", pa.float32()),
            ("rank", pa.int32()),
        ]
    )


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=object),
            "item_id": pd.Series([], dtype=object),
            "score": pd.Series([], dtype=np.float32),
            "rank": pd.Series([], dtype=np.int32),
        }
    )


def output_kind(path: Path) -> str:
    """`parquet` or `csv` from the output's extension.

    Raises:
      DataError: any other extension.
    """
    suffix = Path(path).suffix.lower()
    if suffix in _PARQUET:
        return "parquet"
    if suffix in _CSV:
        return "csv"
    raise DataError(f"--out {path}: use a .parquet or .csv file name")


def _batches(values: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def result_rows(user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Long-format rows from one `serving_default` answer.

    Args:
      user_ids: `[B]` str.
      item_ids: `[B, k]` bytes or str; padding ("") marks missing results and is dropped.
      scores: `[B, k]` float.

    Returns:
      user_id, item_id, score, rank (1-based position in the answer) for every non-padding item.
    """
    items = np.asarray(item_ids)
    if items.dtype.kind in "SO":  # TF returns bytes (an object array of them from .numpy())
        items = np.char.decode(items.astype(bytes), "utf-8")
    batch, k = items.shape
    keep = (items != contract.PAD).reshape(-1)
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(user_ids, dtype=object), k)[keep],
            "item_id": items.reshape(-1).astype(object)[keep],
            "score": scores.reshape(-1).astype(np.float32)[keep],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), batch)[keep],
        }
    )


def recommend_to_file(
    saved_model: Path,
    out: Path,
    users: Sequence[str] | np.ndarray | None = None,
    *,
    k: int | None = None,
    batch_size: int = 1024,
    progress: bool = True,
) -> BatchResult:
    """Writes the top-`k` recommendations of `users` to `out` (.parquet or .csv).

    Args:
      saved_model: a version directory (model_base_path/<N>).
      out: the output file; replaced atomically.
      users: user ids; None means every user baked into the export (read from the SavedModel,
        else from the run named in its model card).
      k: results per user, at most the export's k; None takes the export's k.
      batch_size: users per `serving_default` call.
      progress: show a tqdm progress bar.

    Raises:
      DataError: bad `k`, `batch_size`, output name, or no users.
      ExportError: `saved_model` is not a SavedModel, or lacks `serving_default`.
    """
    import tensorflow as tf
    from tqdm import tqdm

    out = Path(out)
    kind = output_kind(out)
    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    if k is not None and k < 1:
        raise DataError(f"--k must be >= 1, got {k}")
    loaded = load_saved_model(saved_model)
    function = loaded.signatures.get(contract.SERVING_DEFAULT)
    if function is None:
        raise ExportError(f"{saved_model} has no {contract.SERVING_DEFAULT} signature")
    baked = baked_user_ids(loaded)
    if users is None:
        users = baked if baked is not None else run_user_ids(Path(saved_model))
    users = np.asarray(users, dtype=object)
    if len(users) == 0:
        raise DataError("no users to recommend for")
    unknown = None if baked is None else int((~np.isin(users, baked)).sum())
    if unknown:
        logger.warning(
            "%d of %d users are not baked into the export; they get cold-start results",
            unknown,
            len(users),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    temporary = Path(temporary)
    rows = 0
    export_k = None
    function(**{contract.USER_ID: tf.constant(users[:1].astype(str))})  # warm-up, untimed
    started = time.perf_counter()
    try:
        writer = _Writer(temporary, kind)
        with tqdm(total=len(users), unit="user", disable=not progress) as bar:
            for batch in _batches(users, batch_size):
                answer = function(**{contract.USER_ID: tf.constant(batch.astype(str))})
                item_ids = answer[contract.ITEM_IDS].numpy()
                scores = answer[contract.SCORES].numpy()
                export_k = item_ids.shape[1]
                if k is not None and k > export_k:
                    raise DataError(
                        f"--k {k} exceeds the {export_k} results the export returns per user; "
                        f"use --k {export_k} or less, or export with a larger k"
                    )
                take = export_k if k is None else k
                frame = result_rows(batch, item_ids[:, :take], scores[:, :take])
                writer.write(frame)
                rows += len(frame)
                bar.update(len(batch))
        writer.close()
        seconds = time.perf_counter() - started
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    result = BatchResult(
        path=out,
        users=len(users),
        rows=rows,
        k=k if k is not None else int(export_k),
        unknown_users=unknown,
        seconds=seconds,
    )
    logger.info(
        "wrote %d rows for %d users to %s (%.0f users/s)",
        rows,
        len(users),
        out,
        result.users_per_second,
    )
    return result
