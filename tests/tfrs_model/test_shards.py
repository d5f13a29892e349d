"""Example shards written by the columnar engine: known answers by hand, and equality with the
in-memory (pandas) history builder on a synthetic log."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pytest

from tfrs_model.config import DataConfig
from tfrs_model.data.splits import SPLITS, TEST, TRAIN, VALIDATION, assign_splits
from tfrs_model.data.synthetic import make_synthetic
from tfrs_model.errors import DataError
from tfrs_model.features.engine import EngineConfig
from tfrs_model.features.shards import (
    ExampleShards,
    left_padded,
    read_rows,
    write_example_shards,
)

ENGINE = EngineConfig(memory_limit_gb=1.0, threads=2)


def _rows(shards: ExampleShards, splits=SPLITS) -> pd.DataFrame:
    parts = [
        pd.DataFrame({**{k: v for k, v in chunk.items() if k != "history"}}).assign(
            history=list(chunk["history"])
        )
        for path in shards.files(splits)
        for chunk in read_rows(path, shards.history_length)
    ]
    return pd.concat(parts, ignore_index=True)


def test_left_padded_right_aligns_each_list_with_minus_one_before():
    lists = pa.array([[5, 6, 7], [], [8], [1, 2, 3, 4]], pa.list_(pa.int32()))
    expected = [[-1, 5, 6, 7], [-1, -1, -1, -1], [-1, -1, -1, 8], [1, 2, 3, 4]]
    assert left_padded(lists, 4).tolist() == expected
    # A slice keeps offsets relative to the parent array.
    assert left_padded(lists.slice(2, 2), 4).tolist() == expected[2:]


# User a: i1@1, i2@2, then i3 and i4 both @3 (a tie), i5@4; user b: i5@1.
TIED_LOG = [
    ("a", "i1", 1, TRAIN, True),
    ("a", "i2", 2, TRAIN, True),
    ("a", "i3", 3, TRAIN, False),
    ("a", "i4", 3, VALIDATION, True),
    ("a", "i5", 4, TEST, True),
    ("b", "i5", 1, TRAIN, True),
]


def test_histories_by_hand_with_ties(tmp_path, split_data):
    # User a: i1@1, i2@2, then i3 and i4 both @3 (a tie: they do not see each other), i5@4.
    # Catalog rows: i1..i5 -> 0..4 (sorted ids). History length 2.
    split = split_data(TIED_LOG)
    shards = write_example_shards(split, tmp_path / "shards", 2, ENGINE)
    rows = _rows(shards).sort_values(["user_row", "item_row"]).reset_index(drop=True)
    histories = {(int(r.user_row), int(r.item_row)): r.history.tolist() for r in rows.itertuples()}
    assert histories == {
        (0, 0): [-1, -1],  # a's first interaction: nothing before
        (0, 1): [-1, 0],  # i2 sees i1
        (0, 2): [0, 1],  # i3 @3 sees i1, i2, not its tie i4
        (0, 3): [0, 1],  # i4 @3 sees i1, i2, not its tie i3
        (0, 4): [2, 3],  # i5 @4: the last two before it (i3, i4 in row order)
        (1, 4): [-1, -1],
    }
    assert shards.counts == {
        TRAIN: {"rows": 4, "positives": 3},
        VALIDATION: {"rows": 1, "positives": 1},
        TEST: {"rows": 1, "positives": 1},
    }
    assert shards.num_examples((TRAIN, VALIDATION)) == 4
    assert ExampleShards.open(tmp_path / "shards") == shards
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]  # no staging left


@pytest.mark.parametrize("history_length", [0, 5])
def test_shards_equal_a_brute_force_reference_on_a_synthetic_log(tmp_path, history_length):
    data = make_synthetic(num_users=80, num_items=60, interactions_per_user=15, seed=4)
    split = assign_splits(data, DataConfig(history_length=history_length))
    shards = write_example_shards(split, tmp_path / "s", history_length, ENGINE)
    rows = _rows(shards)
    assert len(rows) == len(split.interactions)

    # Reference: per interaction, the user's items at strictly earlier times, in (time, item row)
    # order, the last `history_length` of them, left-padded with -1.
    frame = split.interactions
    user_rows = frame["user_id"].cat.codes.to_numpy()
    item_rows = frame["item_id"].cat.codes.to_numpy()
    times = frame["timestamp"].to_numpy()
    expected = {}
    for user, item, time in zip(user_rows, item_rows, times, strict=True):
        mine = (user_rows == user) & (times < time)
        past = sorted(zip(times[mine], item_rows[mine], strict=True))[-history_length:]
        if history_length == 0:
            past = []
        history = [-1] * (history_length - len(past)) + [int(i) for _, i in past]
        expected[(int(user), int(item), int(time))] = history
    time_of = dict(zip(zip(user_rows, item_rows, strict=True), times, strict=True))
    for row in rows.itertuples():
        time = time_of[(row.user_row, row.item_row)]
        assert row.history.tolist() == expected[(row.user_row, row.item_row, int(time))]


def test_a_tiny_memory_limit_spills_instead_of_failing(tmp_path):
    # 40K rows with 20-item histories do not fit 20 MB of engine memory: DuckDB spills to disk.
    data = make_synthetic(num_users=2_000, num_items=500, interactions_per_user=20, seed=1)
    split = assign_splits(data, DataConfig())
    spill = tmp_path / "spill"
    engine = EngineConfig(memory_limit_gb=0.02, threads=1, temp_directory=str(spill))
    shards = write_example_shards(split, tmp_path / "s", 20, engine)
    assert shards.num_examples(SPLITS, positives_only=False) == len(split.interactions)


def test_ids_missing_from_the_tables_are_refused(tmp_path, split_data):
    split = split_data([("a", "i1", 1, TRAIN, True)])
    broken = split.interactions.assign(item_id=pd.Series(["zz"]))
    with pytest.raises(DataError, match="missing from their tables"):
        write_example_shards(type(split)(broken, split.data, ()), tmp_path / "s", 2, ENGINE)


def test_engine_queries_report_their_progress_in_percent(caplog):
    from tfrs_model.features.engine import connect, query_progress

    query = (
        "COPY (SELECT list(i) OVER (PARTITION BY i % 1000 ORDER BY i ROWS 20 PRECEDING) "
        "FROM range(4000000) t(i)) TO '/dev/null' (FORMAT csv)"
    )
    with (
        caplog.at_level(logging.INFO, logger="tfrs_model.features.engine"),
        connect(EngineConfig(threads=1)) as connection,
        query_progress(connection, "windows", poll_s=0.05, log_every_s=0.0),
    ):
        connection.execute(query)
    lines = [record.getMessage() for record in caplog.records]
    assert lines, "a query of a few seconds reports its progress"
    assert all(line.startswith("windows: ") and "/100 %, " in line for line in lines)


def test_the_shards_cache_reuses_shards_of_the_same_data_only(tmp_path, split_data):
    from tfrs_model.features.shards import cached_example_shards, shards_key

    split_data = split_data(TIED_LOG)
    cache = tmp_path / "cache"
    first = cached_example_shards(split_data, cache, 2, ENGINE)
    manifest = (first.directory / "manifest.json").stat().st_mtime_ns
    again = cached_example_shards(split_data, cache, 2, ENGINE)
    assert again.directory == first.directory
    assert (again.directory / "manifest.json").stat().st_mtime_ns == manifest  # not rewritten
    assert again.counts == first.counts and again.files((TRAIN,)) == first.files((TRAIN,))
    # Another history length, or another split of the same log, is another set of shards.
    assert shards_key(split_data, 3) != shards_key(split_data, 2)
    relabelled = split_data.with_validation_as_train()
    assert shards_key(relabelled, 2) != shards_key(split_data, 2)
    assert len(list(cache.iterdir())) == 1
