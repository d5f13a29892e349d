"""Top k under per-row constraints: exact over a small source, an adaptive over-fetch, or exact
over a dense mask.

`filtered_top_k` picks, per row of a batch, one of three ways (all in one graph, each run only
when some row needs it):

- **exact over a source**: when the row's smallest source (its allow-list, the posting lists of
  the values it lists for one feature, or the catalog) holds at most `exact_max_items` items,
  those items are tested against the other constraints and scored exactly; nothing else of the
  catalog is read, so a selective filter costs the same at any catalog size;
- **over-fetch**: otherwise the index (ScaNN or brute force) is asked for
  `ceil(k * N / estimated passing * safety)` candidates, at most `max_fetch`, and each
  candidate is tested against the constraints;
- **exact over the mask**: a row for which the over-fetch would need more than `max_fetch`
  candidates, or found fewer than k passing ones, is scored exactly over every passing item of
  the `[B, N]` mask, so a row is never short because of the over-fetch.

The defaults were chosen with `twotower bench index --filtered` (see `docs/serving.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from export.constraints import NO_ROW, ItemConstraints
from tfrs_model.errors import ConfigError


@dataclass(frozen=True)
class FilteredSearchConfig:
    """When a filtered row is scored exactly and how far the index is over-fetched.

    Attributes:
      exact_max_items: rows whose smallest source holds at most this many items are scored
        exactly over it.
      safety: over-fetch factor over the expected k / pass-fraction candidates.
      max_fetch: the most candidates asked of the index; rows needing more are scored exactly
        over the mask (0: never over-fetch).
    """

    exact_max_items: int = 2_000
    safety: float = 10.0
    max_fetch: int = 8_192

    def __post_init__(self) -> None:
        if self.exact_max_items < 0 or self.safety < 1.0 or self.max_fetch < 0:
            raise ConfigError(
                "FilteredSearchConfig needs exact_max_items >= 0, safety >= 1 and max_fetch >= 0 "
                f"(got {self.exact_max_items}, {self.safety}, {self.max_fetch})"
            )


def filtered_top_k(
    index: tf.keras.layers.Layer,
    embeddings: tf.Tensor,
    queries: tf.Tensor,
    k: tf.Tensor,
    max_k: int,
    constraints: ItemConstraints,
    config: FilteredSearchConfig,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The best items of each row that meet its constraints, best first.

    Args:
      index: a layer built by `export.index.build_index` over `embeddings`, identifiers = rows.
      embeddings: `[N, d]` float32 candidate embeddings (the index's candidates).
      queries: `[B, d]` float32.
      k: `[B]` int32 results wanted per row, 1..max_k (the caller checks the range).
      max_k: the width of the answer, at most N.
      constraints: what each row may return.
      config: the thresholds.

    Returns:
      (scores `[B, max_k]` float32 descending, rows `[B, max_k]` int32); slots past a row's k
      or past its passing items hold -inf and -1.
    """
    num_items = tf.cast(constraints.num_items, tf.float32)
    source, source_size = constraints.smallest_source()
    from_source = source_size <= config.exact_max_items
    fetch = tf.math.ceil(
        tf.cast(k, tf.float32)
        * num_items
        / tf.maximum(constraints.estimated_passing(), 1.0)
        * config.safety
    )
    over_fetch = ~from_source & (fetch <= config.max_fetch)
    batch = tf.shape(queries)[0]
    empty = (tf.fill([batch, max_k], float("-inf")), tf.fill([batch, max_k], NO_ROW))

    def fetched() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        asked = tf.cast(tf.reduce_max(tf.where(over_fetch, fetch, 0.0)), tf.int32)
        scores, rows = index(queries, k=tf.maximum(asked, max_k))
        rows = tf.cast(rows, tf.int32)
        scores, rows = _best(tf.where(constraints.passes(rows), scores, float("-inf")), rows, max_k)
        found = tf.reduce_sum(tf.cast(scores > float("-inf"), tf.int32), axis=1)
        return scores, rows, found >= k

    def sourced() -> tuple[tf.Tensor, tf.Tensor]:
        rows = constraints.source_candidates(source, from_source)
        return exact_candidates(embeddings, queries, rows, constraints.passes(rows), max_k)

    fetched_scores, fetched_rows, enough = tf.cond(
        tf.reduce_any(over_fetch), fetched, lambda: (*empty, tf.zeros([batch], tf.bool))
    )
    done = over_fetch & enough
    masked = ~from_source & ~done
    source_scores, source_rows = tf.cond(tf.reduce_any(from_source), sourced, lambda: empty)
    masked_scores, masked_rows = tf.cond(
        tf.reduce_any(masked),
        lambda: exact_subset(embeddings, queries, constraints.mask() & masked[:, None], max_k),
        lambda: empty,
    )
    scores = tf.where(
        from_source[:, None],
        source_scores,
        tf.where(done[:, None], fetched_scores, masked_scores),
    )
    rows = tf.where(
        from_source[:, None], source_rows, tf.where(done[:, None], fetched_rows, masked_rows)
    )
    return keep_first(scores, rows, k)


def exact_candidates(
    embeddings: tf.Tensor, queries: tf.Tensor, rows: tf.Tensor, keep: tf.Tensor, max_k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact top `max_k` of each row's candidates.

    Args:
      embeddings: `[N, d]`; queries: `[B, d]`; rows: `[B, C]` int32 catalog rows;
      keep: `[B, C]` bool, the candidates that may be returned.

    Returns:
      (scores `[B, max_k]`, rows `[B, max_k]` int32), -inf and -1 past the kept candidates.
    """
    vectors = tf.gather(embeddings, tf.maximum(rows, 0))  # [B, C, d]
    scores = tf.where(keep, tf.einsum("bcd,bd->bc", vectors, queries), float("-inf"))
    return _best(*_at_least(scores, rows, max_k), max_k)


def exact_subset(
    embeddings: tf.Tensor, queries: tf.Tensor, mask: tf.Tensor, max_k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact top `max_k` over each row's passing items: only those embeddings are gathered.

    Args:
      embeddings: `[N, d]`; queries: `[B, d]`; mask: `[B, N]` bool.

    Returns:
      (scores `[B, max_k]`, rows `[B, max_k]` int32), -inf and -1 past the passing items.
    """
    pairs = tf.cast(tf.where(mask), tf.int32)  # [P, 2]: (row of the batch, catalog row)
    batch_rows, items = pairs[:, 0], pairs[:, 1]
    scores = tf.reduce_sum(
        tf.gather(embeddings, items) * tf.gather(queries, batch_rows), axis=1
    )  # [P]
    nrows = tf.shape(mask, out_type=tf.int64)[0]
    ids = tf.cast(batch_rows, tf.int64)
    dense_scores = tf.RaggedTensor.from_value_rowids(scores, ids, nrows=nrows).to_tensor(
        float("-inf")
    )
    dense_rows = tf.RaggedTensor.from_value_rowids(items, ids, nrows=nrows).to_tensor(NO_ROW)
    return _best(*_at_least(dense_scores, dense_rows, max_k), max_k)


def _at_least(scores: tf.Tensor, rows: tf.Tensor, max_k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`[B, n]` scores and rows padded with -inf and -1 to at least `max_k` columns, so top_k
    always has enough."""
    width = tf.maximum(max_k - tf.shape(scores)[1], 0)
    scores = tf.pad(scores, [[0, 0], [0, width]], constant_values=float("-inf"))
    return scores, tf.pad(rows, [[0, 0], [0, width]], constant_values=NO_ROW)


def _best(scores: tf.Tensor, rows: tf.Tensor, max_k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Top `max_k` of `[B, n]` scores with their rows; -1 where the score is -inf."""
    top, positions = tf.math.top_k(scores, k=max_k)
    rows = tf.gather(rows, positions, batch_dims=1)
    return top, tf.where(top > float("-inf"), rows, NO_ROW)


def keep_first(scores: tf.Tensor, rows: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pads each row past its own k: `[B, K]` scores and rows, k `[B]`."""
    keep = tf.range(tf.shape(scores)[1])[None, :] < k[:, None]
    return tf.where(keep, scores, float("-inf")), tf.where(keep, rows, NO_ROW)
