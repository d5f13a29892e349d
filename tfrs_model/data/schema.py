"""The normalized in-memory schema every data source is converted to.

interactions: user_id (str), item_id (str), timestamp (int64, seconds), rating (float64, NaN when the
  source has none), weight (float32, 1.0 unless the source says otherwise).
users: user_id (str) plus one column per user feature.
items: item_id (str), title (str) plus one column per item feature.

Interaction ids may arrive as categoricals (the file reader's dictionary-encoded ids): they are
normalized on their categories, never expanded to a string per row, and `build_dataset` returns
every source's ids as categoricals over the users and items tables (`coded_ids`).

A feature column holds strings; a multi-valued one (genres, title tokens, languages) holds tuples of
strings. Every filter or repair that touches rows is counted in a `FilterReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tfrs_model.errors import DataError

logger = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "weight")


@dataclass(frozen=True)
class FeatureColumn:
    """A categorical feature column: scalar (`max_values == 0`) or multi-valued (a tuple per row)."""

    name: str
    max_values: int = 0

    @property
    def multivalued(self) -> bool:
        return self.max_values > 0


@dataclass(frozen=True)
class FilterReport:
    """How many rows one step removed (or repaired) and why."""

    step: str
    removed: int
    remaining: int

    def __str__(self) -> str:
        return f"{self.step}: {self.removed} rows affected, {self.remaining} remain"


@dataclass(frozen=True)
class InteractionData:
    """Interactions, users and items in the normalized schema (see the module docstring)."""

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    user_features: tuple[FeatureColumn, ...] = ()
    item_features: tuple[FeatureColumn, ...] = ()
    reports: tuple[FilterReport, ...] = field(default=())

    @property
    def has_ratings(self) -> bool:
        return bool(self.interactions["rating"].notna().any())

    def summary(self) -> dict[str, int | str]:
        return {
            "dataset": self.name,
            "interactions": len(self.interactions),
            "users": len(self.users),
            "items": len(self.items),
        }


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{table} table is missing column(s) {missing}; it has {list(frame.columns)}. "
            f"Rename the source columns to {list(columns)} (or map them in the dataset config)."
        )


def _parse_timestamps(values: pd.Series) -> np.ndarray:
    """Seconds since the epoch from integers, floats or date strings.

    Raises:
      DataError: some value cannot be parsed; the message shows one.
    """
    if pd.api.types.is_numeric_dtype(values):
        if values.isna().any():
            raise DataError(
                f"interactions.timestamp has {int(values.isna().sum())} empty values; "
                "every interaction needs a time for the temporal split"
            )
        return values.astype("int64").to_numpy()
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            return numeric.astype("int64").to_numpy()
        if numeric.notna().any():
            # Epoch seconds with a few broken values: name those. Parsing every value as a date
            # used to blame the valid numbers instead ("'881250949' is not a time").
            bad = numeric.isna()
            raise DataError(
                f"interactions.timestamp: {int(bad.sum())} value(s) are not epoch seconds like "
                f"the rest (e.g. {values[bad].iloc[0]!r}); use one format for the whole column, "
                "epoch seconds or ISO-8601 strings"
            )
        parsed = pd.to_datetime(values, errors="coerce", utc=True)
        # The inferred format comes from the first value, so other valid ISO-8601 shapes
        # ("2001-01-01" then "2001-01-02 10:00:00") came back as NaT; re-parse those as ISO.
        retry = parsed.isna() & values.notna()
        if retry.any():
            parsed[retry] = pd.to_datetime(
                values[retry], errors="coerce", utc=True, format="ISO8601"
            )
    bad = parsed.isna()
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(
            f"interactions.timestamp: {int(bad.sum())} value(s) are not times (e.g. {example!r}); "
            "use epoch seconds or ISO-8601 strings"
        )
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize("UTC")
    # Not `astype("int64") // 10**9`: pandas 3 parses strings at microsecond (not nanosecond)
    # resolution, which made every date string 1000x too early. Dividing by a Timedelta is
    # independent of the resolution.
    seconds = (parsed.dt.tz_convert("UTC") - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("int64").to_numpy()


def _parse_ratings(values: pd.Series) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        raise DataError(
            f"interactions.rating: {int(bad.sum())} value(s) are not numbers "
            f"(e.g. {values[bad].iloc[0]!r}); fix or drop them, or leave the column out"
        )
    return numeric.astype("float64").to_numpy()


def _parse_weights(values: pd.Series) -> np.ndarray:
    # errors="raise" let pandas' bare ValueError escape, which the CLI shows as a traceback.
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna()
    if bad.any():
        raise DataError(
            f"interactions.weight: {int(bad.sum())} value(s) are not numbers "
            f"(e.g. {values[bad].iloc[0]!r}); fix them, or leave the column out for weight 1"
        )
    return numeric.astype("float32").to_numpy()


def _string_ids(values: pd.Series, column: str) -> pd.Series:
    """Ids as strings; categorical ids stay categorical (see `_string_categories`)."""
    if values.isna().any():
        raise DataError(
            f"{column} has {int(values.isna().sum())} empty value(s); every row needs an id"
        )
    if isinstance(values.dtype, pd.CategoricalDtype):
        return _string_categories(values)
    # Integers read as floats (1.0) would otherwise become "1.0" and never match "1".
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    return values.astype(str)


def _string_categories(values: pd.Series) -> pd.Series:
    """Categorical ids with the used categories only, as sorted strings.

    Only the categories are converted (once per distinct id, not per row), as `_string_ids`
    converts plain values. Sorted categories make sorting by codes sort by the id strings, so the
    interactions come out in the same order as from string ids.
    """
    # A count instead of `remove_unused_categories` (which sorts every code) when all are used.
    if not np.bincount(values.cat.codes.to_numpy(), minlength=len(values.cat.categories)).all():
        values = values.cat.remove_unused_categories()
    categories = values.cat.categories
    if pd.api.types.is_float_dtype(categories) and (categories == categories.round()).all():
        categories = categories.astype("int64")
    strings = categories.astype(str)
    if strings.has_duplicates:
        # Two values with one text (1 and "1" in an object column): merge them, as strings would.
        return (
            values.astype(str)
            .astype("category")
            .cat.reorder_categories(strings.unique().sort_values())
        )
    values = values.cat.rename_categories(strings)
    return values.cat.reorder_categories(strings.sort_values())


def normalize_interactions(
    frame: pd.DataFrame, *, drop_duplicates: bool = False
) -> tuple[pd.DataFrame, list[FilterReport]]:
    """Converts raw interactions to the normalized schema.

    Args:
      frame: needs user_id, item_id, timestamp; rating and weight are optional.
      drop_duplicates: drop repeated (user_id, item_id, timestamp) rows instead of failing.

    Returns:
      The normalized frame sorted by (user_id, timestamp, item_id), and the reports of its repairs.

    Raises:
      DataError: empty input, missing columns, unparseable values, or duplicates.
    """
    if frame is None or len(frame) == 0:
        raise DataError("no interactions: the source is empty; check the path, table or query")
    _require_columns(frame, ("user_id", "item_id", "timestamp"), "interactions")
    out = pd.DataFrame(
        {
            "user_id": _string_ids(frame["user_id"], "interactions.user_id"),
            "item_id": _string_ids(frame["item_id"], "interactions.item_id"),
            "timestamp": _parse_timestamps(frame["timestamp"]),
            "rating": _parse_ratings(frame["rating"]) if "rating" in frame else np.nan,
            "weight": (_parse_weights(frame["weight"]) if "weight" in frame else np.float32(1.0)),
        }
    )
    reports: list[FilterReport] = []
    order = _time_order(out)
    keys = [_sort_key(out[c])[order] for c in ("user_id", "timestamp", "item_id")]
    # Sorted stably, repeats are adjacent and the first of each is the first in the source, the
    # row `DataFrame.duplicated` keeps; numpy instead of pandas: 6x faster at 25M rows.
    repeat = np.zeros(len(out), dtype=bool)
    repeat[1:] = np.logical_and.reduce([key[1:] == key[:-1] for key in keys])
    if repeat.any():
        count = int(repeat.sum())
        if not drop_duplicates:
            row = out.iloc[int(order[repeat].min())]
            raise DataError(
                f"interactions has {count} duplicate (user_id, item_id, timestamp) row(s), e.g. "
                f"user {row.user_id} item {row.item_id} at {row.timestamp}; deduplicate the "
                "source or pass --drop-duplicates"
            )
        order = order[~repeat]
        reports.append(FilterReport("drop duplicate interactions", count, len(order)))
    return out.take(order).reset_index(drop=True), reports


def _sort_key(values: pd.Series) -> np.ndarray:
    """Integers that sort like `values`: the codes of sorted categories, else sorted factors."""
    if (
        isinstance(values.dtype, pd.CategoricalDtype)
        and values.cat.categories.is_monotonic_increasing
    ):
        return values.cat.codes.to_numpy()
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy()
    return pd.factorize(values, sort=True)[0]


def _time_order(frame: pd.DataFrame) -> np.ndarray:
    """`[n]` rows of `frame` in stable (user_id, timestamp, item_id) order.

    One stable argsort of the three keys packed into an int64 when they fit (they do for logs of
    millions of users over years of seconds), else one pass per key, last key first.
    """
    user, time, item = (_sort_key(frame[c]) for c in ("user_id", "timestamp", "item_id"))
    if len(frame) == 0:
        return np.arange(0)
    time = time - time.min()
    bits = [max(1, int(key.max()).bit_length()) for key in (user, time, item)]
    if sum(bits) <= 63:
        packed = (user.astype(np.int64) << (bits[1] + bits[2])) | (time << bits[2]) | item
        return np.argsort(packed, kind="stable")
    order = np.argsort(item, kind="stable")
    for key in (time, user):
        order = order[np.argsort(key[order], kind="stable")]
    return order


def _fill_missing_rows(
    table: pd.DataFrame, key: str, ids: pd.Series, defaults: dict[str, object], name: str
) -> tuple[pd.DataFrame, FilterReport | None]:
    """Adds rows for ids the interactions use but the table lacks, with empty features."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        # The ids in order of first use, as `unique()` of strings: with an empty table,
        # `difference` keeps that order (it sorts otherwise), and so do the added rows.
        used = ids.cat.categories[pd.unique(ids.cat.codes.to_numpy())]
    else:
        used = ids.unique()
    missing = pd.Index(used).difference(pd.Index(table[key]))
    if len(missing) == 0:
        return table, None
    extra = pd.DataFrame({key: missing.astype(str)})
    for column, value in defaults.items():
        extra[column] = [value] * len(extra) if isinstance(value, tuple) else value
    table = pd.concat([table, extra], ignore_index=True)
    logger.warning(
        "%d %s ids appear only in interactions; added with empty features", len(missing), name
    )
    return table, FilterReport(
        f"add {name}s missing from the {name} table", len(missing), len(table)
    )


def coded_ids(frame: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `user_id` and `item_id` as categoricals over the users and items tables.

    Each id is then an int32 code (its row in the side table, `.cat.codes`) and the strings exist
    once, in the side tables: a log of N interactions holds 8N bytes of ids, not N Python string
    pairs. Every id must be in its table (`build_dataset` adds the missing ones first).
    """
    out = frame.copy(deep=False)
    out["user_id"] = pd.Categorical(out["user_id"], categories=pd.Index(users["user_id"]))
    out["item_id"] = pd.Categorical(out["item_id"], categories=pd.Index(items["item_id"]))
    return out


def id_rows(values: pd.Series, table_ids: pd.Series) -> np.ndarray:
    """`[n]` int32 rows of `values` in `table_ids` (-1 for an id the table lacks).

    Categorical ids over the table (as `build_dataset` makes them) are their codes already; other
    ids are looked up once.
    """
    if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.categories.equals(
        pd.Index(table_ids)
    ):
        return values.cat.codes.to_numpy(dtype=np.int32)
    return pd.Index(table_ids).get_indexer(values).astype(np.int32)


def build_dataset(
    name: str,
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    user_features: tuple[FeatureColumn, ...] = (),
    item_features: tuple[FeatureColumn, ...] = (),
    *,
    drop_duplicates: bool = False,
) -> InteractionData:
    """Validates and assembles an `InteractionData` from three frames.

    Users or items that interactions mention but the side tables lack are added with empty
    features (and counted), so cold rows still get embeddings from the out-of-vocabulary buckets.

    Raises:
      DataError: see `normalize_interactions`; also duplicate ids in the user or item table.
    """
    frame, reports = normalize_interactions(interactions, drop_duplicates=drop_duplicates)
    users = pd.DataFrame({"user_id": []}) if users is None else users.copy()
    items = pd.DataFrame({"item_id": [], "title": []}) if items is None else items.copy()
    _require_columns(users, ("user_id", *(f.name for f in user_features)), "users")
    _require_columns(items, ("item_id", *(f.name for f in item_features)), "items")
    users["user_id"] = _string_ids(users["user_id"], "users.user_id")
    items["item_id"] = _string_ids(items["item_id"], "items.item_id")
    if "title" not in items:
        items["title"] = items["item_id"]
    for table, key in ((users, "user_id"), (items, "item_id")):
        dup = table[key].duplicated()
        if dup.any():
            raise DataError(
                f"{key[:-3]}s table has {int(dup.sum())} duplicate {key}(s), e.g. "
                f"{table[key][dup].iloc[0]!r}; each id must appear once"
            )
    user_defaults = {f.name: (() if f.multivalued else "") for f in user_features}
    item_defaults = {"title": "", **{f.name: (() if f.multivalued else "") for f in item_features}}
    users, user_report = _fill_missing_rows(
        users, "user_id", frame["user_id"], user_defaults, "user"
    )
    items, item_report = _fill_missing_rows(
        items, "item_id", frame["item_id"], item_defaults, "item"
    )
    reports += [r for r in (user_report, item_report) if r is not None]
    items.loc[items["title"].isna() | (items["title"] == ""), "title"] = items["item_id"]
    for report in reports:
        logger.info("%s", report)
    users, items = users.reset_index(drop=True), items.reset_index(drop=True)
    return InteractionData(
        name=name,
        interactions=coded_ids(frame, users, items),
        users=users,
        items=items,
        user_features=tuple(user_features),
        item_features=tuple(item_features),
        reports=tuple(reports),
    )
