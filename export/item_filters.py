"""Request-time item filters: item feature values baked as int codes, and the per-row pass mask.

At export, each item feature column (`genres`, `year_bucket`, any categorical item column) becomes
a vocabulary of the values the catalog uses and an int16 (or int32, for vocabularies over 32K
values) code per item and value slot: `[L, N]`, L = 1 for a scalar feature and the padded width
for a multi-valued one, -1 where an item has no value. A request's `filters` ("feature=value"
strings, `export.contract.FILTERS`) are looked up in one table keyed by the whole pair, so the
graph never compares strings per item: the pass mask is a few int compares over the catalog per
requested value, vectorized (`FilterIndex.pass_mask`).

Each value also has a posting list (the catalog rows holding it, CSR), so a selective filter
reaches its few passing items without touching the rest of the catalog
(`FilterIndex.posting_sizes`, `posting_rows`), and a candidate found another way is tested by
gathering only its own codes (`FilterIndex.passes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from export import contract
from export.index import is_member

MISSING = -1  # code of an item slot without a value
UNKNOWN_VALUE = -2  # code of a requested value no item has: it matches nothing
NOT_NAMED = np.iinfo(np.int32).max  # posting size of a feature a row does not filter on
# A pair is well formed when a non-empty feature name (without "=") is followed by "=" and a
# non-empty value; (?s) lets a value hold any character.
WELL_FORMED_PAIR = "(?s)[^=]+=.+"


@dataclass(frozen=True)
class ItemFeatureCodes:
    """Item feature values as int codes, built at export time.

    Attributes:
      vocabularies: `{feature: [V] str}`, the distinct non-empty values, sorted; code = position.
      codes: `{feature: [L, N] int16 or int32}`, the code of each value slot of each catalog item
        (L = 1 for a scalar feature), `MISSING` where the item has no value.
    """

    vocabularies: Mapping[str, np.ndarray]
    codes: Mapping[str, np.ndarray]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.vocabularies)


def item_feature_codes(columns: Mapping[str, np.ndarray]) -> ItemFeatureCodes:
    """Codes of item feature columns.

    Args:
      columns: `{feature: [N] or [N, L] str}` in catalog order, "" for no value (the layout of
        `FeatureTables.item_features`).

    Returns:
      The vocabularies and `[L, N]` codes.
    """
    vocabularies, codes = {}, {}
    for name, values in columns.items():
        slots = np.asarray(values, dtype=object).astype(str)
        slots = slots.reshape(len(slots), -1).T  # [L, N]
        vocabulary = np.unique(slots[slots != contract.PAD])
        dtype = np.int16 if len(vocabulary) < np.iinfo(np.int16).max else np.int32
        positions = np.searchsorted(vocabulary, slots)
        vocabularies[name] = vocabulary
        codes[name] = np.where(slots == contract.PAD, MISSING, positions).astype(dtype)
    return ItemFeatureCodes(vocabularies=vocabularies, codes=codes)


def posting_lists(codes: np.ndarray, num_values: int) -> tuple[np.ndarray, np.ndarray]:
    """The catalog rows holding each value, CSR.

    Args:
      codes: `[L, N]` item codes of one feature (`MISSING` for an empty slot).
      num_values: V, the size of the feature's vocabulary.

    Returns:
      (starts `[V + 1]` int32, rows `[P]` int32): value v's items are `rows[starts[v]:starts[v + 1]]`.
    """
    slots, items = np.nonzero(codes != MISSING)
    values = codes[slots, items]
    order = np.argsort(values, kind="stable")
    starts = np.searchsorted(values[order], np.arange(num_values + 1))
    return starts.astype(np.int32), items[order].astype(np.int32)


def _table(keys: list[str], values: list[int], default: int) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values, tf.int32)
        ),
        default_value=default,
    )


class FilterIndex(tf.Module):
    """The baked item feature codes and the in-graph parsing and checking of `filters`.

    Args:
      codes: the catalog's item feature codes; may hold no feature (then every non-empty pair
        names an unknown feature).
    """

    def __init__(self, codes: ItemFeatureCodes) -> None:
        super().__init__(name="item_filters")
        self.names = codes.names
        # Variables, not graph constants: they are saved in the variable shards (the graph proto
        # is capped at 2 GB).
        self.codes = [tf.Variable(codes.codes[name], trainable=False) for name in self.names]
        self.posting_starts, self.posting_items = [], []
        for name in self.names:
            starts, items = posting_lists(codes.codes[name], len(codes.vocabularies[name]))
            self.posting_starts.append(tf.Variable(starts, trainable=False))
            self.posting_items.append(tf.Variable(items, trainable=False))
        pairs, pair_codes = [], []
        for name in self.names:
            vocabulary = codes.vocabularies[name].tolist()
            pairs += [f"{name}{contract.FILTER_SEPARATOR}{value}" for value in vocabulary]
            pair_codes += range(len(vocabulary))
        # Tables need at least one key; a key with a separator never matches a feature name.
        self.pair_codes = _table(pairs or ["="], pair_codes or [0], default=UNKNOWN_VALUE)
        self.feature_ids = _table(
            list(self.names) or ["="], list(range(len(self.names))) or [0], default=-1
        )
        self.known = ", ".join(self.names) or "(none: this export has no item features)"
        # A real pair of this catalog for messages and warm-up requests; "" when it has none.
        self.example = next(
            (
                f"{name}{contract.FILTER_SEPARATOR}{codes.vocabularies[name][0]}"
                for name in self.names
                if len(codes.vocabularies[name])
            ),
            "",
        )

    def describe(self) -> dict[str, dict[str, int | bool]]:
        """`{feature: {"values": V, "multivalued": bool}}`, for the model card."""
        return {
            name: {
                "values": int(np.max(codes.numpy(), initial=MISSING)) + 1,
                "multivalued": int(codes.shape[0]) > 1,
            }
            for name, codes in zip(self.names, self.codes, strict=True)
        }

    def parse(self, filters: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, list[tf.Operation]]:
        """Feature ids and value codes of `filters`, with the asserts that check them.

        Args:
          filters: `[B, F]` "feature=value" strings, "" ignored.

        Returns:
          `feature_ids` `[B, F]` int32 (-1 for ""), `value_codes` `[B, F]` int32
          (`UNKNOWN_VALUE` for a value the catalog does not have), and the assert ops, which fail
          with INVALID_ARGUMENT naming the first malformed pair or unknown feature.
        """
        given = tf.not_equal(filters, contract.PAD)
        well_formed = tf.strings.regex_full_match(filters, WELL_FORMED_PAIR)
        malformed = given & ~well_formed
        feature = tf.strings.regex_replace(filters, "(?s)=.*", "", replace_global=False)
        feature_ids = self.feature_ids.lookup(feature)
        unknown = given & well_formed & (feature_ids < 0)
        # No quotes in the messages: the assertion's printer escapes them.
        checks = [
            check_any(
                malformed,
                filters,
                "filters: malformed pair ",
                f" (write feature=value, both parts non-empty, e.g. {self.example or 'genres=Comedy'}; known "
                f"features: {self.known})",
            ),
            check_any(
                unknown,
                filters,
                "filters: unknown feature in pair ",
                f" (known features: {self.known})",
            ),
        ]
        feature_ids = tf.where(given & well_formed, feature_ids, -1)
        return feature_ids, self.pair_codes.lookup(filters), checks

    def pass_mask(
        self, mask: tf.Tensor, feature_ids: tf.Tensor, value_codes: tf.Tensor
    ) -> tf.Tensor:
        """`mask` AND, for every feature a row names, "the item has one of the listed values".

        Features no row names cost nothing; a named feature costs one `[B, N]` int compare per
        listed value and value slot.

        Args:
          mask: `[B, N]` bool, the items still allowed (allow-list, exclusions).
          feature_ids, value_codes: `[B, F]` from `parse`.

        Returns:
          `[B, N]` bool.
        """
        for feature, codes in enumerate(self.codes):
            named = tf.equal(feature_ids, feature)
            mask = tf.cond(
                tf.reduce_any(named),
                lambda mask=mask, codes=codes, named=named: (
                    mask & _has_any(codes, named, value_codes)
                ),
                lambda mask=mask: mask,
            )
        return mask

    def posting_sizes(self, feature_ids: tf.Tensor, value_codes: tf.Tensor) -> tf.Tensor:
        """How many items the listed values of each feature hold, per row.

        Args:
          feature_ids, value_codes: `[B, F]` from `parse`.

        Returns:
          `[B, features]` int32: the posting lists' total length (at least the number of items
          passing that feature; 0 when every listed value is unknown), `NOT_NAMED` where the
          row does not name the feature.
        """
        sizes = []
        for feature in range(len(self.names)):
            first, last = self._posting_ranges(feature, feature_ids, value_codes)
            named = tf.reduce_any(tf.equal(feature_ids, feature), axis=1)
            sizes.append(tf.where(named, tf.reduce_sum(last - first, axis=1), NOT_NAMED))
        if not sizes:
            return tf.zeros([tf.shape(feature_ids)[0], 0], tf.int32)
        return tf.stack(sizes, axis=1)

    def posting_rows(
        self, feature: int, feature_ids: tf.Tensor, value_codes: tf.Tensor, use: tf.Tensor
    ) -> tf.RaggedTensor:
        """`[B, None]` int32 catalog rows holding a value of `feature` that the row lists, for
        the rows where `use` (`[B]` bool) holds, empty for the others. An item holding two
        listed values (a multi-valued feature) appears twice."""
        first, last = self._posting_ranges(feature, feature_ids, value_codes)
        last = tf.where(use[:, None], last, first)
        positions = tf.ragged.range(tf.reshape(first, [-1]), tf.reshape(last, [-1]))
        items = tf.gather(self.posting_items[feature], positions.flat_values)
        lengths = tf.cast(tf.reduce_sum(last - first, axis=1), tf.int64)
        return tf.RaggedTensor.from_row_lengths(items, lengths)

    def _posting_ranges(
        self, feature: int, feature_ids: tf.Tensor, value_codes: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`[B, F]` start and end positions in `posting_items[feature]` of each pair naming a
        known value of `feature`; empty ranges (0, 0) for every other pair."""
        listed = tf.equal(feature_ids, feature) & (value_codes >= 0)
        code = tf.where(listed, value_codes, 0)
        starts = self.posting_starts[feature]
        first = tf.where(listed, tf.gather(starts, code), 0)
        last = tf.where(listed, tf.gather(starts, code + 1), 0)
        return first, last

    def passes(self, rows: tf.Tensor, feature_ids: tf.Tensor, value_codes: tf.Tensor) -> tf.Tensor:
        """Whether each candidate passes the row's filters, reading only the candidates' codes.

        Args:
          rows: `[B, C]` int32 catalog rows (-1 padding, which passes; the caller drops it).
          feature_ids, value_codes: `[B, F]` from `parse`.

        Returns:
          `[B, C]` bool; features no row names cost nothing.
        """
        passing = tf.ones(tf.shape(rows), tf.bool)
        for feature, codes in enumerate(self.codes):
            named = tf.equal(feature_ids, feature)
            passing = tf.cond(
                tf.reduce_any(named),
                lambda passing=passing, codes=codes, named=named: (
                    passing & _candidates_have_any(codes, rows, named, value_codes)
                ),
                lambda passing=passing: passing,
            )
        return passing


def _candidates_have_any(
    codes: tf.Variable, rows: tf.Tensor, named: tf.Tensor, value_codes: tf.Tensor
) -> tf.Tensor:
    """`[B, C]`: the row does not name this feature, or candidate `rows` has a listed value.

    Args:
      codes: `[L, N]` item codes of one feature; rows: `[B, C]` catalog rows (-1 allowed).
      named: `[B, F]` whether each pair names this feature; value_codes: `[B, F]`.
    """
    listed = tf.where(named & (value_codes >= 0), value_codes, UNKNOWN_VALUE)
    listed = tf.pad(listed, [[0, 0], [0, 1]], constant_values=UNKNOWN_VALUE)  # F may be 0
    candidate_codes = tf.cast(tf.gather(codes, tf.maximum(rows, 0), axis=1), tf.int32)
    found = tf.zeros(tf.shape(rows), tf.bool)
    for slot in range(codes.shape[0]):  # MISSING (-1) is never listed
        found = found | is_member(candidate_codes[slot], listed)
    return found | ~tf.reduce_any(named, axis=1, keepdims=True)


def _has_any(codes: tf.Variable, named: tf.Tensor, value_codes: tf.Tensor) -> tf.Tensor:
    """`[B, N]`: the row does not name this feature, or the item has a value it lists.

    Args:
      codes: `[L, N]` item codes of one feature.
      named: `[B, F]` whether each pair names this feature.
      value_codes: `[B, F]` the pairs' value codes.
    """
    codes = codes.read_value()
    # Each row's known values of this feature first, so the loop runs only over the most values
    # any row lists (usually one or two), never over F.
    listed = tf.where(named & (value_codes >= 0), value_codes, UNKNOWN_VALUE)
    listed = tf.sort(listed, axis=1, direction="DESCENDING")
    rounds = tf.reduce_max(tf.reduce_sum(tf.cast(listed >= 0, tf.int32), axis=1))
    listed = tf.cast(listed, codes.dtype)
    batch, num_items = tf.shape(named)[0], tf.shape(codes)[1]
    names_it = tf.reduce_any(named, axis=1, keepdims=True)

    def one_value(j: tf.Tensor, found: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        value = listed[:, j, None]  # [B, 1]; UNKNOWN_VALUE matches no item code
        for slot in range(codes.shape[0]):
            found = found | tf.equal(codes[slot][None, :], value)
        return j + 1, found

    _, found = tf.while_loop(
        lambda j, found: j < rounds,
        one_value,
        (tf.constant(0), tf.zeros([batch, num_items], tf.bool)),
    )
    return found | ~names_it


def check_any(bad: tf.Tensor, values: tf.Tensor, before: str, after: str) -> tf.Operation:
    """An assert failing (INVALID_ARGUMENT) when any of `bad` holds, naming the first such value.

    Args:
      bad: bool, the shape of `values`; values: the request's strings or numbers.
    """
    first = tf.concat([tf.boolean_mask(values, bad), tf.zeros([1], values.dtype)], axis=0)[0]
    if values.dtype != tf.string:
        first = tf.strings.as_string(first)
    return tf.debugging.Assert(~tf.reduce_any(bad), [tf.strings.join([before, first, after])])
