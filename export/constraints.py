"""What each row of a filtered request may return: its allow-list, exclusions and item filters.

`export.filtered.filtered_top_k` reads the constraints three ways, cheapest first, so the
catalog-wide `[B, N]` mask is built only for the rows nothing cheaper answers:

- **sources**: a row's answer lies within its allow-list, within the posting lists of the
  values it lists for any one filtered feature, and within the whole catalog; the smallest of
  these is its source (`smallest_source`), and a small source is scored exactly
  (`source_candidates`), reading nothing else of the catalog;
- **a per-candidate test** (`passes`) for candidates found another way (the index's over-fetch);
- **the dense mask** (`mask`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import tensorflow as tf

from export.index import is_member
from export.item_filters import NOT_NAMED, FilterIndex

NO_ROW = -1  # padding of catalog rows
EVERYTHING, ALLOW_LIST = 0, 1  # source ids; filtered feature f is source 2 + f
FIRST_FEATURE_SOURCE = 2


@dataclass(frozen=True)
class ItemConstraints:
    """The constraints of one batch, as tensors of the serving graph.

    Attributes:
      filters: the export's baked item feature codes and posting lists.
      num_items: scalar int32, N, the catalog size.
      allow_rows: `[B, A]` int32 catalog rows of the allow-list, `NO_ROW` for "" and unknown ids.
      allow_listed: `[B]` bool, whether the row has an allow-list (any non-"" entry).
      excluded_rows: `[B, E]` int32 catalog rows never returned, `NO_ROW` padding.
      feature_ids, value_codes: `[B, F]` from `FilterIndex.parse`.
    """

    filters: FilterIndex
    num_items: tf.Tensor
    allow_rows: tf.Tensor
    allow_listed: tf.Tensor
    excluded_rows: tf.Tensor
    feature_ids: tf.Tensor
    value_codes: tf.Tensor

    @functools.cached_property
    def source_sizes(self) -> tf.Tensor:
        """`[B, 2 + features]` int32: the size of each source (`NOT_NAMED` where a row has none):
        the catalog, the allow-list's known ids, then each filtered feature's posting lists."""
        batch = tf.shape(self.allow_rows)[0]
        everything = tf.fill([batch, 1], self.num_items)
        known = tf.reduce_sum(tf.cast(self.allow_rows >= 0, tf.int32), axis=1)
        allowed = tf.where(self.allow_listed, known, NOT_NAMED)[:, None]
        features = self.filters.posting_sizes(self.feature_ids, self.value_codes)
        return tf.concat([everything, allowed, features], axis=1)

    def smallest_source(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(source id `[B]` int32, its size `[B]` int32): an upper bound on each row's passing
        items, exact for a row with one constraint and no exclusions."""
        sizes = self.source_sizes
        return tf.argmin(sizes, axis=1, output_type=tf.int32), tf.reduce_min(sizes, axis=1)

    def estimated_passing(self) -> tf.Tensor:
        """`[B]` float32: N times the fraction each source keeps, as if they were independent."""
        sizes = tf.cast(self.source_sizes[:, ALLOW_LIST:], tf.float32)
        catalog = tf.cast(self.num_items, tf.float32)
        fractions = tf.minimum(sizes, catalog) / tf.maximum(catalog, 1.0)
        return catalog * tf.reduce_prod(fractions, axis=1)

    def source_candidates(self, source: tf.Tensor, use: tf.Tensor) -> tf.Tensor:
        """The rows of each row's `source` (`[B]` int32) where `use` (`[B]` bool) holds.

        Returns:
          `[B, C]` int32 catalog rows, each at most once per row, `NO_ROW` padding (C = 0 rows
          where nothing is used). The constraints other than the source still apply: test
          them with `passes`.
        """
        batch = tf.shape(self.allow_rows)[0]
        catalog = tf.ragged.range(
            tf.zeros([batch], tf.int32),
            tf.where(use & tf.equal(source, EVERYTHING), self.num_items, 0),
        )
        take_allowed = (use & tf.equal(source, ALLOW_LIST))[:, None] & (self.allow_rows >= 0)
        parts = [catalog, tf.ragged.boolean_mask(self.allow_rows, take_allowed)]
        for feature in range(len(self.filters.names)):
            chosen = use & tf.equal(source, FIRST_FEATURE_SOURCE + feature)
            parts.append(
                self.filters.posting_rows(feature, self.feature_ids, self.value_codes, chosen)
            )
        rows = tf.concat(parts, axis=1).to_tensor(NO_ROW)
        return _without_repeats(rows)

    def passes(self, rows: tf.Tensor) -> tf.Tensor:
        """`[B, C]` bool: candidate catalog `rows` (`[B, C]`, `NO_ROW` never passes) meet every
        constraint of their row. Reads only the candidates' own codes."""
        allowed = is_member(rows, _padded(self.allow_rows)) | ~self.allow_listed[:, None]
        excluded = is_member(rows, _padded(self.excluded_rows))
        features = self.filters.passes(rows, self.feature_ids, self.value_codes)
        return (rows >= 0) & allowed & ~excluded & features

    def mask(self) -> tf.Tensor:
        """`[B, N]` bool over the whole catalog: the allow-list (every item for a row without
        one), minus the exclusions, passing the filters."""
        batch = tf.shape(self.allow_rows, out_type=tf.int64)[0]
        num_items = tf.cast(self.num_items, tf.int64)
        on_list = _scatter_rows(self.allow_rows, batch, num_items)
        mask = (on_list | ~self.allow_listed[:, None]) & ~_scatter_rows(
            self.excluded_rows, batch, num_items
        )
        return self.filters.pass_mask(mask, self.feature_ids, self.value_codes)


def _padded(rows: tf.Tensor) -> tf.Tensor:
    """`rows` with one more `NO_ROW` column, for `is_member`, which needs a column."""
    return tf.pad(rows, [[0, 0], [0, 1]], constant_values=NO_ROW)


def _without_repeats(rows: tf.Tensor) -> tf.Tensor:
    """`[B, C]` rows sorted descending per row, a repeated row replaced by `NO_ROW`."""
    rows = tf.sort(rows, axis=1, direction="DESCENDING")
    repeated = tf.equal(rows[:, 1:], rows[:, :-1])
    return tf.concat([rows[:, :1], tf.where(repeated, NO_ROW, rows[:, 1:])], axis=1)


def _scatter_rows(rows: tf.Tensor, batch: tf.Tensor, num_items: tf.Tensor) -> tf.Tensor:
    """`[batch, num_items]` bool, True at each row's catalog `rows` (`[batch, n]`, -1 skipped)."""
    where = tf.where(rows >= 0)  # [m, 2]: (batch row, column of rows)
    indices = tf.stack([where[:, 0], tf.cast(tf.gather_nd(rows, where), tf.int64)], axis=1)
    empty = tf.zeros(tf.stack([batch, num_items]), tf.bool)
    return tf.tensor_scatter_nd_update(empty, indices, tf.ones([tf.shape(indices)[0]], tf.bool))
