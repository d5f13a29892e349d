"""Histories, training examples and vocabularies are built from the past only.

Hand-checked cases first, then a property test over random interaction logs (ties in time,
repeated items, users of any length, both split schemes) that compares every history of the
example shards the columnar engine writes with a brute-force reference and checks that nothing
from validation or test reaches training. Hand-checked shard histories with ties are in
test_shards.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tfrs_model.config import DataConfig, ModelConfig
from tfrs_model.data.schema import FeatureColumn, build_dataset
from tfrs_model.data.splits import SPLITS, TEST, TRAIN, VALIDATION, assign_splits
from tfrs_model.errors import DataError
from tfrs_model.features.engine import EngineConfig
from tfrs_model.features.examples import item_sampling_probability, snapshot_queries
from tfrs_model.features.history import latest_history
from tfrs_model.features.shards import read_rows, write_example_shards
from tfrs_model.features.spec import HISTORY, ITEM_ID, USER_ID
from tfrs_model.features.tables import FeatureTables
from tfrs_model.features.vocabulary import build_feature_set


def _log(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True)


# ---- hand-checked -----------------------------------------------------------------------------


def test_latest_history_is_the_last_items_and_pads_unknown_users():
    frame = _log([("a", "p", 1), ("a", "q", 2), ("a", "r", 3), ("b", "x", 1)])
    history = latest_history(frame, np.array(["a", "b", "new"]), 2)
    assert history.tolist() == [["q", "r"], ["", "x"], ["", ""]]


# ---- the leakage property -------------------------------------------------------------------

HISTORY_LENGTH = 3
SEGMENT = FeatureColumn("segment")
TAGS = FeatureColumn("tags", max_values=2)


@st.composite
def interaction_logs(draw) -> pd.DataFrame:
    """Up to 6 users with 1-12 interactions each over 8 items and 10 seconds (so ties and
    re-interactions with an item at another time are common); ratings 1-5."""
    rows = []
    for user in range(draw(st.integers(1, 6))):
        events = draw(
            st.lists(
                st.tuples(st.integers(0, 7), st.integers(0, 9), st.integers(1, 5)),
                min_size=1,
                max_size=12,
                unique_by=lambda e: (e[0], e[1]),  # (item, time) unique: no duplicate rows
            )
        )
        rows += [(f"u{user}", f"i{item}", time, rating) for item, time, rating in events]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def _dataset(log: pd.DataFrame):
    # Side features derived from the ids, so a value's presence in a vocabulary tells which
    # users or items it came from.
    users = pd.DataFrame({"user_id": sorted(set(log["user_id"]))})
    users["segment"] = "seg-" + users["user_id"]
    items = pd.DataFrame({"item_id": sorted(set(log["item_id"]))})
    items["tags"] = [("tag-" + i, "any") for i in items["item_id"]]
    return build_dataset("random", log, users, items, (SEGMENT,), (TAGS,))


def _expected_history(past: pd.DataFrame) -> list[str]:
    """Reference: the last HISTORY_LENGTH items of `past` in time order, left-padded."""
    items = past.sort_values(["timestamp", "item_id"])["item_id"].tolist()[-HISTORY_LENGTH:]
    return [""] * (HISTORY_LENGTH - len(items)) + items


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(
    log=interaction_logs(),
    scheme=st.sampled_from(["per-user", "global-time"]),
    test_fraction=st.sampled_from([0.2, 0.34, 0.5]),
    validation_fraction=st.sampled_from([0.2, 0.34, 0.5]),
    min_rating=st.sampled_from([None, 3.0]),
)
def test_nothing_from_validation_or_test_reaches_training(
    log, scheme, test_fraction, validation_fraction, min_rating, tmp_path_factory
):
    data_config = DataConfig(
        split=scheme,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        min_positive_rating=min_rating,
        history_length=HISTORY_LENGTH,
    )
    try:
        split = assign_splits(_dataset(log), data_config)
    except DataError:
        assume(False)  # a split without positives: rejected with a clear error, not our case
    frame = split.interactions
    train = frame[frame["split"] == TRAIN]
    features = build_feature_set(split, ModelConfig(), data_config)
    tables = FeatureTables(split.data)

    # 1. Vocabularies come from training interactions only.
    assert set(features.get(USER_ID).vocabulary) == set(train["user_id"])
    assert set(features.get(ITEM_ID).vocabulary) == set(train["item_id"])
    assert features.get(HISTORY).vocabulary == features.get(ITEM_ID).vocabulary
    assert set(features.get("segment").vocabulary) == {"seg-" + u for u in set(train["user_id"])}
    assert set(features.get("tags").vocabulary) == {"tag-" + i for i in set(train["item_id"])} | {
        "any"
    }

    # 2. The training rows of the example shards are exactly the training interactions, and
    # each history is that user's training items with a strictly earlier timestamp.
    shards = write_example_shards(
        split, tmp_path_factory.mktemp("shards") / "s", HISTORY_LENGTH, EngineConfig(threads=1)
    )
    users = split.data.users["user_id"].astype(str).to_numpy()
    items = np.append(split.data.items["item_id"].astype(str).to_numpy(), "")  # row -1 -> ""
    examples = sorted(
        (users[user], items[item], tuple(items[history]), positive)
        for path in shards.files((TRAIN,))
        for chunk in read_rows(path, HISTORY_LENGTH)
        for user, item, history, positive in zip(
            chunk["user_row"], chunk["item_row"], chunk["history"], chunk["positive"], strict=True
        )
    )
    expected = sorted(
        (
            target.user_id,
            target.item_id,
            tuple(
                _expected_history(
                    train[
                        (train["user_id"] == target.user_id)
                        & (train["timestamp"] < target.timestamp)
                    ]
                )
            ),
            target.positive,
        )
        for target in train.astype({"user_id": str, "item_id": str}).itertuples()
    )
    assert examples == expected
    # The logQ probabilities count training positives only.
    targets = train[train["positive"]]
    counts = targets["item_id"].astype(str).value_counts()
    probability = item_sampling_probability(split)
    probability.index = probability.index.astype(str)
    pd.testing.assert_series_equal(
        probability.sort_index(), (counts / counts.sum()).sort_index(), check_names=False
    )

    # 3. Evaluation snapshots: each user's history is their last items known before the split,
    # and every known interaction precedes the user's first interaction in the split.
    for target_split, known_splits in ((VALIDATION, {TRAIN}), (TEST, {TRAIN, VALIDATION})):
        target_rows = frame[frame["split"] == target_split]
        users = np.array(sorted(set(target_rows["user_id"])), dtype=object)
        if len(users) == 0:
            continue
        snapshot = snapshot_queries(split, features, tables, target_split, users)
        for row, user in enumerate(users):
            known = frame[(frame["user_id"] == user) & frame["split"].isin(known_splits)]
            assert snapshot[HISTORY][row].tolist() == _expected_history(known)
            first = target_rows[target_rows["user_id"] == user]["timestamp"].min()
            if scheme == "global-time":
                # One cut in time for everyone: the past is strictly earlier.
                assert (known["timestamp"] < first).all()
            else:
                # Per user, by rank: an interaction in the same second as the user's first
                # evaluated one may fall on either side; nothing later can be known.
                assert (known["timestamp"] <= first).all()

    # 4. Every interaction is in exactly one split.
    assert set(frame["split"]) <= set(SPLITS)
    assert len(frame) == len(log)


def test_vocabularies_ignore_items_first_seen_after_training():
    # Per-user split of one user with 10 interactions: the last 2 (items i8, i9) are test and
    # floor(8 * 0.25) = 2 (i6, i7) validation, so only i0..i5 may be in the vocabulary.
    log = pd.DataFrame(
        {"user_id": ["u"] * 10, "item_id": [f"i{n}" for n in range(10)], "timestamp": range(10)}
    )
    config = DataConfig(validation_fraction=0.25, history_length=2)
    split = assign_splits(build_dataset("t", log, None, None), config)
    features = build_feature_set(split, ModelConfig(), config)
    assert features.get(ITEM_ID).vocabulary == tuple(f"i{n}" for n in range(6))
    assert features.get(USER_ID).vocabulary == ("u",)


@pytest.mark.parametrize("use_history", [True, False])
def test_history_feature_follows_the_switches(use_history):
    log = pd.DataFrame({"user_id": ["u"] * 10, "item_id": range(10), "timestamp": range(10)})
    config = DataConfig(validation_fraction=0.25, history_length=4)
    split = assign_splits(build_dataset("t", log, None, None), config)
    features = build_feature_set(split, ModelConfig(use_history=use_history), config)
    assert (HISTORY in features.names("query")) is use_history
    if use_history:
        assert features.get(HISTORY).max_values == 4
