"""Top k under a per-row pass mask: exact over a small passing subset, else an adaptive over-fetch.

`filtered_top_k` picks, per row of a batch, one of two ways (both run in one graph, each only when
some row needs it):

- **exact subset**: when at most `exact_max_items` items pass, or when the over-fetch would have
  to ask the index for more than `max_fetch` candidates, the passing items' embeddings are
  gathered and scored exactly (cost grows with the number passing, not with the catalog);
- **over-fetch**: otherwise the index (ScaNN or brute force) is asked for
  `ceil(k * N / passing * safety)` candidates, at most `max_fetch`, and the mask is applied to
  them. A row for which fewer than min(k, passing) candidates pass falls back to the exact
  subset, so a row is never short because of the over-fetch.

The defaults were chosen with `twotower bench index --filtered` (see `docs/serving.md`).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from tfrs_model.errors import ConfigError

NO_ROW = -1


@dataclass(frozen=True)
class FilteredSearchConfig:
    """When a filtered row is scored exactly and how far the index is over-fetched.

    Attributes:
      exact_max_items: rows with at most this many passing items are scored exactly.
      safety: over-fetch factor over the expected k / pass-fraction candidates.
      max_fetch: the most candidates asked of the index; rows needing more are scored exactly.
    """

    exact_max_items: int = 2_000
    safety: float = 10.0
    max_fetch: int = 8_192

    def __post_init__(self) -> None:
        if self.exact_max_items < 0 or self.safety < 1.0 or self.max_fetch < 1:
            raise ConfigError(
                "FilteredSearchConfig needs exact_max_items >= 0, safety >= 1 and max_fetch >= 1 "
                f"(got {self.exact_max_items}, {self.safety}, {self.max_fetch})"
            )


def filtered_top_k(
    index: tf.keras.layers.Layer,
    embeddings: tf.Tensor,
    queries: tf.Tensor,
    k: tf.Tensor,
    max_k: int,
    mask: tf.Tensor,
    config: FilteredSearchConfig,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The best passing items of each row, best first.

    Args:
      index: a layer built by `export.index.build_index` over `embeddings`, identifiers = rows.
      embeddings: `[N, d]` float32 candidate embeddings (the index's candidates).
      queries: `[B, d]` float32.
      k: `[B]` int32 results wanted per row, 1..max_k (the caller checks the range).
      max_k: the width of the answer, at most N.
      mask: `[B, N]` bool, the items each row may return.
      config: the thresholds.

    Returns:
      (scores `[B, max_k]` float32 descending, rows `[B, max_k]` int32); slots past a row's k
      or past its passing items hold -inf and -1.
    """
    num_items = tf.shape(mask, out_type=tf.int32)[1]
    passing = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
    wanted = tf.minimum(k, passing)
    fetch = tf.math.ceil(
        tf.cast(k, tf.float32)
        * tf.cast(num_items, tf.float32)
        / tf.cast(tf.maximum(passing, 1), tf.float32)
        * config.safety
    )
    over_fetch = (passing > config.exact_max_items) & (fetch <= config.max_fetch)
    batch = tf.shape(queries)[0]
    empty = (tf.fill([batch, max_k], float("-inf")), tf.fill([batch, max_k], NO_ROW))

    def fetched() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        asked = tf.cast(tf.reduce_max(tf.where(over_fetch, fetch, 0.0)), tf.int32)
        scores, rows = index(queries, k=tf.maximum(asked, max_k))
        rows = tf.cast(rows, tf.int32)
        passed = tf.gather(mask, tf.maximum(rows, 0), batch_dims=1) & (rows >= 0)
        scores, rows = _best(tf.where(passed, scores, float("-inf")), rows, max_k)
        found = tf.reduce_sum(tf.cast(scores > float("-inf"), tf.int32), axis=1)
        return scores, rows, found >= wanted

    fetched_scores, fetched_rows, enough = tf.cond(
        tf.reduce_any(over_fetch), fetched, lambda: (*empty, tf.zeros([batch], tf.bool))
    )
    done = over_fetch & enough
    exact = ~done & (passing > 0)
    exact_scores, exact_rows = tf.cond(
        tf.reduce_any(exact),
        lambda: exact_subset(embeddings, queries, mask & exact[:, None], max_k),
        lambda: empty,
    )
    scores = tf.where(done[:, None], fetched_scores, exact_scores)
    rows = tf.where(done[:, None], fetched_rows, exact_rows)
    return keep_first(scores, rows, k)


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
    # At least max_k columns, so top_k always has enough.
    width = tf.maximum(max_k - tf.shape(dense_scores)[1], 0)
    dense_scores = tf.pad(dense_scores, [[0, 0], [0, width]], constant_values=float("-inf"))
    dense_rows = tf.pad(dense_rows, [[0, 0], [0, width]], constant_values=NO_ROW)
    return _best(dense_scores, dense_rows, max_k)


def _best(scores: tf.Tensor, rows: tf.Tensor, max_k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Top `max_k` of `[B, n]` scores with their rows; -1 where the score is -inf."""
    top, positions = tf.math.top_k(scores, k=max_k)
    rows = tf.gather(rows, positions, batch_dims=1)
    return top, tf.where(top > float("-inf"), rows, NO_ROW)


def keep_first(scores: tf.Tensor, rows: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Pads each row past its own k: `[B, K]` scores and rows, k `[B]`."""
    keep = tf.range(tf.shape(scores)[1])[None, :] < k[:, None]
    return tf.where(keep, scores, float("-inf")), tf.where(keep, rows, NO_ROW)
