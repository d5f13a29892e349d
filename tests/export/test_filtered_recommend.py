"""`recommend_filtered` and `recommend_filtered_context` through a saved and reloaded SavedModel,
with answers worked out by hand on the hand-made catalog of conftest.py.

Reminder of that catalog: user "a" ranks items in row order (i00 is its known item, so never
returned by `recommend_filtered`), user "b" in reverse row order. Row NN: lang en/hi/ta for
NN % 3 == 0/1/2; country IN for rows 0..9, US for 10..19; genres drama (even) or action (odd),
plus comedy when NN % 5 == 0. The exported maximum k is 5. Every case runs for both index kinds
and each path of the filtered search (exact over the smallest source, over-fetch from the index,
exact over the mask).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from export import contract
from export.index import BRUTE_FORCE, SCANN

KINDS = (BRUTE_FORCE, SCANN)
PATHS = ("exact", "over-fetch", "mask")  # the keys of conftest.PATHS
MAX_K = 5  # conftest.MAX_K
ANGLES = np.arange(20) * (np.pi / 2) / 19  # conftest.ANGLES: item NN's embedding (cos, sin)


def filtered(model, users, k, filters=(), allow=(), signature=contract.RECOMMEND_FILTERED, **more):
    """Calls a filtered signature with the same filters and allow-list for every row."""
    batch = len(users)
    inputs = {
        contract.USER_ID: tf.constant(users),
        contract.K: tf.constant(k if isinstance(k, list) else [k] * batch, tf.int32),
        contract.FILTERS: tf.constant([list(filters) or [""]] * batch),
        contract.ALLOW: tf.constant([list(allow) or [""]] * batch),
        **{key: tf.constant(value) for key, value in more.items()},
    }
    outputs = model.signatures[signature](**inputs)
    return outputs[contract.ITEM_IDS].numpy().astype(str), outputs[contract.SCORES].numpy()


def padded(*ids: str) -> list[str]:
    return [*ids, *[""] * (MAX_K - len(ids))]


# (filters, allow, k, the hand-worked answer for user "a")
CASES = {
    "one value": (["lang=hi"], [], 3, padded("i01", "i04", "i07")),
    "OR within a feature": (["lang=hi", "lang=ta"], [], 4, padded("i01", "i02", "i04", "i05")),
    "AND across features": (["lang=hi", "country=US"], [], 3, padded("i10", "i13", "i16")),
    "OR and AND": (
        ["lang=hi", "lang=en", "country=IN"],
        [],
        5,
        ["i01", "i03", "i04", "i06", "i07"],
    ),
    # i00 is comedy too, but "a" knows it.
    "multi-valued feature": (["genres=comedy"], [], 5, padded("i05", "i10", "i15")),
    "multi-valued OR": (
        ["genres=comedy", "genres=action"],
        [],
        4,
        padded("i01", "i03", "i05", "i07"),
    ),
    "allow-list": ([], ["i07", "i02", "i15", "not-an-item"], 5, padded("i02", "i07", "i15")),
    "allow-list and filter": (
        ["country=US"],
        ["i02", "i07", "i15", "i16"],
        5,
        padded("i15", "i16"),
    ),
    "unknown value matches nothing": (["lang=fr"], [], 5, padded()),
    "known values matching nothing": (["lang=hi", "genres=comedy", "country=IN"], [], 5, padded()),
    "allow-list of unknown ids only": ([], ["nope"], 5, padded()),
    "no filter, no allow-list": ([], [], 2, padded("i01", "i02")),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_hand_worked_answers(hand_made, kind, path, case):
    filters, allow, k, expected = CASES[case]
    ids, scores = filtered(hand_made(kind, path), ["a"], k, filters, allow)

    assert ids[0].tolist() == expected
    rows = [int(item[1:]) for item in expected if item]
    # Scores are the exact dot products cos(angle); -inf past the answer.
    np.testing.assert_allclose(scores[0, : len(rows)], np.cos(ANGLES[rows]), rtol=1e-5)
    assert np.all(scores[0, len(rows) :] == -np.inf)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_row_has_its_own_k_and_padding(hand_made, kind, path):
    ids, scores = filtered(hand_made(kind, path), ["a", "b"], [2, 4], ["lang=hi"])

    assert ids.tolist() == [padded("i01", "i04"), padded("i19", "i16", "i13", "i10")]
    np.testing.assert_allclose(scores[1, :4], np.sin(ANGLES[[19, 16, 13, 10]]), rtol=1e-5)
    assert np.all(scores[0, 2:] == -np.inf) and scores[1, 4] == -np.inf


@pytest.mark.parametrize("kind", KINDS)
def test_rows_of_one_batch_take_their_own_filters(hand_made, kind):
    model = hand_made(kind, "exact")
    outputs = model.signatures[contract.RECOMMEND_FILTERED](
        user_id=tf.constant(["a", "b", "b"]),
        k=tf.constant([3, 3, 5], tf.int32),
        filters=tf.constant([["country=US", ""], ["lang=en", "lang=ta"], ["", ""]]),
        allow=tf.constant([[""], [""], ["i03"]]),
    )

    assert outputs[contract.ITEM_IDS].numpy().astype(str).tolist() == [
        padded("i10", "i11", "i12"),
        padded("i18", "i17", "i15"),
        padded("i03"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_rows_of_one_batch_take_their_own_path(hand_made, kind):
    """Under conftest's "mixed" thresholds (sources of at most 4 items exactly, over-fetches
    of at most 12 candidates), each row below takes another path, worked out by hand."""
    outputs = hand_made(kind, "mixed").signatures[contract.RECOMMEND_FILTERED](
        user_id=tf.constant(["a", "b", "b", "b"]),
        k=tf.constant([5, 3, 3, 3], tf.int32),
        filters=tf.constant(
            [
                # source: comedy's posting list, rows 0, 5, 10, 15 (4 items; "a" knows i00)
                ["genres=comedy", ""],
                # over-fetch: 14 items pass, so ceil(3 * 20 / 14) = 5 candidates (19..15)
                # hold 3 passing ones (18, 17, 15)
                ["lang=en", "lang=ta"],
                # mask: 10 US x 7 hi items make an estimate of 3.5 passing, so the over-fetch
                # would need ceil(3 * 20 / 3.5) = 18 > 12 candidates; rows 10, 13, 16, 19 pass
                ["country=US", "lang=hi"],
                # source: the allow-list (1 item)
                ["", ""],
            ]
        ),
        allow=tf.constant([[""], [""], [""], ["i03"]]),
    )

    assert outputs[contract.ITEM_IDS].numpy().astype(str).tolist() == [
        padded("i05", "i10", "i15"),
        padded("i18", "i17", "i15"),
        padded("i19", "i16", "i13"),
        padded("i03"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_filtered_context_takes_request_exclusions_instead_of_known_items(hand_made, kind):
    ids, _ = filtered(
        hand_made(kind, "over-fetch"),
        ["a"],
        3,
        ["genres=comedy"],
        signature=contract.RECOMMEND_FILTERED_CONTEXT,
        exclude=[["i05", ""]],
    )

    # i00 is not excluded here (the request's context replaces the baked one); i05 is.
    assert ids[0].tolist() == padded("i00", "i10", "i15")


@pytest.mark.parametrize(
    ("filters", "k", "message"),
    [
        (
            ["colour=red"],
            1,
            "unknown feature in pair colour=red (known features: lang, country, genres)",
        ),
        (["lang"], 1, "malformed pair lang (write feature=value"),
        (["=hi"], 1, "malformed pair =hi"),
        (["lang="], 1, "malformed pair lang="),
        ([""], 0, "k must be between 1 and the exported maximum of 5 in every row; got 0"),
        ([""], 6, "got 6"),
    ],
)
def test_bad_filters_and_k_are_invalid_argument_naming_the_mistake(hand_made, filters, k, message):
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        filtered(hand_made(BRUTE_FORCE, "exact"), ["a"], k, filters)

    assert message in error.value.message


def test_unknown_user_gets_a_cold_start_answer_that_still_filters(hand_made):
    ids, scores = filtered(hand_made(SCANN, "exact"), ["nobody"], 5, ["country=US", "lang=ta"])

    # The stub's cold-start query scores every item 0, so which items come is a tie; only
    # items passing the filter (rows 11, 14, 17) may.
    assert sorted(item for item in ids[0] if item) == ["i11", "i14", "i17"]
    assert np.all(scores[0, :3] == 0.0)
