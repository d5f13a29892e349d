"""Cold start: held-out users and items lose their past, are evaluated on their future, and the
model serves them from features only."""

from __future__ import annotations

from tfrs_model.data.splits import TEST
from tfrs_model.evaluation import cold_start
from tfrs_model.evaluation.protocol import csr_rows

# Users a, b, c over items i1..i5. Test positives: a -> i3, b -> i1, c -> i3 and i5.
ROWS = [
    ("a", "i1", 1, "train", True),
    ("a", "i2", 2, "validation", True),
    ("a", "i3", 4, "test", True),
    ("b", "i2", 1, "train", True),
    ("b", "i3", 2, "train", True),
    ("b", "i1", 5, "test", True),
    ("c", "i1", 1, "train", True),
    ("c", "i3", 6, "test", True),
    ("c", "i5", 7, "test", True),
]
CATALOG = ["i1", "i2", "i3", "i4", "i5"]


def test_held_out_users_keep_only_their_test_interactions(split_data):
    split = split_data(ROWS, CATALOG)
    reduced, cold = cold_start.hold_out(split, "users", fraction=0.34, seed=0)
    assert len(cold) == 1  # round(0.34 * 3 users with a test positive)
    (user,) = cold
    rows = reduced.interactions
    assert set(rows[rows["user_id"] == user]["split"]) == {TEST}
    others = split.interactions[split.interactions["user_id"] != user]
    assert len(rows[rows["user_id"] != user]) == len(others)
    eval_set = cold_start.cold_eval_set(reduced, "users", cold)
    assert list(eval_set.user_ids) == [user]
    # Nothing of a cold user is known, so nothing is excluded; the catalog stays whole.
    assert [list(e) for e in csr_rows(eval_set.excluded)] == [[]]
    assert eval_set.num_items == len(CATALOG)


def test_cold_items_form_the_catalog_and_relevant_rows_are_renumbered(split_data):
    split = split_data(ROWS, CATALOG)
    # Items with a test positive are i1, i3, i5; hold out two of them.
    reduced, cold = cold_start.hold_out(split, "items", fraction=0.67, seed=1)
    assert len(cold) == 2 and cold <= {"i1", "i3", "i5"}
    past = reduced.interactions[reduced.interactions["split"] != TEST]
    assert not set(past["item_id"]) & cold
    eval_set = cold_start.cold_eval_set(reduced, "items", cold)
    assert sorted(eval_set.catalog) == sorted(cold)
    catalog = list(eval_set.catalog)
    expected = {
        "a": ["i3"],
        "b": ["i1"],
        "c": ["i3", "i5"],
    }
    for user, relevant in zip(eval_set.user_ids, csr_rows(eval_set.relevant), strict=True):
        wanted = sorted(catalog.index(i) for i in expected[user] if i in cold)
        assert sorted(relevant) == wanted and wanted
    assert all(len(e) == 0 for e in csr_rows(eval_set.excluded))
