"""A hand-made export for exact answers: 20 items on a quarter circle, two users, stub towers.

Item `iNN` (row NN) has the 2-d embedding (cos t, sin t), t = NN * 90 / 19 degrees. User "a"
queries (1, 0), so its scores cos t fall with the row: "a" ranks items in row order. User "b"
queries (0, 1) and ranks them in reverse row order. Item features:

  lang     (scalar)  en, hi, ta for rows with NN % 3 == 0, 1, 2
  country  (scalar)  IN for rows 0..9, US for rows 10..19
  genres   (2 slots) drama for even rows, action for odd rows, plus comedy when NN % 5 == 0

User "a" knows item i00 (excluded by the baked-context signatures); "b" knows nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from export.filtered import FilteredSearchConfig
from export.index import IndexConfig, build_index
from export.item_filters import FilterIndex, item_feature_codes
from export.loading import load_saved_model
from export.savedmodel import SAVE_OPTIONS_NAMESPACES
from export.signatures import BakedUsers, ServingModule
from tfrs_model.features.spec import FeatureSet, FeatureSpec

NUM_ITEMS = 20
MAX_K = 5
ITEMS = np.array([f"i{row:02d}" for row in range(NUM_ITEMS)], dtype=object)
ANGLES = np.arange(NUM_ITEMS) * (np.pi / 2) / (NUM_ITEMS - 1)
EMBEDDINGS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1).astype(np.float32)
USERS = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
# Paths of `filtered_top_k`: score the smallest source exactly, over-fetch from the index (rows
# it leaves short go to the mask), or score exactly over the mask.
PATHS = {
    "exact": FilteredSearchConfig(exact_max_items=10**6),
    "over-fetch": FilteredSearchConfig(exact_max_items=0, safety=1.0, max_fetch=10**6),
    "mask": FilteredSearchConfig(exact_max_items=0, max_fetch=0),
    # Sources of up to 4 items exactly, over-fetches of up to 12: rows of one batch split.
    "mixed": FilteredSearchConfig(exact_max_items=4, safety=1.0, max_fetch=12),
}


def item_columns() -> dict[str, np.ndarray]:
    rows = np.arange(NUM_ITEMS)
    genres = np.full((NUM_ITEMS, 2), "", dtype=object)
    genres[:, 0] = np.where(rows % 2 == 0, "drama", "action")
    genres[rows % 5 == 0, 1] = "comedy"
    return {
        "lang": np.array(["en", "hi", "ta"], dtype=object)[rows % 3],
        "country": np.where(rows < 10, "IN", "US").astype(object),
        "genres": genres,
    }


class StubQueryTower(tf.Module):
    """user_id -> its fixed query ((0, 0) for unknown users); other inputs are ignored."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(USERS)), tf.range(len(USERS), dtype=tf.int32)
            ),
            default_value=len(USERS),
        )
        self.queries = tf.Variable([*USERS.values(), [0.0, 0.0]], dtype=tf.float32)

    def __call__(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.gather(self.queries, self.rows.lookup(features["user_id"]))


class StubCandidateTower(tf.Module):
    """Zero embeddings; only `candidate_embedding` of unknown items calls it."""

    specs = (FeatureSpec("item_id", "candidate", (), 0, 2),)

    def __call__(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.zeros([tf.shape(inputs["item_id"])[0], 2])


def hand_made_export(directory: Path, kind: str, search: FilteredSearchConfig) -> Path:
    """Builds, saves and returns the hand-made export with index `kind` under `directory`."""
    index = build_index(
        IndexConfig(kind=kind, k=MAX_K),
        tf.constant(EMBEDDINGS),
        tf.range(NUM_ITEMS, dtype=tf.int32),
    )
    excluded = sp.csr_matrix(([True], ([0], [0])), shape=(len(USERS), NUM_ITEMS))
    module = ServingModule(
        query_model=StubQueryTower(),
        candidate_model=StubCandidateTower(),
        index=index,
        features=FeatureSet((FeatureSpec("user_id", "query", tuple(USERS), 0, 2),)),
        catalog_ids=ITEMS,
        catalog_titles=np.array([f"Title {i}" for i in ITEMS], dtype=object),
        candidate_embeddings=EMBEDDINGS,
        users=BakedUsers(
            user_ids=np.array(list(USERS), dtype=object),
            features={},
            history=None,
            history_items=ITEMS,
            excluded=excluded,
        ),
        k=MAX_K,
        item_features=item_feature_codes(item_columns()),
        filtered_search=search,
    )
    tf.saved_model.save(
        module,
        str(directory),
        signatures=module.signatures(),
        options=tf.saved_model.SaveOptions(namespace_whitelist=SAVE_OPTIONS_NAMESPACES),
    )
    return directory


@pytest.fixture(scope="session")
def hand_made_filters() -> FilterIndex:
    """The hand-made catalog's item filters: codes and posting lists of `item_columns()`."""
    return FilterIndex(item_feature_codes(item_columns()))


@pytest.fixture(scope="session")
def hand_made(tmp_path_factory: pytest.TempPathFactory):
    """(index kind, path) -> the hand-made export, saved and loaded back; built on first use."""
    cache: dict[tuple[str, str], object] = {}

    def get(kind: str, path: str):
        if (kind, path) not in cache:
            directory = tmp_path_factory.mktemp(f"hand-made-{kind}-{path}")
            cache[kind, path] = load_saved_model(hand_made_export(directory, kind, PATHS[path]))
        return cache[kind, path]

    return get
