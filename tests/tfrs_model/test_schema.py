"""The normalized schema: parsing, validation and repairs of raw interaction tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfrs_model.data.schema import FeatureColumn, build_dataset, normalize_interactions
from tfrs_model.errors import DataError

# 2001-01-01T00:00:00Z in epoch seconds: 31 years of 365 days plus 8 leap days (1972..2000),
# times 86400.
Y2001 = (31 * 365 + 8) * 86_400
assert Y2001 == 978_307_200


def _frame(**columns: list) -> pd.DataFrame:
    base = {"user_id": [1, 1, 2], "item_id": [10, 11, 10], "timestamp": [3, 1, 2]}
    return pd.DataFrame({**base, **columns})


def test_normalizes_types_and_sorts_by_user_then_time():
    frame, reports = normalize_interactions(_frame(rating=[5, 3, 4]))
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "rating", "weight"]
    # Sorted by (user_id, timestamp): user 1's rows at t=1 then t=3, then user 2.
    assert frame[["user_id", "item_id", "timestamp"]].values.tolist() == [
        ["1", "11", 1],
        ["1", "10", 3],
        ["2", "10", 2],
    ]
    assert frame["rating"].tolist() == [3.0, 5.0, 4.0]
    assert frame["weight"].dtype == np.float32 and set(frame["weight"]) == {1.0}
    assert reports == []


def test_missing_rating_column_means_nan_ratings():
    frame, _ = normalize_interactions(_frame())
    assert frame["rating"].isna().all()


def test_float_ids_that_are_integers_match_their_integer_spelling():
    # Read from a file with gaps, ids can come back as 1.0; they must still be "1".
    frame, _ = normalize_interactions(_frame(user_id=[1.0, 1.0, 2.0]))
    assert sorted(set(frame["user_id"])) == ["1", "2"]


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [
        (["2001-01-01T00:00:00Z"], [Y2001]),
        # One hour east of UTC is one hour earlier in UTC.
        (["2001-01-01T00:00:00+01:00"], [Y2001 - 3600]),
        # Dates without a zone are UTC; mixed ISO-8601 shapes in one column all parse.
        (["2001-01-01", "2001-01-02 10:00:00"], [Y2001, Y2001 + 86_400 + 36_000]),
        # Numeric strings are epoch seconds.
        (["978307200", "978307201"], [Y2001, Y2001 + 1]),
    ],
)
def test_timestamps_parse_to_epoch_seconds(timestamps, expected):
    n = len(timestamps)
    frame, _ = normalize_interactions(
        pd.DataFrame({"user_id": list(range(n)), "item_id": [1] * n, "timestamp": timestamps})
    )
    assert frame.sort_values("user_id")["timestamp"].tolist() == expected


def test_datetime_column_parses_to_epoch_seconds():
    times = pd.Series([pd.Timestamp("2001-01-01"), pd.Timestamp("2001-01-01 00:00:01")])
    frame, _ = normalize_interactions(
        pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": times})
    )
    assert frame["timestamp"].tolist() == [Y2001, Y2001 + 1]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame(), "no interactions: the source is empty"),
        (
            pd.DataFrame({"user": [1], "item_id": [1], "timestamp": [1]}),
            r"missing column\(s\) \['user_id'\].*Rename the source columns",
        ),
        (_frame(rating=[5, "five", 4]), r"rating: 1 value\(s\) are not numbers \(e.g. 'five'\)"),
        (
            _frame(timestamp=["2001-01-01", "yesterday", "2001-01-02"]),
            r"timestamp: 1 value\(s\) are not times \(e.g. 'yesterday'\); use epoch seconds",
        ),
        (_frame(timestamp=[1.0, np.nan, 2.0]), "timestamp has 1 empty values"),
        (_frame(user_id=[1, None, 2]), r"user_id has 1 empty value\(s\)"),
        (_frame(weight=[1, "heavy", 1]), r"weight: 1 value\(s\) are not numbers"),
    ],
    ids=["empty", "misnamed", "rating", "timestamp", "nan-time", "empty-id", "weight"],
)
def test_bad_interactions_raise_one_clear_data_error(frame, message):
    with pytest.raises(DataError, match=message):
        normalize_interactions(frame)


DUPLICATED = pd.DataFrame(
    {"user_id": [1, 1, 1, 2], "item_id": [5, 5, 6, 5], "timestamp": [7, 7, 7, 7]}
)


def test_duplicate_rows_fail_naming_the_row_and_the_flag():
    with pytest.raises(DataError, match=r"1 duplicate .*user 1 item 5 at 7.*--drop-duplicates"):
        normalize_interactions(DUPLICATED)


def test_drop_duplicates_keeps_one_row_and_reports_the_count():
    frame, reports = normalize_interactions(DUPLICATED, drop_duplicates=True)
    assert len(frame) == 3
    assert [(r.step, r.removed, r.remaining) for r in reports] == [
        ("drop duplicate interactions", 1, 3)
    ]


def test_same_item_at_another_time_is_not_a_duplicate():
    frame, reports = normalize_interactions(
        pd.DataFrame({"user_id": [1, 1], "item_id": [5, 5], "timestamp": [1, 2]})
    )
    assert len(frame) == 2 and reports == []


GENRES = FeatureColumn("genres", max_values=3)


def test_build_dataset_adds_rows_missing_from_side_tables_and_counts_them():
    interactions = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "timestamp": [1, 2]})
    users = pd.DataFrame({"user_id": [1], "segment": ["a"]})
    items = pd.DataFrame({"item_id": [10], "title": ["Ten"], "genres": [("x", "y")]})
    data = build_dataset("t", interactions, users, items, (FeatureColumn("segment"),), (GENRES,))
    # User 2 and item 11 appear only in interactions: added with empty features.
    assert data.users.set_index("user_id")["segment"].to_dict() == {"1": "a", "2": ""}
    assert data.items.set_index("item_id")["genres"].to_dict() == {"10": ("x", "y"), "11": ()}
    # A missing title falls back to the id.
    assert data.items.set_index("item_id")["title"].to_dict() == {"10": "Ten", "11": "11"}
    assert [(r.removed, r.remaining) for r in data.reports] == [(1, 2), (1, 2)]
    assert data.summary() == {"dataset": "t", "interactions": 2, "users": 2, "items": 2}
    assert not data.has_ratings


def test_build_dataset_rejects_duplicate_item_ids():
    interactions = pd.DataFrame({"user_id": [1], "item_id": [10], "timestamp": [1]})
    items = pd.DataFrame({"item_id": [10, 10], "title": ["a", "b"]})
    with pytest.raises(DataError, match=r"items table has 1 duplicate item_id\(s\), e.g. '10'"):
        build_dataset("t", interactions, None, items)


def test_build_dataset_rejects_a_declared_feature_the_table_lacks():
    interactions = pd.DataFrame({"user_id": [1], "item_id": [10], "timestamp": [1]})
    with pytest.raises(DataError, match=r"items table is missing column\(s\) \['genres'\]"):
        build_dataset("t", interactions, None, pd.DataFrame({"item_id": [10]}), (), (GENRES,))
