"""The synthetic generator plants the structure its docstring promises, deterministically."""

from __future__ import annotations

import pandas as pd
import pytest

from tfrs_model.data.movielens import ITEM_FEATURES, USER_FEATURES
from tfrs_model.data.synthetic import (
    CLUSTER,
    CLUSTER_GENRES,
    CLUSTER_OCCUPATIONS,
    make_synthetic,
)
from tfrs_model.errors import ConfigError


def _joined(data) -> pd.DataFrame:
    """Interactions with the user's preferred and the item's own cluster."""
    return data.interactions.merge(data.users[["user_id", CLUSTER]], on="user_id").merge(
        data.items[["item_id", CLUSTER]], on="item_id", suffixes=("_user", "_item")
    )


def test_same_seed_same_data_other_seed_other_data(synthetic):
    again = make_synthetic(num_users=200, num_items=100, interactions_per_user=20, seed=0)
    pd.testing.assert_frame_equal(again.interactions, synthetic.interactions)
    pd.testing.assert_frame_equal(again.users, synthetic.users)
    pd.testing.assert_frame_equal(again.items, synthetic.items)
    other = make_synthetic(num_users=200, num_items=100, interactions_per_user=20, seed=1)
    assert not other.interactions.equals(synthetic.interactions)


def test_sizes_ids_and_time_order(synthetic):
    assert synthetic.summary() == {
        "dataset": "synthetic",
        "interactions": 200 * 20,
        "users": 200,
        "items": 100,
    }
    assert sorted(synthetic.users["user_id"], key=int) == [str(i) for i in range(1, 201)]
    per_user = synthetic.interactions.groupby("user_id")
    # 20 distinct items per user, at strictly increasing seconds.
    assert (per_user["item_id"].nunique() == 20).all()
    assert per_user["timestamp"].apply(lambda t: t.diff().dropna().gt(0).all()).all()
    assert synthetic.reports == ()  # nothing to repair


def test_positives_are_exactly_the_preferred_cluster(synthetic):
    joined = _joined(synthetic)
    preferred = joined[f"{CLUSTER}_user"] == joined[f"{CLUSTER}_item"]
    # round(0.8 * 20) = 16 of each user's 20 interactions are in their cluster.
    assert preferred.mean() == pytest.approx(16 / 20)
    assert set(joined.loc[preferred, "rating"]) == {4.0, 5.0}
    assert set(joined.loc[~preferred, "rating"]) == {1.0, 2.0, 3.0}


def test_features_hint_at_the_clusters(synthetic):
    items = synthetic.items
    # Item i is in cluster (i - 1) % 4 and its one genre names it.
    assert (items[CLUSTER] == (items["item_id"].astype(int) - 1) % 4).all()
    assert (items["genres"] == items[CLUSTER].map(lambda c: (CLUSTER_GENRES[c],))).all()
    users = synthetic.users
    hinted = (users["occupation"] == users[CLUSTER].map(lambda c: CLUSTER_OCCUPATIONS[c])).mean()
    # Binomial(200, 0.9): mean 180 users, standard deviation ~4.2; 0.8..0.97 is > 4 sd wide.
    assert 0.8 <= hinted <= 0.97
    # The ground truth is not a feature, so no model can read it.
    assert synthetic.user_features == USER_FEATURES
    assert synthetic.item_features == ITEM_FEATURES


def test_popular_items_are_not_most_users_preference(synthetic):
    counts = synthetic.interactions["item_id"].value_counts()
    top = synthetic.items.set_index("item_id").loc[counts.index[:10], CLUSTER].to_numpy()
    # Popularity is drawn independently of the clusters, so the global top 10 mixes clusters
    # (with seed 0: 5 of cluster 3, 3 of cluster 1, 2 of cluster 0) and, averaged over users,
    # only about a quarter of it lies in a user's preferred cluster (0.28 with seed 0).
    share = synthetic.users[CLUSTER].map(lambda c: (top == c).mean())
    assert len(set(top)) >= 3
    assert share.mean() < 0.4
    # And it is skewed: the most popular item has several times the median count.
    assert counts.iloc[0] >= 3 * counts.median()


def test_preference_is_capped_by_cluster_size():
    # 2 clusters of 5 items; 8 interactions at preference 1.0 can take only 5 from the cluster.
    data = make_synthetic(10, 10, 8, seed=0, num_clusters=2, preference=1.0)
    joined = _joined(data)
    preferred = joined[f"{CLUSTER}_user"] == joined[f"{CLUSTER}_item"]
    assert preferred.groupby(joined["user_id"]).sum().eq(5).all()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_users": 0}, "at least one user"),
        ({"num_clusters": 1}, r"num_clusters must be in \[2, 18\]"),
        ({"num_clusters": 19}, r"num_clusters must be in \[2, 18\]"),
        ({"num_items": 10, "interactions_per_user": 11}, "interactions_per_user must be in"),
        ({"preference": 1.5}, r"preference must be in \[0, 1\]"),
        ({"hint_accuracy": -0.1}, r"hint_accuracy must be in \[0, 1\]"),
    ],
)
def test_bad_arguments_raise_config_error(arguments, message):
    with pytest.raises(ConfigError, match=message):
        make_synthetic(**arguments)
