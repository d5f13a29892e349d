"""The retrieval index: its configuration, building it (TFRS ScaNN or BruteForce), querying it.

`build_index` returns a `tfrs.layers.factorized_top_k.TopK` layer whose state is kept as variables,
so it saves inside the SavedModel; `retrieve` queries it with per-row exclusions and works inside a
`tf.function` with an `input_signature` (dynamic batch, k and number of exclusions), so it can be
exported as a serving signature.

Both index kinds score by dot product. Defaults of the ScaNN parameters are derived from the
catalog size by the rules below, chosen by measurement: `twotower bench index --sweep` (recall as
leaves searched and re-scoring depth vary, `benchmarks/results/index_sweep.json`) and
`twotower bench index --grid` (the defaults over 1.7K..1M items, dim 32/64, four distributions,
`benchmarks/results/index_defaults.json`). With them ScaNN's recall@10 and recall@100 against
exact search are >= 0.96 on clustered catalogs of 1.7K to 1M items, L2-normalized or not; on
isotropic Gaussian vectors (no neighbourhood structure) only catalogs up to 10K items, which are
searched exhaustively, reach 0.95.

k may be a Python int or a scalar int32 tensor, also inside a saved function: the ScaNN search
ops take `final_num_neighbors` and `pre_reorder_num_neighbors` as tensor inputs, so one exported
signature serves any k (checked by saving, reloading in a fresh process and querying).

Identifiers are catalog rows, `tf.int32` or `tf.int64` (the export maps item ids to rows with a
lookup table before and after the index, so the index never compares strings). Exclusions have the
identifiers' dtype and are padded with `INT_PAD` (-1), which must not be a real identifier; it also
marks result slots without a candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_model.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SCANN = "scann"
BRUTE_FORCE = "brute-force"
INDEX_KINDS = (SCANN, BRUTE_FORCE)
DISTANCE_MEASURE = "dot_product"

# The pad identifier: marks excluded padding and result slots without a candidate.
INT_PAD = -1
SUPPORTED_IDENTIFIER_DTYPES = (tf.int32, tf.int64)

# Rules for the derived ScaNN parameters (see the module docstring for how they were chosen).
# ScaNN's asymmetric hashing trains 16 centres per block, so it needs at least 16 candidates;
# smaller catalogs fall back to brute force, which is exact and costs nothing at that size.
MIN_SCANN_CANDIDATES = 16
# ScaNN's tree builder uses min_cluster_size=50: leaves hold on average at least this many.
MIN_LEAF_SIZE = 50
# Each query scores at least this fraction of the catalog, and at least this many candidates
# (so catalogs up to 10K items are searched exhaustively, which costs microseconds).
LEAF_FRACTION_SEARCHED = 0.05
MIN_CANDIDATES_SEARCHED = 10_000
# Candidates re-scored exactly after the quantized pass: at least 1000 and 20 per result.
MIN_REORDERING_CANDIDATES = 1000
REORDERING_CANDIDATES_PER_RESULT = 20


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How to index the candidate embeddings.

    Attributes:
      kind: "scann" (approximate, fast) or "brute-force" (exact). Default "scann".
      k: default number of results per query; a query may ask for another k. Default 100.
      num_leaves: ScaNN partitions (k-means leaves). None: round(sqrt(N)), at most N // 50.
      num_leaves_to_search: leaves each query scores. None: enough leaves to cover
        max(5% of N, 10,000) candidates (so catalogs up to 10K items are searched exhaustively).
      training_iterations: k-means iterations when building the ScaNN tree. Default 12.
      dimensions_per_block: dimensions per asymmetric-hashing block (fewer: more accurate,
        slower). Default 2, at most the embedding dimension.
      num_reordering_candidates: candidates re-scored exactly with the float embeddings after the
        quantized pass. None: max(1000, 20 * k), at most N. 0: no re-scoring (scores are then
        approximate and the float embeddings are not kept, which saves 4 * N * dim bytes).
      parallelize_batch_searches: search the queries of a batch in parallel. Default True.

    The ScaNN parameters are ignored when kind is "brute-force".

    Raises:
      ConfigError: a value is out of range; the message names the field and the fix.
    """

    kind: str = SCANN
    k: int = 100
    num_leaves: int | None = None
    num_leaves_to_search: int | None = None
    training_iterations: int = 12
    dimensions_per_block: int = 2
    num_reordering_candidates: int | None = None
    parallelize_batch_searches: bool = True

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(
                f"IndexConfig.kind must be one of {', '.join(map(repr, INDEX_KINDS))} "
                f"(got {self.kind!r}); use 'scann' for approximate search or 'brute-force' for "
                "exact search"
            )
        _check_int("k", self.k, minimum=1, fix="ask for at least one result, e.g. k=100")
        _check_int(
            "num_leaves",
            self.num_leaves,
            minimum=1,
            optional=True,
            fix="leave it None to derive it from the catalog size",
        )
        _check_int(
            "num_leaves_to_search",
            self.num_leaves_to_search,
            minimum=1,
            optional=True,
            fix="leave it None to derive it from the catalog size",
        )
        if (
            self.num_leaves is not None
            and self.num_leaves_to_search is not None
            and self.num_leaves_to_search > self.num_leaves
        ):
            raise ConfigError(
                f"IndexConfig.num_leaves_to_search ({self.num_leaves_to_search}) must not exceed "
                f"num_leaves ({self.num_leaves}); lower it, or leave it None to derive it"
            )
        _check_int(
            "training_iterations",
            self.training_iterations,
            minimum=1,
            fix="use at least 1 k-means iteration; 12 is the default",
        )
        _check_int(
            "dimensions_per_block",
            self.dimensions_per_block,
            minimum=1,
            fix="use 1 to 4; 2 is the default",
        )
        _check_int(
            "num_reordering_candidates",
            self.num_reordering_candidates,
            minimum=0,
            optional=True,
            fix="use 0 to disable re-scoring or leave it None to derive it",
        )
        if not isinstance(self.parallelize_batch_searches, bool):
            raise ConfigError(
                "IndexConfig.parallelize_batch_searches must be True or False "
                f"(got {self.parallelize_batch_searches!r})"
            )


def _check_int(name: str, value: Any, *, minimum: int, fix: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"IndexConfig.{name} must be an integer >= {minimum}"
            f"{' or None' if optional else ''} (got {value!r}); {fix}"
        )


def resolved_parameters(
    config: IndexConfig, num_candidates: int, dim: int | None = None
) -> dict[str, Any]:
    """The concrete parameters `build_index` uses for a catalog of `num_candidates` items.

    Pure: imports nothing heavy and builds nothing, so the model card can record it.

    Args:
      config: the requested configuration.
      num_candidates: N, the number of candidates indexed.
      dim: embedding dimension, if known (clamps `dimensions_per_block`).

    Returns:
      A JSON-serializable dict: "kind" (the kind actually built), "requested_kind",
      "distance_measure", "num_candidates", "k" and, for ScaNN, "num_leaves",
      "num_leaves_to_search", "training_iterations", "dimensions_per_block",
      "num_reordering_candidates", "parallelize_batch_searches"; "notes" lists every value that
      was clamped or derived differently from the request, one sentence each.

    Raises:
      DataError: `num_candidates` is less than 1.
    """
    if num_candidates < 1:
        raise DataError("cannot index an empty catalog: there are no candidate embeddings")
    notes: list[str] = []
    k = config.k
    if k > num_candidates:
        notes.append(f"k={k} exceeds the catalog size; clamped to {num_candidates}")
        k = num_candidates
    kind = config.kind
    if kind == SCANN and num_candidates < MIN_SCANN_CANDIDATES:
        notes.append(
            f"ScaNN needs at least {MIN_SCANN_CANDIDATES} candidates (got {num_candidates}); "
            "built an exact brute-force index instead"
        )
        kind = BRUTE_FORCE
    params: dict[str, Any] = {
        "kind": kind,
        "requested_kind": config.kind,
        "distance_measure": DISTANCE_MEASURE,
        "num_candidates": num_candidates,
        "k": k,
    }
    if kind == BRUTE_FORCE:
        params["notes"] = notes
        return params

    max_leaves = max(1, num_candidates // MIN_LEAF_SIZE)
    if config.num_leaves is None:
        num_leaves = max(1, min(round(math.sqrt(num_candidates)), max_leaves))
    else:
        num_leaves = config.num_leaves
        if num_leaves > max_leaves:
            notes.append(
                f"num_leaves={num_leaves} leaves fewer than {MIN_LEAF_SIZE} candidates per leaf; "
                f"clamped to {max_leaves}"
            )
            num_leaves = max_leaves

    if config.num_leaves_to_search is None:
        searched = max(LEAF_FRACTION_SEARCHED * num_candidates, MIN_CANDIDATES_SEARCHED)
        leaf_size = num_candidates / num_leaves
        num_leaves_to_search = min(num_leaves, max(1, math.ceil(searched / leaf_size)))
    else:
        num_leaves_to_search = config.num_leaves_to_search
        if num_leaves_to_search > num_leaves:
            notes.append(
                f"num_leaves_to_search={num_leaves_to_search} exceeds num_leaves; clamped to "
                f"{num_leaves}"
            )
            num_leaves_to_search = num_leaves

    dimensions_per_block = config.dimensions_per_block
    if dim is not None and dimensions_per_block > dim:
        notes.append(
            f"dimensions_per_block={dimensions_per_block} exceeds the embedding dimension; "
            f"clamped to {dim}"
        )
        dimensions_per_block = dim

    if config.num_reordering_candidates is None:
        reordering = min(
            num_candidates, max(MIN_REORDERING_CANDIDATES, REORDERING_CANDIDATES_PER_RESULT * k)
        )
    else:
        reordering = config.num_reordering_candidates
        if reordering > num_candidates:
            notes.append(
                f"num_reordering_candidates={reordering} exceeds the catalog size; clamped to "
                f"{num_candidates}"
            )
            reordering = num_candidates

    params.update(
        num_leaves=num_leaves,
        num_leaves_to_search=num_leaves_to_search,
        training_iterations=config.training_iterations,
        dimensions_per_block=dimensions_per_block,
        num_reordering_candidates=reordering,
        parallelize_batch_searches=config.parallelize_batch_searches,
        notes=notes,
    )
    return params


def _clamp_k(k: int | tf.Tensor, num_candidates: int) -> int | tf.Tensor:
    """min(k, N), staying a Python int when k is one (so result shapes stay static)."""
    if isinstance(k, int):
        return min(k, num_candidates)
    return tf.minimum(tf.cast(k, tf.int32), num_candidates)


class BruteForceIndex(tfrs.layers.factorized_top_k.BruteForce):
    """TFRS `BruteForce` whose `call` clamps k to the catalog size instead of failing.

    Built by `build_index`; `num_candidates`, `pad_id` and `identifier_dtype` are set there.
    """

    num_candidates: int
    pad_id: int
    identifier_dtype: tf.DType

    def call(
        self, queries: tf.Tensor, k: int | tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Exact top k by dot product.

        Args:
          queries: [batch, dim] float32 query embeddings.
          k: results per query, a Python int or scalar int32 tensor; default the layer's k.
            Clamped to N.

        Returns:
          (scores [batch, min(k, N)] float32 descending, identifiers [batch, min(k, N)]).
        """
        k = self._k if k is None else k
        return super().call(queries, k=_clamp_k(k, self.num_candidates))


class ScaNNIndex(tfrs.layers.factorized_top_k.ScaNN):
    """TFRS `ScaNN` whose `call` always returns k results per row, so callers can rely on shapes.

    TFRS 0.7.7's ScaNN `call` passes no `pre_reorder_num_neighbors`, so asking for more results
    than `num_reordering_candidates` silently returns only that many; and when the searched leaves
    hold fewer than k candidates ScaNN pads rows with NaN scores and index 0, i.e. the identifier
    of candidate 0. This `call` re-scores max(k, num_reordering_candidates) candidates and marks
    missing slots with score -inf and the pad identifier. Scores of the candidates found are
    exact dot products when re-scoring is on (the default), quantized approximations otherwise.

    Built by `build_index`; `num_candidates`, `pad_id`, `identifier_dtype` and `reordering` are
    set there.
    """

    num_candidates: int
    pad_id: int
    identifier_dtype: tf.DType
    reordering: int

    def call(
        self, queries: tf.Tensor, k: int | tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Approximate top k by dot product.

        Args:
          queries: [batch, dim] float32 query embeddings.
          k: results per query, a Python int or scalar int32 tensor (both work in a saved
            function); default the layer's k. Clamped to N.

        Returns:
          (scores [batch, min(k, N)] float32 descending, identifiers [batch, min(k, N)]); slots
          without a candidate hold -inf and the pad identifier.

        Raises:
          ValueError: `index` was not called, or queries are not rank 2.
        """
        from scann.scann_ops.py import scann_ops

        k = self._k if k is None else k
        k = _clamp_k(k, self.num_candidates)
        # Attribute names of TFRS 0.7.7's ScaNN layer, set by its `index`.
        if self._serialized_searcher is None:
            raise ValueError("The `index` method must be called first to create the index.")
        if self.query_model is not None:
            queries = self.query_model(queries)
        if queries.shape.rank != 2:
            raise ValueError(f"Queries must be [batch, dim], got shape {queries.shape}.")
        searcher = scann_ops.searcher_from_module(self._serialized_searcher)
        search = (
            searcher.search_batched_parallel
            if self._parallelize_batch_searches
            else searcher.search_batched
        )
        pre_reorder = tf.maximum(k, self.reordering) if self.reordering else k
        result = search(queries, final_num_neighbors=k, pre_reorder_num_neighbors=pre_reorder)
        scores = result.distances
        identifiers = tf.gather(self._identifiers, result.indices)
        found = tf.logical_not(tf.math.is_nan(scores))
        scores = tf.where(found, scores, float("-inf"))
        identifiers = tf.where(found, identifiers, tf.constant(self.pad_id, identifiers.dtype))
        missing = [[0, 0], [0, k - tf.shape(scores)[1]]]
        scores = tf.pad(scores, missing, constant_values=float("-inf"))
        identifiers = tf.pad(identifiers, missing, constant_values=self.pad_id)
        if isinstance(k, int):
            scores = tf.ensure_shape(scores, [None, k])
            identifiers = tf.ensure_shape(identifiers, [None, k])
        return scores, identifiers


def build_index(
    config: IndexConfig, candidates: tf.Tensor, identifiers: tf.Tensor
) -> tfrs.layers.factorized_top_k.TopK:
    """Builds the index over the candidate embeddings, ready to query and to save.

    The layer is called once on a zero query, so Keras has traced it and it saves inside a
    SavedModel (save ScaNN with `tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])`).
    Clamped values are logged, one line each, and listed by `resolved_parameters`.

    Args:
      config: the index configuration.
      candidates: [N, dim] float32 candidate embeddings.
      identifiers: [N] tf.int32 or tf.int64 identifiers returned for the candidates, e.g.
        `tf.range(N)` for catalog rows. The pad identifier -1 must not occur.

    Returns:
      A `ScaNNIndex` (a `tfrs.layers.factorized_top_k.ScaNN`) or a `BruteForceIndex` (a
      `tfrs.layers.factorized_top_k.BruteForce`); ScaNN catalogs of fewer than 16 items get
      brute force.

    Raises:
      DataError: wrong shapes or dtypes, or an empty catalog.
    """
    candidates = tf.convert_to_tensor(candidates)
    identifiers = tf.convert_to_tensor(identifiers)
    if candidates.dtype != tf.float32 or candidates.shape.rank != 2:
        raise DataError(
            f"candidates must be a [N, dim] float32 tensor (got {candidates.dtype.name} of shape "
            f"{candidates.shape}); cast with tf.cast(candidates, tf.float32)"
        )
    if identifiers.shape.rank != 1 or identifiers.shape[0] != candidates.shape[0]:
        raise DataError(
            f"identifiers must be a [N] tensor with one identifier per candidate row (got shape "
            f"{identifiers.shape} for {candidates.shape[0]} candidates)"
        )
    if identifiers.dtype not in SUPPORTED_IDENTIFIER_DTYPES:
        raise DataError(
            f"identifiers must be tf.int32 or tf.int64 catalog rows (got "
            f"{identifiers.dtype.name}); map item ids to rows, e.g. tf.range(N)"
        )
    num_candidates, dim = int(candidates.shape[0]), int(candidates.shape[1])
    params = resolved_parameters(config, num_candidates, dim)
    for note in params["notes"]:
        logger.warning("index: %s", note)

    index: tfrs.layers.factorized_top_k.TopK
    if params["kind"] == BRUTE_FORCE:
        index = BruteForceIndex(k=params["k"])
    else:
        reordering = params["num_reordering_candidates"]
        index = ScaNNIndex(
            k=params["k"],
            distance_measure=DISTANCE_MEASURE,
            num_leaves=params["num_leaves"],
            num_leaves_to_search=params["num_leaves_to_search"],
            training_iterations=params["training_iterations"],
            dimensions_per_block=params["dimensions_per_block"],
            num_reordering_candidates=reordering or None,
            parallelize_batch_searches=params["parallelize_batch_searches"],
        )
        index.reordering = reordering
    index.num_candidates = num_candidates
    index.pad_id = INT_PAD
    index.identifier_dtype = identifiers.dtype
    index.index(candidates, identifiers)
    index(tf.zeros([1, dim], tf.float32), k=params["k"])
    logger.info(
        "index: built %s over %d candidates of dim %d (%s)",
        params["kind"],
        num_candidates,
        dim,
        ", ".join(f"{key}={value}" for key, value in params.items() if key not in ("notes",)),
    )
    return index


def retrieve(
    index: tfrs.layers.factorized_top_k.TopK,
    queries: tf.Tensor,
    k: int | tf.Tensor,
    exclude_ids: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top k candidates per query, leaving out each row's excluded identifiers.

    Asks the index for min(k + E, N) candidates, drops the excluded ones and keeps the best k,
    so the result is exact for brute force whenever at least k candidates remain. The membership
    test sorts each row's exclusions and binary-searches them (O(B (k + E) log E)), never
    comparing every candidate with every exclusion. Works inside a `tf.function` with an
    `input_signature` of dynamic batch and E, and k a scalar int32 tensor.

    Args:
      index: a layer built by `build_index`.
      queries: [B, dim] float32 query embeddings.
      k: results per query: a Python int or a scalar int32 tensor. Clamped to N.
      exclude_ids: [B, E] identifiers to leave out (dtype of the index's identifiers), padded
        with -1; None for no exclusions.

    Returns:
      (scores [B, min(k, N)] float32 descending, identifiers [B, min(k, N)]). Slots left without
      a candidate (when exclusions leave fewer than k, or ScaNN finds fewer) hold score -inf and
      the pad identifier.

    Raises:
      ValueError: `index` was not built by `build_index`.
      DataError: `exclude_ids` has another dtype than the identifiers, or is not rank 2.
    """
    num_candidates = getattr(index, "num_candidates", None)
    if num_candidates is None:
        raise ValueError("retrieve needs an index built by export.index.build_index")
    k = _clamp_k(k, num_candidates)
    if exclude_ids is None:
        return index(queries, k=k)

    exclude_ids = tf.convert_to_tensor(exclude_ids)
    pad, id_dtype = index.pad_id, index.identifier_dtype
    if exclude_ids.dtype != id_dtype or exclude_ids.shape.rank != 2:
        raise DataError(
            f"exclude_ids must be a [batch, E] {id_dtype.name} tensor like the index's "
            f"identifiers (got {exclude_ids.dtype.name} of shape {exclude_ids.shape})"
        )
    # A pad column keeps E >= 1 (so the searches below are never empty) and also drops ScaNN's
    # pad slots, which carry the pad identifier.
    pad_column = tf.fill([tf.shape(exclude_ids)[0], 1], tf.constant(pad, id_dtype))
    exclude = tf.concat([exclude_ids, pad_column], axis=1)
    num_asked = _clamp_k(k + tf.shape(exclude_ids)[1], num_candidates)
    scores, identifiers = index(queries, k=num_asked)
    excluded = is_member(identifiers, exclude)
    scores = tf.where(excluded, float("-inf"), scores)
    top_scores, positions = tf.math.top_k(scores, k=k)
    top_identifiers = tf.gather(identifiers, positions, batch_dims=1)
    empty = tf.equal(top_scores, float("-inf"))
    top_identifiers = tf.where(empty, tf.constant(pad, id_dtype), top_identifiers)
    return top_scores, top_identifiers


def is_member(values: tf.Tensor, members: tf.Tensor) -> tf.Tensor:
    """`[B, n]` bool: whether values[b, i] occurs in members[b, :].

    Sorts each row's members and binary-searches them: O(B (n + m) log m), never a [B, n, m]
    comparison. `members` is `[B, m]` of the same dtype with m >= 1 (pad it with a value that
    never occurs in `values`).
    """
    sorted_members = tf.sort(members, axis=1)
    positions = tf.searchsorted(sorted_members, values, side="left")
    # A key past the end lands on the last member, which is smaller, so it does not match.
    positions = tf.minimum(positions, tf.shape(members)[1] - 1)
    return tf.equal(tf.gather(sorted_members, positions, batch_dims=1), values)
