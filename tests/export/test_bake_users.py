"""`bake_users`: the per-user context `serving_default` looks up, built columnar (a `[U, H]`
int32 history matrix and a CSR of exclusions), hand-checked on a tiny log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from export.savedmodel import ALL, VALIDATION, bake_users
from tfrs_model.config import DataConfig, ModelConfig
from tfrs_model.data.schema import FeatureColumn, build_dataset
from tfrs_model.data.splits import assign_splits
from tfrs_model.features.spec import HISTORY
from tfrs_model.features.tables import FeatureTables
from tfrs_model.features.vocabulary import build_feature_set

HISTORY_LENGTH = 3
# Items p q r s t; the export's catalog leaves t out (an item known to users but no longer
# offered): it can be in a history, never in the exclusions.
CATALOG = pd.Index(["p", "q", "r", "s"])


@pytest.fixture(scope="module")
def split():
    # Per-user split, test 0.2 and validation 0.25 of the rest:
    # a: p(1) q(2) t(2) r(3) s(4), in (time, item) order: 5 rows, floor(5 * 0.2) = 1 test (s),
    #    floor(4 * 0.25) = 1 validation (r), train p q t.
    # b: q(1) p(1), a tie, in order p q: floor(0.4) = 0 test, 0 validation: both train.
    # c: in the users table only: no interactions.
    log = pd.DataFrame(
        [
            ("a", "p", 1),
            ("a", "q", 2),
            ("a", "t", 2),
            ("a", "r", 3),
            ("a", "s", 4),
            ("b", "q", 1),
            ("b", "p", 1),
        ],
        columns=["user_id", "item_id", "timestamp"],
    )
    users = pd.DataFrame({"user_id": ["c", "b", "a"], "segment": ["z", "y", "x"]})
    data = build_dataset("tiny", log, users, None, (FeatureColumn("segment"),))
    config = DataConfig(
        test_fraction=0.2,
        validation_fraction=0.25,
        min_positive_rating=None,
        history_length=HISTORY_LENGTH,
    )
    split = assign_splits(data, config)
    return split, build_feature_set(split, ModelConfig(), config), FeatureTables(data)


def _decoded(baked) -> list[list[str]]:
    items = np.append(baked.history_items, "")  # row -1 -> ""
    return items[baked.history].tolist()


def test_known_through_validation_hand_checked(split):
    data, features, tables = split
    baked = bake_users(data, features, tables, CATALOG, VALIDATION)
    assert baked.user_ids.tolist() == ["a", "b", "c"]
    assert baked.features["segment"].tolist() == ["x", "y", "z"]
    assert HISTORY not in baked.features and "user_id" not in baked.features
    # Known before test: a p q t r, b p q. Histories are the last 3, most recent last; b is
    # shorter than H and c has none (left padding); t stays in a's history, after the catalog.
    assert baked.history.dtype == np.int32 and baked.history.shape == (3, HISTORY_LENGTH)
    assert baked.history_items.tolist() == ["p", "q", "r", "s", "t"]
    assert baked.history.tolist() == [[1, 4, 2], [-1, 0, 1], [-1, -1, -1]]
    assert _decoded(baked) == [["q", "t", "r"], ["", "p", "q"], ["", "", ""]]
    # Exclusions: known catalog rows, sorted; t is outside the catalog and is not excluded.
    assert sp.isspmatrix_csr(baked.excluded) and baked.excluded.shape == (3, len(CATALOG))
    assert baked.excluded.indptr.tolist() == [0, 3, 5, 5]
    assert baked.excluded.indices.tolist() == [0, 1, 2, 0, 1]


def test_known_through_all_adds_the_test_interactions(split):
    data, features, tables = split
    baked = bake_users(data, features, tables, CATALOG, ALL)
    assert _decoded(baked) == [["t", "r", "s"], ["", "p", "q"], ["", "", ""]]
    assert [baked.excluded[row].indices.tolist() for row in range(3)] == [[0, 1, 2, 3], [0, 1], []]


def test_the_whole_catalog_needs_no_extra_history_items(split):
    data, features, tables = split
    catalog = pd.Index(["p", "q", "r", "s", "t"])
    baked = bake_users(data, features, tables, catalog, VALIDATION)
    assert baked.history_items.tolist() == catalog.tolist()
    assert baked.history.tolist() == [[1, 4, 2], [-1, 0, 1], [-1, -1, -1]]
    assert baked.excluded.indices.tolist() == [0, 1, 2, 4, 0, 1]
