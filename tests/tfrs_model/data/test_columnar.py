"""Files read by the columnar engine give what the pandas reader gave: known answers, errors.

`known_tabular.json` holds the output of the chunked pandas reader (the implementation before the
engine) on the logs below, captured once; the engine must reproduce it row for row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.tables import write_dataset

from tfrs_model.config import DataConfig
from tfrs_model.data.schema import InteractionData
from tfrs_model.data.tabular import load_tabular
from tfrs_model.errors import DataError

KNOWN = json.loads((Path(__file__).parent / "known_tabular.json").read_text())

# Users u1..u5 and "007" interact; u9 exists only in the users table, "007" only in interactions.
# Items p1..p5; p9 exists only in the items table, p5 only in interactions. The last row repeats
# row 0 (same user, item and time) with other engagement. Missing values: likes (rows 3, 9),
# saved (row 5), kind (row 7), score (rows 2, 8).
LOG = pd.DataFrame(
    {
        "viewer": ["u1", "u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4", "007", "u5", "u1"],
        "post_id": ["p1", "p2", "p3", "p1", "p5", "p2", "p4", "p4", "p3", "p1", "p2", "p1"],
        "created_at": [100, 200, 300, 150, 250, 120, 220, 320, 90, 400, 10, 100],
        "likes": [1, 0, 2, None, 3, 0, 0, 5, 0, None, 0, 4],
        "saved": ["N", "Y", "N", "N", "Y", None, "N", "N", "Y", "Y", "N", "Y"],
        "kind": [
            *("video", "ad", "video", "live", "video", "video", "spam", None, "live", "live"),
            *("live", "video"),
        ],
        "score": [0.5, 1.5, None, 2.0, 0.25, 3.0, 0.5, 1.0, None, 0.0, 4.0, 0.5],
    }
)
USERS = pd.DataFrame(
    {
        "id": ["u1", "u2", "u3", "u4", "u5", "u9"],
        "country": ["FR", None, "US", "", "DE", "BR"],
        "langs": ["fr,en", "", "en, en,fr", None, "de,,en", "pt"],
    }
)
POSTS = pd.DataFrame(
    {
        "post_id": ["p1", "p2", "p3", "p4", "p9"],
        "caption": ["Cats", "", None, "Dogs", "Ghost"],
        "category": ["pets", "pets", None, "news", "misc"],
        "tags": ["cat|funny", "dog", "", "cat|dog|funny|cute", None],
    }
)
LABEL = "(likes > 0 or saved == 'Y') and not kind in ('ad', 'spam') or score >= 3 or kind == 'live'"
WEIGHTS = [
    {"if": "saved == 'Y' and likes >= 2", "value": 3.0},
    {"if": "kind != 'video' and not score < 1", "value": 0.5},
    {"if": "likes in (1, 3) or saved not in ('N')", "value": 2},
]


def _config(fmt: str) -> dict:
    return {
        "name": "equivalence",
        "interactions": {
            "path": f"log.{fmt}",
            "columns": {"user_id": "viewer", "item_id": "post_id", "timestamp": "created_at"},
            "label": {"positive_if": LABEL},
            "weight": {"default": 1.0, "rules": WEIGHTS},
        },
        "users": {
            "path": f"users.{fmt}",
            "columns": {"user_id": "id"},
            "features": ["country", {"name": "languages", "column": "langs", "multivalued": True}],
        },
        "items": {
            "path": f"posts.{fmt}",
            "columns": {"item_id": "post_id", "title": "caption"},
            "features": ["category", {"name": "tags", "separator": "|", "max_values": 2}],
        },
    }


def _ratings_config(fmt: str) -> dict:
    """No label, no side tables, a rating column and ISO-8601 times."""
    return {
        "name": "ratings",
        "interactions": {
            "path": f"log.{fmt}",
            "columns": {
                "user_id": "viewer",
                "item_id": "post_id",
                "timestamp": "when",
                "rating": "stars",
            },
        },
    }


RATINGS_LOG = pd.DataFrame(
    {
        "viewer": ["b", "a", "a", "c", "b"],
        "post_id": ["x", "y", "x", "z", "z"],
        "when": ["2024-01-02", "2024-01-01 10:00:00", "2024-01-03", "2024-02-01", "2023-12-31"],
        "stars": [5, 3.5, None, 1, 4],
    }
)
# Typed Parquet columns: integer and float ids (the float ones integral), a boolean compared with
# text, and a float column whose NaN is a missing value.
TYPED_LOG = pd.DataFrame(
    {
        "user": np.array([3, 1, 2, 1, 3, 2], dtype=np.int64),
        "item": [10.0, 20.0, 10.0, 30.0, 30.0, 20.0],
        "t": np.array([5, 6, 7, 8, 9, 10], dtype=np.int64),
        "flag": [True, False, True, False, False, True],
        "dwell": [np.nan, 2.5, 0.0, 7.0, np.nan, 1.0],
    }
)
TYPED_USERS = pd.DataFrame({"user": ["1", "2", "4"], "segment": ["a", "b", "c"]})


def _typed_config() -> dict:
    return {
        "name": "typed",
        "interactions": {
            "path": "log.parquet",
            "columns": {"user_id": "user", "item_id": "item", "timestamp": "t"},
            "label": {
                "positive_if": "flag == 'True' or dwell > 1 and not dwell < 5 or not dwell >= 0 and flag != 'True'"
            },
            "weight": {"rules": [{"if": "dwell >= 2", "value": 4.0}]},
        },
        "users": {"path": "users.parquet", "features": ["segment"], "columns": {"user_id": "user"}},
    }


CASES = {
    "short_video": (_config, {"log": LOG, "users": USERS, "posts": POSTS}),
    "ratings": (_ratings_config, {"log": RATINGS_LOG}),
}


def _plain(value):
    """A JSON value for one cell: tuples as lists, NaN as None, numpy scalars as Python's."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def snapshot(data: InteractionData) -> dict:
    """Everything a caller can observe of `data`, as JSON values (ids as their strings)."""

    def rows(frame: pd.DataFrame) -> list[list]:
        return [[_plain(v) for v in row] for row in frame.astype(object).itertuples(index=False)]

    interactions = data.interactions
    return {
        "interactions": rows(interactions),
        "columns": list(interactions.columns),
        "dtypes": [str(interactions[c].dtype) for c in ("timestamp", "rating", "weight")],
        "user_codes": interactions["user_id"].cat.codes.tolist(),
        "item_codes": interactions["item_id"].cat.codes.tolist(),
        "users": rows(data.users),
        "user_columns": list(data.users.columns),
        "items": rows(data.items),
        "item_columns": list(data.items.columns),
        "user_features": [[f.name, f.max_values] for f in data.user_features],
        "item_features": [[f.name, f.max_values] for f in data.item_features],
        "reports": [[r.step, r.removed, r.remaining] for r in data.reports],
    }


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_reproduces_the_pandas_reader(tmp_path, case, fmt):
    make_config, frames = CASES[case]
    path = write_dataset(tmp_path, fmt, make_config(fmt), frames)
    assert snapshot(load_tabular(path, DataConfig(drop_duplicates=True))) == KNOWN[f"{case}-{fmt}"]


def test_typed_parquet_columns(tmp_path):
    frames = {"log": TYPED_LOG, "users": TYPED_USERS}
    path = write_dataset(tmp_path, "parquet", _typed_config(), frames)
    assert snapshot(load_tabular(path)) == KNOWN["typed-parquet"]


# -- errors -----------------------------------------------------------------------------------


def _short_video(tmp_path: Path, fmt: str, log: pd.DataFrame, **label) -> Path:
    config = _config(fmt)
    config["interactions"].update(label)
    return write_dataset(tmp_path, fmt, config, {"log": log, "users": USERS, "posts": POSTS})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rule_on_an_unknown_column_names_it(tmp_path, fmt):
    path = _short_video(tmp_path, fmt, LOG, label={"positive_if": "likes > 0 or shares > 2"})
    with pytest.raises(DataError, match=r"interactions: column\(s\) \['shares'\] not found"):
        load_tabular(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_text_compared_with_a_number_names_rule_column_and_value(tmp_path, fmt):
    # Only a negative row holds the text: every row is checked, as before.
    log = LOG.assign(likes=[*LOG.likes[:6].astype(object), "many", *LOG.likes[7:]])
    path = _short_video(tmp_path, fmt, log.astype({"likes": str}).replace({"nan": None}))
    with pytest.raises(
        DataError, match=r"column 'likes' is compared with a number but holds 'many'"
    ):
        load_tabular(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unreadable_file_is_a_data_error(tmp_path, fmt):
    path = _short_video(tmp_path, fmt, LOG)
    (tmp_path / f"log.{fmt}").write_bytes(
        b"PAR1 not a table\n\x00\x01" if fmt == "parquet" else b"viewer,post_id\n\xff\xfe,p1\n"
    )
    with pytest.raises(DataError, match=r"cannot read interactions from .*log\."):
        load_tabular(path)


def test_duplicates_without_drop_name_the_first(tmp_path):
    with pytest.raises(DataError, match=r"1 duplicate .* user u1 item p1 at 100"):
        load_tabular(_short_video(tmp_path, "csv", LOG))


def test_null_id_in_a_negative_row_is_still_an_error(tmp_path):
    log = LOG.assign(viewer=[*LOG.viewer[:6], None, *LOG.viewer[7:]])  # row 6 is a negative
    with pytest.raises(DataError, match=r"interactions.user_id \(source column 'viewer'\) has 1"):
        load_tabular(_short_video(tmp_path, "parquet", log))
