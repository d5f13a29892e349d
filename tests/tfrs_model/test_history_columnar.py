"""The columnar per-user context the export bakes: (user, item) codes, the CSR of known items and
the `[U, H]` int32 latest-history matrix, hand-checked, then against the string/list forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from tfrs_model.evaluation.protocol import (
    catalog_codes,
    catalog_row_matrix,
    catalog_rows_by_user,
    codes_to_csr,
)
from tfrs_model.features.history import latest_history, latest_rows

CATALOG = pd.Index(["p", "q", "r", "s"])  # rows 0..3


def _log(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True)


# ---- catalog_codes and codes_to_csr ----------------------------------------------------------


def test_codes_are_positions_with_minus_one_outside():
    frame = _log([("a", "q", 1), ("a", "zz", 2), ("b", "p", 1), ("ghost", "s", 1)])
    users, items = catalog_codes(frame, np.array(["b", "a"], dtype=object), CATALOG)
    # Frame order: a/q, a/zz, b/p, ghost/s. "a" is position 1, "b" 0, "ghost" absent; "zz" is
    # outside the catalog.
    assert users.dtype == items.dtype == np.int32
    assert users.tolist() == [1, 1, 0, -1]
    assert items.tolist() == [1, -1, 0, 3]


def test_categorical_ids_give_the_same_codes_as_strings():
    frame = _log([("a", "q", 1), ("a", "r", 2), ("b", "p", 1), ("c", "s", 3)])
    coded = frame.astype({"user_id": "category", "item_id": "category"})
    # Categories in another order than the catalog, and one category no row uses.
    coded["item_id"] = coded["item_id"].cat.set_categories(["s", "r", "q", "p", "unused"])
    users = np.array(["c", "a", "b"], dtype=object)
    for expected, actual in zip(
        catalog_codes(frame, users, CATALOG), catalog_codes(coded, users, CATALOG), strict=True
    ):
        np.testing.assert_array_equal(actual, expected)


def test_codes_to_csr_is_canonical_and_drops_minus_one():
    # Rows (0,2), (0,0), (0,2) again, (2,1); (1,-1) and (-1,3) are outside.
    matrix = codes_to_csr(np.array([0, 0, 0, 2, 1, -1]), np.array([2, 0, 2, 1, -1, 3]), (3, 4))
    assert matrix.shape == (3, 4) and matrix.dtype == bool
    assert matrix.indices.dtype == np.int32
    assert matrix.indptr.tolist() == [0, 2, 2, 3]  # user 1 has no item left: an empty row
    assert matrix.indices.tolist() == [0, 2, 1]  # sorted and distinct per row


def test_catalog_row_matrix_matches_the_list_form():
    frame = _log([("a", "r", 1), ("a", "p", 2), ("a", "r", 3), ("a", "zz", 4), ("b", "s", 1)])
    users = np.array(["a", "new", "b"], dtype=object)
    matrix = catalog_row_matrix(frame, users, CATALOG)
    assert matrix.toarray().astype(int).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert [r.tolist() for r in catalog_rows_by_user(frame, users, CATALOG)] == [[0, 2], [], [3]]


# ---- latest_rows -------------------------------------------------------------------------------


def test_latest_rows_hand_checked():
    # User 0: p q r s in time order -> last 3 = q r s = rows 1 2 3.
    # User 1: one item (r) -> shorter than H: padded on the left.
    # User 2: no interactions -> all padding.
    users = np.array([0, 0, 0, 0, 1])
    items = np.array([0, 1, 2, 3, 2])
    assert latest_rows(users, items, 3, 3).tolist() == [[1, 2, 3], [-1, -1, 2], [-1, -1, -1]]


def test_latest_rows_ties_within_a_timestamp_keep_the_frame_order():
    # "a" has r and p at time 5 and q at time 1. Sorted by (timestamp, item id), the order is
    # q(1), p(5), r(5): r, the larger id at the tie, counts as the most recent.
    frame = _log([("a", "r", 5), ("a", "p", 5), ("a", "q", 1)])
    users, items = catalog_codes(frame, np.array(["a"], dtype=object), CATALOG)
    assert latest_rows(users, items, 1, 2).tolist() == [[0, 2]]  # p, r
    assert latest_history(frame, np.array(["a"]), 2).tolist() == [["p", "r"]]


def test_latest_rows_skip_items_outside_the_catalog_and_unrequested_users():
    # "a": p(1) zz(2) q(3) r(4); zz is not in the catalog, so the last 3 known rows are p q r.
    # "ghost" is not requested and takes no row.
    frame = _log([("a", "p", 1), ("a", "zz", 2), ("a", "q", 3), ("a", "r", 4), ("ghost", "s", 1)])
    users, items = catalog_codes(frame, np.array(["a"], dtype=object), CATALOG)
    assert latest_rows(users, items, 1, 3).tolist() == [[0, 1, 2]]


def test_latest_rows_accepts_users_in_any_order():
    # Interleaved users: each keeps its own time order (the stable grouping).
    users = np.array([1, 0, 1, 0, 1])
    items = np.array([3, 0, 2, 1, 0])
    assert latest_rows(users, items, 2, 2).tolist() == [[0, 1], [2, 0]]


def test_latest_rows_of_nothing():
    empty = np.zeros(0, dtype=np.int32)
    assert latest_rows(empty, empty, 2, 2).tolist() == [[-1, -1], [-1, -1]]
    assert latest_rows(empty, empty, 0, 3).shape == (0, 3)


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(0, 6)), max_size=40
    ),
    length=st.integers(1, 5),
)
def test_latest_rows_and_csr_equal_the_string_and_list_forms(events, length):
    """Users u0..u4 (u4 never requested), items i0..i5 (i5 outside the catalog), times 0..6 with
    ties; the columnar forms decode to exactly what `latest_history` and `catalog_rows_by_user`
    give."""
    rows = list({(f"u{u}", f"i{i}", t) for u, i, t in events})  # no duplicate rows
    frame = _log(rows) if rows else _log([]).astype({"timestamp": int})
    catalog = pd.Index([f"i{n}" for n in range(5)])
    users = np.array(["u3", "u0", "u1", "u2", "nobody"], dtype=object)
    user_rows, item_rows = catalog_codes(frame, users, catalog)

    # History, over the catalog plus the outside items, decodes to the string history.
    vocabulary = catalog.append(pd.Index(["i5"]))
    _, vocabulary_rows = catalog_codes(frame, users, vocabulary)
    history = latest_rows(user_rows, vocabulary_rows, len(users), length)
    decoded = np.where(history >= 0, np.append(vocabulary, "")[history], "")
    assert decoded.tolist() == latest_history(frame, users, length).tolist()

    # Exclusions: the CSR rows are the per-user lists.
    matrix = codes_to_csr(user_rows, item_rows, (len(users), len(catalog)))
    assert sp.isspmatrix_csr(matrix)
    expected = catalog_rows_by_user(frame, users, catalog)
    actual = np.split(matrix.indices, matrix.indptr[1:-1])
    assert [a.tolist() for a in actual] == [e.tolist() for e in expected]
