"""Reading the files of a catalog edit: new items (with their features) and item ids to remove.

New items come as CSV or Parquet with the columns of the run's items table: `item_id`, `title`
and every item feature column the run's dataset declared (for MovieLens `genres`,
`title_tokens`, `year_bucket`). A multi-valued feature is a list per row (Parquet) or one
string of values separated by `|` (CSV). Ids to remove come as text (one id per line, blank
lines and `#` comments ignored) or as CSV/Parquet with an `item_id` column.

Every mistake is an `ExportError` naming the file, the column or row, and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tfrs_model.data.schema import FeatureColumn
from tfrs_model.errors import ExportError

ITEM_ID, TITLE = "item_id", "title"
MULTI_VALUE_SEPARATOR = "|"  # between the values of a multi-valued feature in a CSV cell
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SHOWN = 10  # ids or rows quoted in a message


def quoted(values: list | np.ndarray) -> str:
    """The first `SHOWN` values, comma-separated, with how many more there are."""
    values = [str(v) for v in values]
    more = f" (and {len(values) - SHOWN} more)" if len(values) > SHOWN else ""
    return ", ".join(values[:SHOWN]) + more


def read_table(path: Path, flag: str) -> pd.DataFrame:
    """A CSV (every column read as text) or Parquet file.

    Raises:
      ExportError: missing, of another format, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{flag} {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Text, so "007" stays "007" and a year 1995 is not read as 1995.0.
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise ExportError(f"{flag} {path} could not be read: {error}") from error
    raise ExportError(
        f"{flag} {path}: unknown format {suffix!r}; give a .csv or .parquet file"
        + (" (or a .txt of ids, one per line)" if flag == "--remove-items" else "")
    )


def _text(value: object, column: str, row: int, path: Path) -> str:
    """One scalar cell as the string the run's vocabularies hold ("" when missing)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Parquet may hold a year as 1995.0; the vocabulary has "1995"
    if isinstance(value, str | int | np.integer | np.floating | bool | np.bool_):
        return str(value)
    if isinstance(value, list | tuple | np.ndarray):
        raise ExportError(
            f"{path}: column {column!r}, row {row}: expected one value, got a list "
            f"{[str(v) for v in value]}; {column} is single-valued in this run, give one value"
        )
    raise ExportError(
        f"{path}: column {column!r}, row {row}: expected text or a number, got "
        f"{type(value).__name__} {value!r}; write a single string there"
    )


def _values(value: object, column: FeatureColumn, row: int, path: Path) -> tuple[str, ...]:
    """One multi-valued cell as a tuple of at most `max_values` strings."""
    if isinstance(value, list | tuple | np.ndarray):
        parts = [_text(v, column.name, row, path) for v in value]
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(MULTI_VALUE_SEPARATOR)]
    else:
        text = _text(value, column.name, row, path)
        parts = [text]
    # The run truncated its own items the same way (`FeatureColumn.max_values`).
    return tuple(dict.fromkeys(p for p in parts if p))[: column.max_values]


def _ids(values: pd.Series, path: Path) -> np.ndarray:
    ids = np.array(
        [_text(v, ITEM_ID, row, path).strip() for row, v in enumerate(values)], dtype=object
    )
    empty = np.flatnonzero(ids == "")
    if len(empty):
        raise ExportError(
            f"{path}: column 'item_id' is empty in row(s) {quoted(empty.tolist())} (rows count "
            "from 0, after the header); every item needs an id"
        )
    repeated = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(repeated):
        raise ExportError(
            f"{path}: item id(s) given more than once: {quoted(list(repeated))}; keep one row "
            "per item"
        )
    return ids


def read_new_items(path: Path, features: tuple[FeatureColumn, ...]) -> pd.DataFrame:
    """The new items of `path` in the run's items-table layout.

    Args:
      path: a CSV or Parquet file.
      features: the run's item feature columns (`InteractionData.item_features`).

    Returns:
      `[n rows]` with `item_id` and `title` (str) and one column per feature (str, or tuples
      of str for a multi-valued one), in file order; other columns are dropped.

    Raises:
      ExportError: the file is unreadable or empty, a column is missing, a cell has the wrong
        type, or an id is empty or repeated.
    """
    table = read_table(path, "--new-items")
    required = [ITEM_ID, TITLE, *(column.name for column in features)]
    missing = [name for name in required if name not in table.columns]
    if missing:
        multi = [c.name for c in features if c.multivalued]
        hint = (
            f"; multi-valued features ({', '.join(multi)}) are lists in Parquet or "
            f"'{MULTI_VALUE_SEPARATOR}'-separated text in CSV"
            if multi
            else ""
        )
        present = ", ".join(map(str, table.columns)) or "none"
        raise ExportError(
            f"--new-items {path} lacks column(s) {', '.join(missing)}; it needs the run's item "
            f"columns {', '.join(required)} (it has {present}){hint}"
        )
    if table.empty:
        raise ExportError(
            f"--new-items {path} has no rows; give at least one item or drop the flag"
        )
    out = {
        ITEM_ID: _ids(table[ITEM_ID], path),
        TITLE: [_text(v, TITLE, row, path) for row, v in enumerate(table[TITLE])],
    }
    for column in features:
        cells = table[column.name]
        if column.multivalued:
            out[column.name] = [_values(v, column, row, path) for row, v in enumerate(cells)]
        else:
            out[column.name] = [_text(v, column.name, row, path) for row, v in enumerate(cells)]
    return pd.DataFrame(out)


def read_item_ids(path: Path) -> np.ndarray:
    """`[n]` distinct item ids of a text file (one per line) or of a table's `item_id` column.

    Raises:
      ExportError: unreadable, empty, or a table without an `item_id` column.
    """
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        table = read_table(path, "--remove-items")
        if ITEM_ID not in table.columns:
            raise ExportError(
                f"--remove-items {path} has no 'item_id' column (it has "
                f"{', '.join(map(str, table.columns)) or 'none'}); name the id column item_id"
            )
        values = [_text(v, ITEM_ID, row, path).strip() for row, v in enumerate(table[ITEM_ID])]
    else:
        if not path.is_file():
            raise ExportError(f"--remove-items {path}: no such file")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ExportError(f"--remove-items {path} could not be read: {error}") from error
        values = [line.strip() for line in lines if not line.strip().startswith("#")]
    ids = np.array(list(dict.fromkeys(v for v in values if v)), dtype=object)
    if not len(ids):
        raise ExportError(f"--remove-items {path} holds no item id; give one id per line")
    return ids
