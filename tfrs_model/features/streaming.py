"""Training batches streamed from the example shards, with vocabulary codes looked up per fit.

A shard row carries catalog rows (`user_row`, `item_row`, `history` of item rows). A fit turns
them into the integer codes its towers embed, by gathering from `CodeTables`: per user row and
item row, the code of every tower input, computed once with the towers' own lookup layers (so
they equal what the exported graph computes from strings). No string exists per example: memory
is bounded by the shuffle buffer, whatever the log size.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_model.data.splits import TRAIN, SplitData
from tfrs_model.errors import ConfigError
from tfrs_model.features.batching import round_robin, shuffled_batches
from tfrs_model.features.examples import (
    LIKE,
    RATING,
    SAMPLING_PROBABILITY,
    WEIGHT,
    item_sampling_probability,
)
from tfrs_model.features.shards import ExampleShards, read_rows
from tfrs_model.features.spec import CANDIDATE, HISTORY, ITEM_ID, QUERY, USER_ID, FeatureSet
from tfrs_model.features.tables import FeatureTables

SHUFFLE_BUFFER = 131_072
_CHUNK_ROWS = 8_192
_FILES_AT_ONCE = 8


@dataclass(frozen=True)
class ExampleUse:
    """Which shard rows a fit reads, and how they become its inputs.

    Attributes:
      history_length: H, the history the towers take; a wider shard history (shards written
        for `train.history_skip`) is cut to H, ending a random number of items early. None
        takes the shard history whole.
      with_ratings: add each row's rating (the rating head trains on every rated row).
      with_likes: add each row's positive label as a float (the like head trains on every row).
      non_positive_weight: retrieval weight of rows below the positive threshold (seen but not
        liked); 0 keeps them out of retrieval.
    """

    history_length: int | None = None
    with_ratings: bool = False
    with_likes: bool = False
    non_positive_weight: float = 0.0

    @property
    def positives_only(self) -> bool:
        """Whether only positive rows are read (nothing else trains)."""
        return not (self.with_ratings or self.with_likes or self.non_positive_weight > 0)


@dataclass(frozen=True)
class CodeTables:
    """Per catalog row, the codes of every tower input of one fit.

    Attributes:
      user: feature name -> `[U]` or `[U, L]` int64 codes, by row of the users table.
      item: feature name -> `[I]` or `[I, L]` int64 codes, by row of the items table.
      history: `[I + 1]` int64: the history code of item row r at r + 1, the mask code 0 at 0
        (so a padding row -1 maps to 0); None without a history feature.
      probability: `[I]` float32 in-batch sampling probability of each item in this fit.
    """

    user: dict[str, np.ndarray]
    item: dict[str, np.ndarray]
    history: np.ndarray | None
    probability: np.ndarray


def _codes(layer, values: np.ndarray) -> np.ndarray:
    strings = values.astype(str) if values.dtype == object else values
    return layer.codes(tf.constant(strings)).numpy()


def code_tables(
    model, features: FeatureSet, split: SplitData, positives_only: bool = True
) -> CodeTables:
    """The `CodeTables` of `model`'s towers over the users and items of `split`.

    `split` is the fit's view of the data: its `train` rows (positives, or all when the fit
    reads them all) give the sampling probabilities.
    """
    tables = FeatureTables(split.data)
    user_ids = split.data.users["user_id"].astype(str).to_numpy(dtype=object)
    item_ids = split.data.items["item_id"].astype(str).to_numpy(dtype=object)
    query, candidate = model.query_model.embeddings, model.candidate_model.embeddings
    user_inputs = {USER_ID: user_ids, **tables.user_features(user_ids)}
    item_inputs = {ITEM_ID: item_ids, **tables.item_features(item_ids)}
    probability = item_sampling_probability(split, positives_only=positives_only)
    return CodeTables(
        user={
            name: _codes(query[name], user_inputs[name])
            for name in features.names("query")
            if name != HISTORY
        },
        item={
            name: _codes(candidate[name], item_inputs[name]) for name in features.names("candidate")
        },
        history=(
            np.concatenate([[0], _codes(query[HISTORY], item_ids)])
            if HISTORY in features.names("query")
            else None
        ),
        probability=probability.reindex(pd.Index(item_ids)).fillna(0.0).to_numpy(np.float32),
    )


def _chunks(path: str, history_length: int, positives_only: bool) -> Iterator[dict]:
    """One shard file's rows (positives only, or all), `_CHUNK_ROWS` at a time."""
    for chunk in read_rows(path, history_length, _CHUNK_ROWS):
        if not history_length:
            del chunk["history"]
        if positives_only:
            keep = chunk["positive"]
            chunk = {name: values[keep] for name, values in chunk.items()}
        if len(chunk["user_row"]):
            yield chunk


def _batch_signature(history_length: int, with_skips: bool = False) -> dict[str, tf.TensorSpec]:
    signature = {
        "user_row": tf.TensorSpec([None], tf.int32),
        "item_row": tf.TensorSpec([None], tf.int32),
        "positive": tf.TensorSpec([None], tf.bool),
        "weight": tf.TensorSpec([None], tf.float32),
        "rating": tf.TensorSpec([None], tf.float32),
    }
    if history_length:  # a [n, 0] tensor through tf.data's generator crashes TensorFlow 2.20
        signature["history"] = tf.TensorSpec([None, history_length], tf.int32)
    if with_skips:
        signature[SKIP] = tf.TensorSpec([None], tf.int32)
    return signature


SKIP = "history_skip"  # per row, how many of the latest history items its window leaves out


def skipped_history(history: tf.Tensor, length: int, dropped: tf.Tensor | None = None) -> tf.Tensor:
    """Per row, `length` consecutive items ending `dropped` (0..S) items before the last.

    Args:
      history: `[n, length + S]` int32 item rows, most recent last (S = `history_skip`).
      length: H, the history the towers take.
      dropped: `[n]` int32 in 0..S; None draws them uniformly here (unseeded: the
        parameter-server workers' pipelines, whose order is unseeded too).

    Returns:
      `[n, H]`: row i is `history[i, S - s_i : S - s_i + H]`, s_i = `dropped[i]`.
    """
    skip = tf.shape(history)[1] - length
    if dropped is None:
        dropped = tf.random.uniform(tf.shape(history)[:1], 0, skip + 1, dtype=tf.int32)
    positions = (skip - dropped)[:, None] + tf.range(length)[None, :]
    return tf.gather(history, positions, batch_dims=1)


def _with_skips(batches: Iterator[dict], skip: int, seed: int) -> Iterator[dict]:
    """`batches`, each with `SKIP`: per row a uniform 0..`skip` drawn from a seeded generator, so
    a seeded run cuts the same windows (a random op in a parallel `tf.data` map would not)."""
    rng = np.random.default_rng([seed, skip])
    for batch in batches:
        batch[SKIP] = rng.integers(0, skip + 1, len(batch["user_row"]), dtype=np.int32)
        yield batch


def model_inputs(batch: dict[str, tf.Tensor], tables: CodeTables, use: ExampleUse) -> dict:
    """Shard rows -> each tower's code inputs (under `query` and `candidate`, since a user and
    an item feature may share a name) plus the task's probability and weight, and the heads'
    rating and like labels when they train."""
    query = {name: tf.gather(codes, batch["user_row"]) for name, codes in tables.user.items()}
    if tables.history is not None:
        history = batch["history"]
        if use.history_length is not None and history.shape[1] > use.history_length:
            history = skipped_history(history, use.history_length, batch.get(SKIP))
        query[HISTORY] = tf.gather(tables.history, history + 1)
    candidate = {name: tf.gather(codes, batch["item_row"]) for name, codes in tables.item.items()}
    # Non-positives (read for the rating head, or with a retrieval weight of their own) train
    # retrieval only with `non_positive_weight`.
    retrieval = tf.where(batch["positive"], 1.0, use.non_positive_weight)
    inputs = {
        QUERY: query,
        CANDIDATE: candidate,
        SAMPLING_PROBABILITY: tf.gather(tables.probability, batch["item_row"]),
        WEIGHT: batch["weight"] * retrieval,
    }
    if use.with_ratings:
        inputs[RATING] = batch["rating"]
    if use.with_likes:
        inputs[LIKE] = tf.cast(batch["positive"], tf.float32)
    return inputs


def steps_per_epoch(
    shards: ExampleShards, splits: tuple[str, ...], batch_size: int, positives_only: bool
) -> int:
    """ceil(examples / global batch): the steps of one pass over the `splits`' examples."""
    examples = shards.num_examples(splits, positives_only=positives_only)
    return max(1, -(-examples // batch_size))


def training_dataset(
    shards: ExampleShards,
    splits: tuple[str, ...],
    tables: CodeTables,
    *,
    batch_size: int,
    seed: int,
    use: ExampleUse,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Endless shuffled batches of the `splits`' examples.

    Shard files are shuffled each epoch and read `_FILES_AT_ONCE` at a time, round robin; rows
    are shuffled `SHUFFLE_BUFFER` at a time in NumPy (`features.batching`), so the only
    per-example work is a gather, and the batches are mapped to the towers' codes in `tf.data`. Under a distribution strategy
    (`input_context`, from `tf.keras.utils.experimental.DatasetCreator`) each input pipeline
    reads its own shard files and batches its replicas' share of the global `batch_size`.

    Raises:
      ConfigError: fewer shard files than input pipelines.
    """
    files = shards.files(splits)
    if input_context is not None:
        pipelines = input_context.num_input_pipelines
        if len(files) < pipelines:
            raise ConfigError(
                f"{len(files)} example shard files cannot be shared by {pipelines} workers; "
                "use fewer workers"
            )
        files = files[input_context.input_pipeline_id :: pipelines]
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    history_length, positives_only = shards.history_length, use.positives_only
    # Each input pipeline shuffles its own files, each epoch in a new order.
    pipeline_seed = seed + (input_context.input_pipeline_id if input_context else 0)

    def epoch_chunks(epoch: int) -> Iterator[dict]:
        order = np.random.default_rng([pipeline_seed, epoch]).permutation(len(files))
        readers = [_chunks(files[i], history_length, positives_only) for i in order]
        return round_robin(readers, open_at_once=_FILES_AT_ONCE)

    # Shard histories wider than the towers take are cut per row (`train.history_skip`).
    skip = 0 if use.history_length is None else max(0, history_length - use.history_length)

    def batches() -> Iterator[dict]:
        shuffled = shuffled_batches(
            epoch_chunks, batch_size=batch_size, buffer_rows=SHUFFLE_BUFFER, seed=pipeline_seed
        )
        return _with_skips(shuffled, skip, pipeline_seed) if skip else shuffled

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=_batch_signature(history_length, with_skips=skip > 0)
    ).map(
        functools.partial(model_inputs, tables=tables, use=use),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def saved_examples(
    shards: ExampleShards, splits: tuple[str, ...], positives_only: bool = True
) -> Path:
    """The `splits`' example rows in tf.data's own format (`Dataset.save`), beside the shards.

    Parameter-server workers run the input pipeline in their own processes, from a graph the
    coordinator sends: they cannot call back into a Python generator, so they read this copy
    (written once per `splits`, atomically) with `Dataset.load`.
    """
    name = f"tfdata-{'+'.join(splits)}-{'positives' if positives_only else 'all'}"
    path = shards.directory / name
    if path.exists():
        return path
    files, history_length = shards.files(splits), shards.history_length

    def chunks() -> Iterator[dict]:
        for file in files:
            yield from _chunks(file, history_length, positives_only)

    staging = shards.directory / f".{name}.tmp"
    tf.data.Dataset.from_generator(chunks, output_signature=_batch_signature(history_length)).save(
        str(staging)
    )
    staging.rename(path)
    return path


def remote_training_dataset(
    path: Path,
    tables: CodeTables,
    *,
    history_length: int,
    batch_size: int,
    use: ExampleUse,
) -> tf.data.Dataset:
    """Endless batches of the rows `saved_examples` wrote, for a parameter-server worker.

    Every worker reads all of them in its own random order (the shuffle is unseeded): workers
    train asynchronously, each step on a batch drawn from the whole training set.
    """
    rows = tf.data.Dataset.load(str(path), element_spec=_batch_signature(history_length))
    return (
        rows.unbatch()
        .shuffle(SHUFFLE_BUFFER, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(
            functools.partial(model_inputs, tables=tables, use=use),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def check_likes(split: SplitData) -> None:
    """Raises unless the training split holds both liked and not-liked interactions.

    Raises:
      ConfigError: every training interaction is positive (or none is).
    """
    positive = split.interactions.loc[split.interactions["split"] == TRAIN, "positive"]
    if positive.all() or not positive.any():
        raise ConfigError(
            f"like_weight > 0 trains a like head to tell liked from other interactions, but "
            f"{int(positive.sum())} of {len(positive)} training interactions are positive; give "
            "the dataset a positive rule (min_positive_rating, or positive_if in a dataset "
            "config) that leaves some out, or set like_weight to 0"
        )


def check_ratings(split: SplitData) -> None:
    """Raises unless every training interaction has a rating (the rating head needs them).

    Raises:
      ConfigError: some training interaction has no rating.
    """
    train = split.interactions[split.interactions["split"] == TRAIN]
    missing = int(train["rating"].isna().sum())
    if missing:
        raise ConfigError(
            f"rating_weight > 0 trains a rating head, but {missing} of {len(train)} training "
            "interactions have no rating; map a rating column or set rating_weight to 0"
        )
