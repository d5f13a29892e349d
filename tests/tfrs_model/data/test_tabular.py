"""Tabular datasets from a YAML config: rules, column mapping, multi-valued features, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.tables import write_dataset

from tfrs_model.config import DataConfig
from tfrs_model.data.rules import parse_rule
from tfrs_model.data.schema import FeatureColumn
from tfrs_model.data.sources import load_data
from tfrs_model.data.tabular import load_tabular, parse_config
from tfrs_model.errors import DataError

# -- rules ------------------------------------------------------------------------------------

ENGAGEMENT = pd.DataFrame(
    {
        "likes": ["0", "2", "0", "0", None, "0"],
        "saved": ["N", "N", "Y", "N", "N", None],
        "view_count": [1, 0, 0, 3, 5, 2],
    }
)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Row by row: (likes, saved, views) = (0,N,1) (2,N,0) (0,Y,0) (0,N,3) (-,N,5) (0,-,2).
        ("likes > 0 or saved == 'Y' or view_count >= 3", [0, 1, 1, 1, 1, 0]),
        ("likes > 0", [0, 1, 0, 0, 0, 0]),  # the missing like count is not > 0
        ('saved == "Y"', [0, 0, 1, 0, 0, 0]),
        ("saved != 'Y'", [1, 1, 0, 1, 1, 0]),  # missing satisfies no comparison, != included
        ("not saved == 'Y'", [1, 1, 0, 1, 1, 1]),  # ... but `not` negates the whole comparison
        ("view_count >= 1 and likes == 0", [1, 0, 0, 1, 0, 1]),
        ("(likes > 0 or view_count > 2) and saved == 'N'", [0, 1, 0, 1, 1, 0]),
        ("view_count in (0, 5)", [0, 1, 1, 0, 1, 0]),
        ("saved not in ('Y')", [1, 1, 0, 1, 1, 0]),
        ("VIEW_COUNT >= 3", None),  # column names are case-sensitive: an error, below
        ("likes > 0 OR view_count <= -1.5e0", [0, 1, 0, 0, 0, 0]),  # keywords are not
    ],
)
def test_rule_known_answers(rule, expected):
    parsed = parse_rule(rule)
    if expected is None:
        with pytest.raises(DataError, match="VIEW_COUNT"):
            parsed.evaluate(ENGAGEMENT)
        return
    np.testing.assert_array_equal(parsed.evaluate(ENGAGEMENT), np.array(expected, dtype=bool))


def test_rule_precedence_and_columns():
    # `and` binds tighter than `or`: a or (b and c).
    rule = parse_rule("likes > 0 or saved == 'Y' and view_count > 100")
    np.testing.assert_array_equal(rule.evaluate(ENGAGEMENT), [0, 1, 0, 0, 0, 0])
    assert rule.columns == ("likes", "saved", "view_count")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("likes = 0", "use == to compare"),
        ("likes >", "expected a number or a quoted string"),
        ("likes > 0 or", "expected name"),
        ("(likes > 0", r"expected \)"),
        ("likes > 0)", "unexpected"),
        ("saved > 'Y'", "strings compare only with == or !="),
        ("__import__('os').system('x')", "unexpected '.' at position 16"),
        ("likes", "expected a comparison"),
        ("", "empty"),
        ("likes > 0; drop", "unexpected ';'"),
    ],
)
def test_bad_rules_are_data_errors(rule, message):
    with pytest.raises(DataError, match=message):
        parse_rule(rule)


def test_number_comparison_on_text_names_the_value():
    with pytest.raises(DataError, match="'saved' is compared with a number but holds 'N'"):
        parse_rule("saved > 0").evaluate(ENGAGEMENT)


# -- files ------------------------------------------------------------------------------------

INTERACTIONS = pd.DataFrame(
    {
        "viewer": ["u1", "u1", "u1", "u2", "u2", "u3", "u3", "u3"],
        "post_id": ["p1", "p2", "p3", "p1", "p3", "p2", "p3", "p4"],
        "created_at": [100, 200, 300, 150, 250, 120, 220, 320],
        "likes": [1, 0, 0, 0, 3, 0, 0, 1],
        "saved": ["N", "Y", "N", "N", "N", "N", "N", "N"],
        "view_count": [0, 0, 1, 4, 0, 0, 0, 0],
    }
)
USERS = pd.DataFrame(
    {"id": ["u1", "u2", "u3"], "country": ["FR", None, "US"], "langs": ["fr,en", "", "en"]}
)
POSTS = pd.DataFrame(
    {
        "post_id": ["p1", "p2", "p3", "p4"],
        "owner_id": ["u2", "u2", "u3", "u1"],
        "country": ["FR", "FR", "US", "DE"],
        "tags": ["cat|funny", "dog", "", "cat|dog|funny|cute"],
    }
)
# The rule keeps rows 0 (likes), 1 (saved), 3 (views), 4 (likes), 7 (likes): u1 p1, u1 p2,
# u2 p1, u2 p3, u3 p4. Rows 2, 5, 6 are negatives.
POSITIVES = [("u1", "p1"), ("u1", "p2"), ("u2", "p1"), ("u2", "p3"), ("u3", "p4")]


def _config(fmt: str, **interactions) -> dict:
    return {
        "name": "short-video",
        "interactions": {
            "path": f"stream_viewer.{fmt}",
            "columns": {"user_id": "viewer", "item_id": "post_id", "timestamp": "created_at"},
            "label": {"positive_if": "likes > 0 or saved == 'Y' or view_count >= 3"},
            "weight": {
                "default": 1.0,
                "rules": [{"if": "saved == 'Y'", "value": 3.0}, {"if": "likes > 1", "value": 2}],
            },
            **interactions,
        },
        "users": {
            "path": f"users.{fmt}",
            "columns": {"user_id": "id"},
            "features": [
                "country",
                {"name": "languages", "column": "langs", "multivalued": True},
            ],
        },
        "items": {
            "path": f"post.{fmt}",
            "columns": {"item_id": "post_id"},
            "features": [
                {"name": "owner", "column": "owner_id"},
                "country",
                {"name": "tags", "separator": "|", "max_values": 3},
            ],
        },
    }


def _write(directory: Path, fmt: str, config: dict, frames=None) -> Path:
    frames = frames or {"stream_viewer": INTERACTIONS, "users": USERS, "post": POSTS}
    return write_dataset(directory, fmt, config, frames)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_loads_short_video_tables(tmp_path, fmt):
    data = load_tabular(_write(tmp_path, fmt, _config(fmt)))

    pairs = list(zip(data.interactions["user_id"], data.interactions["item_id"], strict=True))
    assert pairs == POSITIVES  # sorted by (user, time)
    assert data.interactions["timestamp"].tolist() == [100, 200, 150, 250, 320]
    assert not data.has_ratings  # no rating mapped: every kept row is a positive
    # u1 p2 is saved (3.0); u2 p3 has 3 likes (2.0); the rest default to 1.0.
    assert data.interactions["weight"].tolist() == [1.0, 3.0, 1.0, 2.0, 1.0]
    assert data.user_features == (FeatureColumn("country"), FeatureColumn("languages", 2))
    assert data.item_features == (
        FeatureColumn("owner"),
        FeatureColumn("country"),
        FeatureColumn("tags", 3),
    )
    users = data.users.set_index("user_id")
    assert users.loc["u1", "languages"] == ("fr", "en")
    assert users.loc["u2", "languages"] == ()
    assert users.loc["u2", "country"] == ""
    items = data.items.set_index("item_id")
    assert items.loc["p1", "tags"] == ("cat", "funny")
    assert items.loc["p3", "tags"] == ()
    assert items.loc["p4", "tags"] == ("cat", "dog", "funny")  # truncated to max_values=3
    assert items.loc["p1", "owner"] == "u2"
    assert items.loc["p2", "title"] == "p2"  # no title mapped: the id
    steps = {report.step: report.removed for report in data.reports}
    rule = "likes > 0 or saved == 'Y' or view_count >= 3"
    assert steps[f"drop non-positive interactions (label.positive_if: {rule})"] == 3
    assert steps["truncate items.tags to 3 values"] == 1


def test_rating_mapping_and_derived_max_values(tmp_path):
    interactions = INTERACTIONS.assign(stars=[5, 4, 1, 2, 3, 5, 4, 1])
    config = _config(
        "csv", columns={**_config("csv")["interactions"]["columns"], "rating": "stars"}
    )
    del config["interactions"]["label"]
    del config["items"]["features"][2]["max_values"]
    frames = {"stream_viewer": interactions, "users": USERS, "post": POSTS}
    data = load_tabular(_write(tmp_path, "csv", config, frames))

    assert len(data.interactions) == 8  # no label rule: every row kept
    assert data.has_ratings
    assert sorted(data.interactions["rating"].tolist()) == [1, 1, 2, 3, 4, 4, 5, 5]
    assert dict((f.name, f.max_values) for f in data.item_features)["tags"] == 4  # the longest


def test_through_load_data(tmp_path):
    path = _write(tmp_path, "parquet", _config("parquet"))
    data = load_data(DataConfig(dataset="tabular", dataset_config=str(path)), tmp_path)
    assert len(data.interactions) == len(POSITIVES)


def test_postgres_config_without_dsn_says_how_to_set_it(tmp_path):
    path = tmp_path / "pg.yaml"
    path.write_text("source: postgres\npostgres: {dsn_env: MY_PG}\n")
    with pytest.raises(DataError, match=r"set \$MY_PG"):
        load_tabular(path, environ={})


def test_postgres_defaults_fill_the_short_video_schema():
    config = parse_config({"source": "postgres"})
    assert "FROM stream_viewer" in config.interactions.query
    assert config.interactions.label.text == "likes > 0 or saved == 'Y' or view_count >= 3"
    assert [f.name for f in config.users.features] == ["country", "languages"]
    assert config.users.features[1].multivalued
    assert "COALESCE" in config.items.query


# -- bad configs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(sourse="files"), r"unknown key\(s\) \['sourse'\]"),
        (
            lambda c: c["interactions"].update(lable={}),
            r"interactions: unknown key\(s\) \['lable'\]",
        ),
        (lambda c: c["interactions"]["columns"].update(userid="x"), r"interactions.columns"),
        (lambda c: c["interactions"].update(label={"positive_if": "likes >> 0"}), "bad rule"),
        (lambda c: c["interactions"].update(label={"positive": "x"}), r"interactions.label"),
        (lambda c: c["interactions"].update(path="x.json"), "use .csv, .parquet or .pq"),
        (lambda c: c["interactions"].update(query="SELECT 1"), "needs `source: postgres`"),
        (lambda c: c.update(source="mysql"), "source must be 'files' or 'postgres'"),
        (lambda c: c["users"]["features"].append({"name": "user_id"}), "reserved"),
        (lambda c: c["users"]["features"].append({"nam": "x"}), r"users.features\[2\]"),
        (lambda c: c["items"]["features"].append({"name": "n", "max_values": 0}), "max_values"),
        (
            lambda c: c["interactions"].update(weight={"rules": [{"if": "likes > 0"}]}),
            "needs `if: RULE` and `value: NUMBER`",
        ),
    ],
)
def test_bad_config_names_the_field(tmp_path, change, message):
    config = _config("csv")
    change(config)
    with pytest.raises(DataError, match=message):
        load_tabular(_write(tmp_path, "csv", config))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (
            {"stream_viewer": INTERACTIONS.drop(columns=["view_count"])},
            r"interactions: column\(s\) \['view_count'\] not found",
        ),
        ({"users": USERS.drop(columns=["langs"])}, r"users: column\(s\) \['langs'\] not found"),
        (
            {"stream_viewer": INTERACTIONS.assign(post_id=[None, *INTERACTIONS.post_id[1:]])},
            r"interactions.item_id \(source column 'post_id'\) has 1 NULL",
        ),
        ({"users": USERS.iloc[:0]}, "users: the file returned no rows"),
        ({"stream_viewer": INTERACTIONS.assign(likes=0, saved="N", view_count=0)}, "loosen"),
    ],
)
def test_bad_data_is_a_data_error(tmp_path, frames, message):
    all_frames = {"stream_viewer": INTERACTIONS, "users": USERS, "post": POSTS, **frames}
    with pytest.raises(DataError, match=message):
        load_tabular(_write(tmp_path, "parquet", _config("parquet"), all_frames))


def test_missing_file_names_the_table(tmp_path):
    path = _write(tmp_path, "csv", _config("csv"))
    (tmp_path / "post.csv").unlink()
    with pytest.raises(DataError, match=r"items.path: .*post.csv does not exist"):
        load_tabular(path)


def test_weights_are_finite_floats(tmp_path):
    data = load_tabular(_write(tmp_path, "csv", _config("csv")))
    assert data.interactions["weight"].dtype == np.float32
    assert all(math.isfinite(w) for w in data.interactions["weight"])
