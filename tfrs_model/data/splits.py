"""Temporal splits: every evaluation interaction is later than the interactions it is judged on.

`assign_splits` labels each interaction `train`, `validation` or `test`. Two schemes:
- per-user: the last `test_fraction` of each user's interactions (by time) is test, and the last
  `validation_fraction` of the remainder is validation; users too short to split stay in train.
- global-time: two cut points in time; everything after the later one is test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfrs_model.config import DataConfig
from tfrs_model.data.schema import FilterReport, InteractionData
from tfrs_model.errors import DataError

logger = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
_CODE = {name: code for code, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class SplitData:
    """Interactions labelled by split, with a positive flag, and the catalog they rank over.

    Attributes:
      interactions: the normalized interactions plus `split` (str) and `positive` (bool) columns,
        sorted by (user_id, timestamp, item_id).
      data: the source dataset (users and items tables, features).
      reports: counts of what the split and the positive rule set aside.
    """

    interactions: pd.DataFrame
    data: InteractionData
    reports: tuple[FilterReport, ...]

    def known_before(self, split: str) -> pd.DataFrame:
        """Interactions that happened before `split`: train for validation, train+validation for
        test, and train for train. These give histories and the items to exclude."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {SPLITS}")
        allowed = {TRAIN: (TRAIN,), VALIDATION: (TRAIN,), TEST: (TRAIN, VALIDATION)}[split]
        return self.interactions[self.interactions["split"].isin(allowed)]

    def with_validation_as_train(self) -> SplitData:
        """The same data with validation relabelled train: what a final refit trains on."""
        return self._relabelled_train((VALIDATION,))

    def with_all_as_train(self) -> SplitData:
        """Every interaction labelled train: what the production model is fit on."""
        return self._relabelled_train((VALIDATION, TEST))

    def _relabelled_train(self, splits: tuple[str, ...]) -> SplitData:
        frame = self.interactions.copy()
        frame.loc[frame["split"].isin(splits), "split"] = TRAIN
        return SplitData(interactions=frame, data=self.data, reports=self.reports)

    def positives(self, split: str) -> pd.DataFrame:
        frame = self.interactions
        return frame[(frame["split"] == split) & frame["positive"]]


def _per_user_ranks(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Position of each row within its user (0 = oldest) and that user's row count."""
    group = frame.groupby("user_id", sort=False)
    return group.cumcount().to_numpy(), group["item_id"].transform("size").to_numpy()


def _label_per_user(frame: pd.DataFrame, config: DataConfig) -> np.ndarray:
    rank, count = _per_user_ranks(frame)
    n_test = np.floor(count * config.test_fraction).astype(int)
    n_val = np.floor((count - n_test) * config.validation_fraction).astype(int)
    labels = np.full(len(frame), _CODE[TRAIN], dtype=np.int8)
    labels[rank >= count - n_test - n_val] = _CODE[VALIDATION]
    labels[rank >= count - n_test] = _CODE[TEST]
    return labels


def _label_global(frame: pd.DataFrame, config: DataConfig) -> np.ndarray:
    times = frame["timestamp"].to_numpy()
    test_cut = np.quantile(times, 1.0 - config.test_fraction)
    earlier = times[times < test_cut]
    # All interactions at or after the test cut (e.g. one timestamp for all) used to crash
    # np.quantile with an IndexError; leave train empty so the no-positives DataError explains.
    val_cut = np.quantile(earlier, 1.0 - config.validation_fraction) if len(earlier) else test_cut
    labels = np.full(len(frame), _CODE[TRAIN], dtype=np.int8)
    labels[times >= val_cut] = _CODE[VALIDATION]
    labels[times >= test_cut] = _CODE[TEST]
    return labels


def assign_splits(data: InteractionData, config: DataConfig) -> SplitData:
    """Labels every interaction with its split and whether it is a positive.

    Raises:
      DataError: the split leaves train, validation or test without positives.
    """
    frame = data.interactions.copy()
    labeller = _label_per_user if config.split == "per-user" else _label_global
    # A categorical: one byte per interaction, compared and filtered like the split's name.
    frame["split"] = pd.Categorical.from_codes(labeller(frame, config), categories=SPLITS)
    if config.min_positive_rating is not None and data.has_ratings:
        frame["positive"] = frame["rating"].to_numpy() >= config.min_positive_rating
    else:
        frame["positive"] = True
    reports = []
    negatives = int((~frame["positive"]).sum())
    if negatives:
        reports.append(
            FilterReport(
                f"not positives (rating < {config.min_positive_rating}): kept as history and "
                "exclusions, not as training targets",
                negatives,
                int(frame["positive"].sum()),
            )
        )
    for split in SPLITS:
        count = int(((frame["split"] == split) & frame["positive"]).sum())
        if count == 0:
            raise DataError(
                f"the {config.split} split leaves no positive interactions in {split}; use more "
                "data, other --test-fraction/--validation-fraction, or a lower min_positive_rating"
            )
        logger.info("%s: %d positives", split, count)
    return SplitData(interactions=frame, data=data, reports=tuple(reports))
