"""Posting lists and the candidate sources of `ItemConstraints`, worked out by hand on the
hand-made catalog of conftest.py (row NN: lang en/hi/ta for NN % 3 == 0/1/2; country IN for
rows 0..9, US for 10..19; genres drama (even) or action (odd), plus comedy when NN % 5 == 0)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.constraints import ALLOW_LIST, EVERYTHING, FIRST_FEATURE_SOURCE, ItemConstraints
from export.item_filters import NOT_NAMED, posting_lists

NUM_ITEMS = 20  # conftest.NUM_ITEMS
FEATURES = ("lang", "country", "genres")  # item_columns() order: source 2 + position


def test_posting_lists_hold_each_value_s_items_from_every_slot():
    codes = np.array([[0, 1, -1, 0], [1, -1, -1, -1]], dtype=np.int16)  # [L=2, N=4]

    starts, rows = posting_lists(codes, num_values=3)

    # value 0: items 0 and 3 (slot 0); value 1: item 1 (slot 0), item 0 (slot 1); value 2: none
    assert starts.tolist() == [0, 2, 4, 4]
    assert rows.tolist() == [0, 3, 1, 0]


def constraints(index, filters: list[list[str]], allow: list[list[int]], excluded: list[list[int]]):
    feature_ids, value_codes, _ = index.parse(tf.constant(filters))
    allow_rows = tf.constant(allow, tf.int32)
    return ItemConstraints(
        filters=index,
        num_items=tf.constant(NUM_ITEMS),
        allow_rows=allow_rows,
        allow_listed=tf.reduce_any(allow_rows >= 0, axis=1),
        excluded_rows=tf.constant(excluded, tf.int32),
        feature_ids=feature_ids,
        value_codes=value_codes,
    )


def test_each_row_takes_its_smallest_source(hand_made_filters):
    rows = constraints(
        hand_made_filters,
        filters=[["", ""], ["lang=hi", "country=US"], ["genres=comedy", "genres=drama"], ["", ""]],
        allow=[[-1, -1], [-1, -1], [-1, -1], [3, 7]],
        excluded=[[-1], [-1], [-1], [-1]],
    )

    source, size = rows.smallest_source()
    sizes = rows.source_sizes.numpy()

    assert sizes[1].tolist() == [NUM_ITEMS, NOT_NAMED, 7, 10, NOT_NAMED]  # hi: 7, US: 10
    # comedy (4) + drama (10): i00 and i10 are in both lists, so 14 entries for 12 items
    assert sizes[2, FIRST_FEATURE_SOURCE + FEATURES.index("genres")] == 14
    assert source.numpy().tolist() == [
        EVERYTHING,
        FIRST_FEATURE_SOURCE + FEATURES.index("lang"),
        FIRST_FEATURE_SOURCE + FEATURES.index("genres"),
        ALLOW_LIST,
    ]
    assert size.numpy().tolist() == [NUM_ITEMS, 7, 14, 2]
    # independent sources: 20 * (7/20) * (10/20) = 3.5 for hi AND US
    np.testing.assert_allclose(rows.estimated_passing().numpy(), [20, 3.5, 14, 2])


def test_source_candidates_are_unique_and_the_other_constraints_still_apply(hand_made_filters):
    rows = constraints(
        hand_made_filters,
        filters=[["genres=comedy", "genres=drama"]],
        allow=[list(range(15))],  # 15 items: more than the genres' 14 entries
        excluded=[[12, -1]],
    )
    source, _ = rows.smallest_source()

    candidates = rows.source_candidates(source, tf.constant([True]))
    passing = tf.boolean_mask(candidates, rows.passes(candidates)).numpy()

    kept = candidates.numpy()[candidates.numpy() >= 0]
    assert sorted(kept.tolist()) == [0, 2, 4, 5, 6, 8, 10, 12, 14, 15, 16, 18]  # no repeats
    # those on the allow-list (rows 0..14), minus the excluded 12
    assert sorted(passing.tolist()) == [0, 2, 4, 5, 6, 8, 10, 14]
    expected = np.isin(np.arange(NUM_ITEMS), [0, 2, 4, 5, 6, 8, 10, 14])
    np.testing.assert_array_equal(rows.mask().numpy()[0], expected)


def test_an_unused_row_has_no_candidates(hand_made_filters):
    rows = constraints(hand_made_filters, filters=[["lang=hi"]], allow=[[-1]], excluded=[[-1]])
    source, _ = rows.smallest_source()

    assert rows.source_candidates(source, tf.constant([False])).shape == (1, 0)
