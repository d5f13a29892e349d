"""Shuffled fixed-size batches from chunks of rows, shuffled in NumPy a buffer at a time.

A shuffle buffer in `tf.data` moves every example through the runtime one by one
(`unbatch().shuffle().batch()`), a few microseconds each: at tens of thousands of examples per
second on two cores that is a large share of the CPU the model needs. Here rows arrive in chunks
(a few thousand rows of one shard file), several files are read round robin, and a buffer of
rows is permuted as a whole: the per-example cost is a NumPy gather.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

Chunk = dict[str, np.ndarray]


def round_robin(sources: Sequence[Iterable[Chunk]], open_at_once: int) -> Iterator[Chunk]:
    """Chunks of `sources` in turn, `open_at_once` sources at a time, each to its end.

    A source that ends is replaced by the next unopened one, so rows of `open_at_once` files
    are always mixed in the stream.
    """
    pending = iter(sources)
    active: list[Iterator[Chunk]] = []
    for source in pending:
        active.append(iter(source))
        if len(active) == open_at_once:
            break
    while active:
        for reader in list(active):
            chunk = next(reader, None)
            if chunk is None:
                active.remove(reader)
                following = next(pending, None)
                if following is not None:
                    active.append(iter(following))
                continue
            yield chunk


def _concat(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _take(chunk: Chunk, index: np.ndarray | slice) -> Chunk:
    return {name: values[index] for name, values in chunk.items()}


def _rows(chunk: Chunk) -> int:
    return len(next(iter(chunk.values())))


def shuffled_batches(
    epochs: Callable[[int], Iterable[Chunk]],
    *,
    batch_size: int,
    buffer_rows: int,
    seed: int,
) -> Iterator[Chunk]:
    """Endless batches of exactly `batch_size` rows, in shuffled order.

    Args:
      epochs: `epochs(n)` gives the chunks of epoch `n` (0, 1, ...), e.g. the shard files in an
        order shuffled by `n`. Every chunk has the same keys, with arrays of equal length.
      batch_size: rows per batch.
      buffer_rows: rows permuted together; the larger, the closer to a uniform shuffle.
      seed: the permutations' seed; the same seed and `epochs` give the same batches.

    Every row of an epoch is in exactly one batch: rows left over at an epoch's end (fewer than
    a batch) open the next one's buffer, so nothing is dropped across epochs.

    Raises:
      ValueError: `batch_size` or `buffer_rows` < 1, or an epoch without rows.
    """
    if batch_size < 1 or buffer_rows < 1:
        raise ValueError(
            f"batch_size and buffer_rows must be >= 1, got {batch_size}, {buffer_rows}"
        )
    rng = np.random.default_rng(seed)
    carried: list[Chunk] = []
    epoch = 0
    while True:
        rows_in_epoch = 0
        for chunk in epochs(epoch):
            rows_in_epoch += _rows(chunk)
            carried.append(chunk)
            if sum(map(_rows, carried)) >= buffer_rows:
                carried = yield from _drain(
                    _concat(carried), batch_size, rng, keep=buffer_rows // 2
                )
        if rows_in_epoch == 0:
            raise ValueError(f"epoch {epoch} has no rows to batch")
        if carried:
            carried = yield from _drain(_concat(carried), batch_size, rng, keep=0)
        epoch += 1


def _drain(buffer: Chunk, batch_size: int, rng: np.random.Generator, keep: int):
    """Permutes `buffer`, yields whole batches until at most `keep` (or less than a batch of)
    rows are left, and returns those as the next buffer's start."""
    rows = _rows(buffer)
    buffer = _take(buffer, rng.permutation(rows))
    batches = max(rows - keep, 0) // batch_size
    for start in range(0, batches * batch_size, batch_size):
        yield _take(buffer, slice(start, start + batch_size))
    rest = _take(buffer, slice(batches * batch_size, rows))
    return [rest] if _rows(rest) else []
