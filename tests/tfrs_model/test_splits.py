"""Temporal splits and the positive rule, on logs small enough to label by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from tfrs_model.config import DataConfig
from tfrs_model.data.schema import build_dataset
from tfrs_model.data.splits import TEST, TRAIN, VALIDATION, assign_splits
from tfrs_model.errors import DataError


def _data(rows: list[tuple[str, str, int, float]]):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return build_dataset("t", frame, None, None)


def _labels(split, user: str) -> list[str]:
    frame = split.interactions
    return frame[frame["user_id"] == user]["split"].tolist()


# User "a": 10 interactions at t=1..10 (rating 5); user "b": 3 interactions (rating 4).
LOG = [("a", f"i{t}", t, 5.0) for t in range(1, 11)] + [("b", f"j{t}", t, 4.0) for t in (1, 2, 3)]


def test_per_user_split_holds_out_the_latest_of_each_user():
    config = DataConfig(test_fraction=0.2, validation_fraction=0.25)
    split = assign_splits(_data(LOG), config)
    # a: floor(10 * 0.2) = 2 test (t=9, 10); floor(8 * 0.25) = 2 validation (t=7, 8); 6 train.
    assert _labels(split, "a") == [TRAIN] * 6 + [VALIDATION] * 2 + [TEST] * 2
    # b: floor(3 * 0.2) = 0 test and floor(3 * 0.25) = 0 validation: too short, all train.
    assert _labels(split, "b") == [TRAIN] * 3


def test_global_time_split_cuts_at_quantiles_of_time():
    # Only user a (times 1..10). Test cut = 0.8-quantile of 1..10 = 1 + 0.8 * 9 = 8.2, so
    # t=9, 10 are test. Validation cut = 0.75-quantile of 1..8 = 1 + 0.75 * 7 = 6.25: t=7, 8.
    config = DataConfig(split="global-time", test_fraction=0.2, validation_fraction=0.25)
    split = assign_splits(_data(LOG[:10]), config)
    assert _labels(split, "a") == [TRAIN] * 6 + [VALIDATION] * 2 + [TEST] * 2


def test_global_time_split_is_the_same_cut_for_every_user():
    # a at 1..10 as above; b's interactions at 1, 2, 3 are all before the validation cut.
    config = DataConfig(split="global-time", test_fraction=0.2, validation_fraction=0.25)
    split = assign_splits(_data(LOG), config)
    # Quantiles over all 13 sorted times 1 1 2 2 3 3 4 5 6 7 8 9 10: the 0.8-quantile sits at
    # position 0.8 * 12 = 9.6, between 7 and 8: test cut 7.6 (t 8, 9, 10). The 10 earlier times
    # 1 1 2 2 3 3 4 5 6 7 have their 0.75-quantile at position 6.75, between 4 and 5: 4.75.
    assert _labels(split, "a") == [TRAIN] * 4 + [VALIDATION] * 3 + [TEST] * 3
    assert _labels(split, "b") == [TRAIN] * 3


def test_positives_are_ratings_at_least_the_threshold():
    rows = [("a", "x", 1, 5.0), ("a", "y", 2, 3.5), ("a", "z", 3, 4.0)]
    rows += [("a", f"w{t}", t, 5.0) for t in range(4, 11)]
    config = DataConfig(min_positive_rating=4.0, validation_fraction=0.25)
    split = assign_splits(_data(rows), config)
    flags = split.interactions.set_index("item_id")["positive"]
    assert (flags["x"], flags["y"], flags["z"]) == (True, False, True)
    # The one non-positive is reported, not dropped.
    assert len(split.interactions) == 10
    assert [(r.removed, r.remaining) for r in split.reports] == [(1, 9)]


def test_without_ratings_every_interaction_is_positive():
    frame = pd.DataFrame({"user_id": ["a"] * 10, "item_id": range(10), "timestamp": range(10)})
    config = DataConfig(validation_fraction=0.25)
    split = assign_splits(build_dataset("t", frame, None, None), config)
    assert split.interactions["positive"].all()
    assert split.reports == ()


def test_known_before_each_split():
    split = assign_splits(_data(LOG), DataConfig(test_fraction=0.2, validation_fraction=0.25))
    assert set(split.known_before(VALIDATION)["split"]) == {TRAIN}
    assert set(split.known_before(TEST)["split"]) == {TRAIN, VALIDATION}
    assert set(split.known_before(TRAIN)["split"]) == {TRAIN}
    # 6 + 3 train rows; plus a's 2 validation rows before test.
    assert len(split.known_before(VALIDATION)) == 9
    assert len(split.known_before(TEST)) == 11
    with pytest.raises(DataError, match="unknown split 'later'"):
        split.known_before("later")


def test_a_split_without_positives_is_a_data_error_with_a_fix():
    # a's test interactions (t=9, 10) are rated 1: no test positives.
    rows = [(u, i, t, 1.0 if t >= 9 else 5.0) for u, i, t, _ in LOG[:10]]
    with pytest.raises(DataError, match="no positive interactions in test; use more data"):
        assign_splits(_data(rows), DataConfig(test_fraction=0.2, validation_fraction=0.25))


def test_global_time_split_with_a_single_timestamp_is_a_data_error():
    # Every interaction at the same second: everything is at or after the test cut, so train is
    # empty. (This used to crash in np.quantile with an IndexError.)
    rows = [("a", f"i{n}", 7, 5.0) for n in range(5)]
    with pytest.raises(DataError, match="leaves no positive interactions in train"):
        assign_splits(_data(rows), DataConfig(split="global-time"))
