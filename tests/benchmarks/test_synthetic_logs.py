"""benchmarks.synthetic: sizes, id format, planted structure, the project's loader, the cache."""

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks import synthetic
from benchmarks.synthetic import SyntheticLogSpec, read_marker, write_synthetic_log
from tfrs_model.config import DataConfig
from tfrs_model.data import load_data

SPEC = SyntheticLogSpec(rows=12_000, users=1_000, items=300, clusters=10, seed=7)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A small log in several blocks (chunk_rows 5000), and its three tables."""
    directory = tmp_path_factory.mktemp("synthetic") / "log"
    yaml_path = write_synthetic_log(SPEC, directory, chunk_rows=5_000, progress=False)
    return (
        yaml_path,
        pd.read_parquet(directory / "interactions.parquet"),
        pd.read_parquet(directory / "users.parquet"),
        pd.read_parquet(directory / "items.parquet"),
    )


def test_counts_and_every_user_has_three_rows(log):
    yaml_path, interactions, users, items = log
    assert len(interactions) == SPEC.rows
    assert len(users) == SPEC.users and len(items) == SPEC.items
    per_user = interactions.groupby("user_id").size()
    assert len(per_user) == SPEC.users  # every user of the table has rows ...
    assert per_user.min() >= 3  # ... at least three
    assert per_user.max() > 5 * per_user.median()  # heavy-tailed
    assert interactions["item_id"].nunique() <= SPEC.items
    assert set(interactions["item_id"]) <= set(items["item_id"])
    marker = read_marker(yaml_path.parent)
    assert marker["spec"] == SPEC.to_json() and marker["rows"] == SPEC.rows
    assert marker["blocks"] >= 2  # chunk_rows 5000 < 12000 rows
    assert pq.ParquetFile(yaml_path.parent / "interactions.parquet").num_row_groups >= 2


def test_ids_timestamps_and_likes(log):
    _, interactions, users, items = log
    assert users["user_id"].iloc[123] == "u000123"
    assert items["item_id"].iloc[45] == "i000045"
    assert interactions["user_id"].str.fullmatch(r"u\d{6}").all()
    assert interactions["item_id"].str.fullmatch(r"i\d{6}").all()
    assert interactions["timestamp"].dtype == np.int64
    span = interactions["timestamp"] - synthetic.START_TIME
    assert span.min() >= 0 and span.max() < synthetic.SPAN_SECONDS + 1_000
    assert span.max() - span.min() > 300 * 86_400  # spread over the year
    assert not interactions.duplicated(["user_id", "item_id", "timestamp"]).any()
    liked = (interactions["likes"] > 0).mean()
    assert 0.6 < liked < 0.72  # positive_if: likes > 0 keeps about two thirds
    assert users["country"].nunique() == len(synthetic.COUNTRIES) == 30


def test_planted_clusters(log):
    """Each user's interactions concentrate on one category (the cluster), which their country
    hints at; popularity is skewed inside a cluster."""
    _, interactions, users, items = log
    frame = interactions.merge(items[["item_id", "category"]], on="item_id")
    shares = frame.groupby(["user_id", "category"]).size().unstack(fill_value=0)
    top_share = (shares.max(axis=1) / shares.sum(axis=1)).mean()
    assert top_share > 0.6 > 3 / SPEC.clusters  # planted: 0.7 + a little popularity
    # The country names the favourite category (cluster % 30) for most users with enough rows.
    many = shares[shares.sum(axis=1) >= 10]
    favourite = many.idxmax(axis=1).str[1:].astype(int)
    country = users.set_index("user_id").loc[many.index, "country"]
    hinted = country.map({c: i for i, c in enumerate(synthetic.COUNTRIES)}) == favourite % 30
    assert hinted.mean() > 0.7
    # Category is the cluster, and the first tag belongs to it.
    assert (items["tags"].str.split("|").str[0].str.split("-").str[0] == items["category"]).all()
    # Zipf-like inside a cluster: the top item of a category draws several times its median.
    counts = frame.groupby(["category", "item_id"]).size()
    ratio = counts.groupby(level=0).max() / counts.groupby(level=0).median()
    assert (ratio > 3).all()


def test_loads_through_the_project_loader(log):
    yaml_path, interactions, _, _ = log
    data = load_data(DataConfig(dataset="tabular", dataset_config=str(yaml_path)), yaml_path)
    positives = int((interactions["likes"] > 0).sum())
    assert len(data.interactions) == positives == read_marker(yaml_path.parent)["positive_rows"]
    assert len(data.users) == SPEC.users and len(data.items) == SPEC.items
    assert [f.name for f in data.user_features] == ["country"]
    assert [(f.name, f.max_values) for f in data.item_features] == [("category", 0), ("tags", 3)]
    assert any("likes > 0" in str(report) for report in data.reports)


def test_same_spec_same_data_and_cache_reuse(tmp_path, log):
    _, interactions, _, _ = log
    again = write_synthetic_log(SPEC, tmp_path / "again", chunk_rows=5_000, progress=False)
    pd.testing.assert_frame_equal(
        pd.read_parquet(again.parent / "interactions.parquet"), interactions
    )
    before = {p.name: p.stat().st_mtime_ns for p in again.parent.iterdir()}
    assert synthetic.cached_log(SPEC, again.parent, chunk_rows=5_000) == again
    assert synthetic.cached_log(SPEC, again.parent) is None  # another block size: other bytes
    assert write_synthetic_log(SPEC, again.parent, chunk_rows=5_000, progress=False) == again
    assert {p.name: p.stat().st_mtime_ns for p in again.parent.iterdir()} == before  # reused


def test_another_spec_replaces_the_log_and_foreign_directories_are_refused(tmp_path):
    small = SyntheticLogSpec(rows=900, users=100, items=50, clusters=5)
    directory = tmp_path / "log"
    write_synthetic_log(small, directory, progress=False)
    bigger = SyntheticLogSpec(rows=1_200, users=100, items=50, clusters=5)
    write_synthetic_log(bigger, directory, progress=False)
    assert read_marker(directory)["spec"]["rows"] == 1_200
    assert len(pd.read_parquet(directory / "interactions.parquet")) == 1_200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]  # nothing left beside it
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a synthetic log"):
        write_synthetic_log(small, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_interaction_block", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_log(SyntheticLogSpec(900, 100, 50, 5), tmp_path / "log", progress=False)
    assert list(tmp_path.iterdir()) == []  # no half log, no temporary directory


def test_a_failed_rewrite_keeps_the_old_log(tmp_path, monkeypatch):
    directory = tmp_path / "log"
    write_synthetic_log(SyntheticLogSpec(900, 100, 50, 5), directory, progress=False)
    marker = (directory / synthetic.MARKER).read_text()
    monkeypatch.setattr(synthetic, "_dataset_yaml", lambda spec: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_synthetic_log(SyntheticLogSpec(950, 100, 50, 5), directory, progress=False)
    assert (directory / synthetic.MARKER).read_text() == marker
    assert json.loads(marker)["spec"]["rows"] == 900
    assert sorted(os.listdir(tmp_path)) == ["log"]


def test_spec_is_checked():
    with pytest.raises(ValueError, match="below 3 per user"):
        SyntheticLogSpec(rows=20, users=10, items=5)
    with pytest.raises(ValueError, match="clusters"):
        SyntheticLogSpec(rows=30, users=10, items=5, clusters=6)
    with pytest.raises(ValueError, match="int"):
        SyntheticLogSpec(rows=30.0, users=10, items=5)
