"""Extra negatives drawn uniformly from the catalog and attached to every training batch.

In-batch negatives are drawn in proportion to item popularity, so rare items are almost never
pushed down; uniform draws from the catalog complement them ("mixed negative sampling", Yang et
al., WWW 2020). When the requested number covers the catalog, every batch carries the whole
catalog and the loss is an exact full softmax.
"""

from __future__ import annotations

import numpy as np

from tfrs_model.features.examples import SAMPLING_PROBABILITY, Arrays, to_tensor_dict

NEGATIVES = "negatives"
# Per negative row: 1 / catalog size, the chance that one uniform draw picks a given item.
UNIFORM_PROBABILITY = "uniform_probability"


def negatives_dataset(catalog: Arrays, probability: np.ndarray, num_negatives: int, seed: int):
    """An endless `tf.data.Dataset` of negative batches.

    Args:
      catalog: candidate-tower inputs of every catalog item (`[N]` or `[N, L]` arrays).
      probability: `[N]` in-batch sampling probability of each item (its share of training
        positives; 0 for items without any), for the mixed logQ correction.
      num_negatives: items per batch; `>= N` gives the whole catalog in every batch.
      seed: shuffle seed.

    Returns:
      Elements are the candidate inputs of `min(num_negatives, N)` items plus
      `candidate_sampling_probability` and `uniform_probability` (both `[M]` float32). Below the
      catalog size, items are drawn without replacement within each pass over the catalog.
    """
    import tensorflow as tf

    size = len(probability)
    columns = {
        **catalog,
        SAMPLING_PROBABILITY: probability.astype(np.float32),
        UNIFORM_PROBABILITY: np.full(size, 1.0 / size, dtype=np.float32),
    }
    if num_negatives >= size:
        return tf.data.Dataset.from_tensors(to_tensor_dict(columns)).repeat()
    return (
        tf.data.Dataset.from_tensor_slices(to_tensor_dict(columns))
        .shuffle(size, seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(num_negatives, drop_remainder=True)
    )


def attach_negatives(examples, negatives):
    """Adds one negative batch under the key `negatives` to every example batch."""
    import tensorflow as tf

    return (
        tf.data.Dataset.zip((examples, negatives))
        .map(lambda batch, extra: {**batch, NEGATIVES: extra})
        .prefetch(tf.data.AUTOTUNE)
    )
