"""Measures the retrieval index: ScaNN against brute force, and the recall of ScaNN's defaults.

Two benchmarks, both run by `twotower bench index`:

* `run_index_benchmark`: one catalog (e.g. 1M x 64); for ScaNN with `IndexConfig`'s defaults and
  for TFRS brute force it measures build time, index memory, single-query latency, batched
  throughput and recall@k against exact search, and ScaNN's p50 speed-up over brute force.
* `run_defaults_grid`: recall@10 and recall@100 of the default ScaNN parameters over a grid of
  catalog sizes, dimensions and embedding distributions; the evidence behind those defaults.

Catalogs are synthetic: isotropic Gaussian ("gaussian") or a Gaussian mixture with Zipf-sized
clusters ("clustered"), optionally L2-normalized (the model's default embeddings). Queries are
fresh draws from the same distribution. Timings go through `export.index.retrieve` inside a
`tf.function` with an `input_signature`, i.e. the path a serving signature takes.

Latency percentiles are those of `benchmarks.stats` (linear interpolation), as in the serve
benchmark. The pure helpers (`recall_at_k`, `synthetic_catalog`, `exact_top_k`,
`render_markdown`) import no TensorFlow.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import latency_ms

DISTRIBUTIONS = ("gaussian", "gaussian-normalized", "clustered", "clustered-normalized")
GRID_SIZES = (1_700, 10_000, 100_000, 1_000_000)
GRID_DIMS = (32, 64)
GRID_KS = (10, 100)
TARGET_SPEEDUP = 20.0
TARGET_RECALL = 0.95
_CLUSTER_STD = 0.5  # per-dimension spread of a cluster around its unit-variance centre


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of |approx top k ∩ exact top k| / k.

    Args:
      approx_ids: [Q, >= k] identifiers returned by the index, best first.
      exact_ids: [Q, >= k] identifiers of the exact top k, best first.
      k: cut-off.

    Raises:
      ValueError: the arrays have different numbers of rows or fewer than k columns.
    """
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"{approx_ids.shape[0]} result rows for {exact_ids.shape[0]} queries")
    if min(approx_ids.shape[1], exact_ids.shape[1]) < k:
        raise ValueError(f"need at least k={k} results per query")
    if approx_ids.shape[0] == 0:
        return float("nan")
    hits = sum(
        len(set(a[:k].tolist()) & set(e[:k].tolist()))
        for a, e in zip(approx_ids, exact_ids, strict=True)
    )
    return hits / (k * approx_ids.shape[0])


def synthetic_catalog(
    num_items: int,
    dim: int,
    num_queries: int,
    *,
    distribution: str = "clustered-normalized",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Candidate and query embeddings drawn from one distribution.

    "clustered": round(sqrt(N) / 2) (at least 10) Gaussian centres with unit variance, cluster
    sizes proportional to 1 / rank**0.8, points at per-dimension std 0.5 around their centre.
    "-normalized" rescales every vector to unit L2 norm.

    Returns:
      (candidates [N, dim] float32, queries [num_queries, dim] float32, description dict).

    Raises:
      ValueError: unknown distribution.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS} (got {distribution!r})")
    rng = np.random.default_rng(seed)
    total = num_items + num_queries
    description: dict[str, Any] = {"distribution": distribution, "seed": seed}
    if distribution.startswith("gaussian"):
        points = rng.standard_normal((total, dim), dtype=np.float32)
    else:
        clusters = max(10, round(math.sqrt(num_items) / 2))
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        assignment = rng.choice(clusters, size=total, p=weights / weights.sum())
        points = centres[assignment]
        points += _CLUSTER_STD * rng.standard_normal((total, dim), dtype=np.float32)
        description.update(clusters=clusters, cluster_std=_CLUSTER_STD, cluster_sizes="zipf 0.8")
    if distribution.endswith("normalized"):
        points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:num_items], points[num_items:], description


def exact_top_k(
    candidates: np.ndarray, queries: np.ndarray, k: int, batch_size: int = 128
) -> np.ndarray:
    """Exact top k rows by dot product, best first: [Q, k] int64 row indices."""
    k = min(k, candidates.shape[0])
    rows = []
    for start in range(0, queries.shape[0], batch_size):
        scores = queries[start : start + batch_size] @ candidates.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        rows.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(rows)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def index_state_bytes(index: Any) -> int:
    """Bytes of the index's variables, i.e. what the SavedModel stores for it.

    For ScaNN: the serialized searcher (config, partitioner, codes, float embeddings kept for
    re-scoring) plus the identifiers; for brute force: the embeddings plus the identifiers.
    String variables count their bytes.
    """
    total = 0
    for variable in index.variables:
        if variable.dtype.name == "string":
            total += sum(len(value) for value in np.ravel(variable.numpy()))
        else:
            total += int(np.prod(variable.shape)) * variable.dtype.size
    return total


def _time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int) -> list[float]:
    for value in inputs[:warmup]:
        fn(value)
    latencies = []
    for value in inputs:
        start = time.perf_counter()
        fn(value)
        latencies.append(time.perf_counter() - start)
    return latencies


def measure_index(
    config: Any,
    candidates: np.ndarray,
    identifiers: np.ndarray,
    queries: np.ndarray,
    exact_rows: np.ndarray,
    *,
    k: int,
    batch_size: int,
    warmup: int = 50,
) -> dict[str, Any]:
    """Builds one index and measures it.

    Args:
      config: an `export.index.IndexConfig`.
      candidates: [N, dim] float32; identifiers: [N] int32 or int64 catalog rows for them.
      queries: [Q, dim] float32; exact_rows: [Q, >= k] exact top rows (from `exact_top_k`).
      k: results per query; batch_size: queries per batch for the throughput measurement.
      warmup: calls made before timing.

    Returns:
      {"parameters", "build_s", "state_bytes", "rss_delta_bytes" (process growth across the
       build, input tensors excluded), "latency_ms" (batch 1: p50, p90, p99, mean;
       `benchmarks.stats.latency_ms`), "throughput_qps" (batched),
       "recall_at_k", "k", "num_queries"}.
    """
    import tensorflow as tf

    from export.index import build_index, resolved_parameters, retrieve

    candidates_tensor, identifiers_tensor = tf.constant(candidates), tf.constant(identifiers)
    gc.collect()
    rss_before = rss_bytes()
    start = time.perf_counter()
    index = build_index(config, candidates_tensor, identifiers_tensor)
    build_s = time.perf_counter() - start
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    del candidates_tensor, identifiers_tensor

    dim = candidates.shape[1]

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
    def search(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return retrieve(index, batch, k)

    singles = [tf.constant(queries[i : i + 1]) for i in range(queries.shape[0])]
    latencies = _time_calls(search, singles, warmup)
    batches = [
        tf.constant(queries[i : i + batch_size]) for i in range(0, queries.shape[0], batch_size)
    ]
    search(batches[0])
    start = time.perf_counter()
    found = [search(batch)[1].numpy() for batch in batches]
    batched_s = time.perf_counter() - start

    lookup = np.asarray(identifiers)
    recall = recall_at_k(np.concatenate(found), lookup[exact_rows[:, :k]], k)
    return {
        "parameters": resolved_parameters(config, candidates.shape[0], dim),
        "build_s": build_s,
        "state_bytes": index_state_bytes(index),
        "rss_delta_bytes": rss_delta,
        "latency_ms": latency_ms(latencies),
        "throughput_qps": queries.shape[0] / batched_s,
        "recall_at_k": recall,
        "k": k,
        "num_queries": queries.shape[0],
    }


def run_index_benchmark(
    num_items: int,
    dim: int,
    *,
    num_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    distribution: str = "clustered-normalized",
) -> dict[str, Any]:
    """ScaNN (IndexConfig defaults with this k) against TFRS brute force on one catalog.

    Identifiers are int32 catalog rows, as in the export (whose signatures map item ids to rows
    outside the index). Brute force is measured first, then ScaNN, in one process, so the speed-up
    compares p50s taken on the same machine in the same run.

    Returns:
      {"dataset", "k", "batch_size", "indexes": {"brute-force": ..., "scann": ...},
       "scann_speedup_p50", "target": {..., "met"}}.
    """
    from export.index import BRUTE_FORCE, SCANN, IndexConfig

    candidates, queries, description = synthetic_catalog(
        num_items, dim, num_queries, distribution=distribution, seed=seed
    )
    identifiers = np.arange(num_items, dtype=np.int32)
    start = time.perf_counter()
    exact_rows = exact_top_k(candidates, queries, k)
    exact_s = time.perf_counter() - start
    indexes = {}
    for kind in (BRUTE_FORCE, SCANN):
        indexes[kind] = measure_index(
            IndexConfig(kind=kind, k=k),
            candidates,
            identifiers,
            queries,
            exact_rows,
            k=k,
            batch_size=batch_size,
        )
        gc.collect()
    speedup = indexes[BRUTE_FORCE]["latency_ms"]["p50"] / indexes[SCANN]["latency_ms"]["p50"]
    recall = indexes[SCANN]["recall_at_k"]
    return {
        "dataset": {
            **description,
            "num_items": num_items,
            "dim": dim,
            "num_queries": num_queries,
            "identifiers": "int32 catalog rows",
            "numpy_exact_search_s": exact_s,
        },
        "k": k,
        "batch_size": batch_size,
        "indexes": indexes,
        "scann_speedup_p50": speedup,
        "target": {
            "speedup_p50": TARGET_SPEEDUP,
            "recall_at_k": TARGET_RECALL,
            "met": bool(speedup >= TARGET_SPEEDUP and recall >= TARGET_RECALL),
        },
    }


def _describe(data: dict[str, Any]) -> str:
    distribution = data["distribution"]
    text = (
        f"synthetic Gaussian-mixture embeddings ({data['clusters']} clusters, Zipf sizes, "
        f"cluster std {data['cluster_std']})"
        if distribution.startswith("clustered")
        else "synthetic isotropic Gaussian embeddings"
    )
    return text + (", L2-normalized" if distribution.endswith("normalized") else "")


def render_markdown(result: dict[str, Any]) -> str:
    """The `index` section of docs/benchmarks.md for a `run_index_benchmark` result."""
    from benchmarks.report import markdown_table

    data, k = result["dataset"], result["k"]
    rows = []
    for kind, measured in result["indexes"].items():
        latency = measured["latency_ms"]
        rows.append(
            [
                kind,
                f"{measured['build_s']:.1f}",
                f"{measured['state_bytes'] / 2**20:.0f}",
                f"{measured['rss_delta_bytes'] / 2**20:.0f}",
                f"{latency['p50']:.3f}",
                f"{latency['p99']:.3f}",
                f"{measured['throughput_qps']:.0f}",
                f"{measured['recall_at_k']:.4f}",
            ]
        )
    scann = result["indexes"].get("scann", {}).get("parameters", {})
    scann_params = ", ".join(
        f"{name}={scann[name]}"
        for name in (
            "num_leaves",
            "num_leaves_to_search",
            "num_reordering_candidates",
            "dimensions_per_block",
            "training_iterations",
        )
        if name in scann
    )
    table = markdown_table(
        [
            "index",
            "build s",
            "state MiB",
            "RSS delta MiB",
            "p50 ms (batch 1)",
            "p99 ms (batch 1)",
            f"queries/s (batch {result['batch_size']})",
            f"recall@{k}",
        ],
        rows,
    )
    target = result["target"]
    return (
        "## Index: ScaNN vs brute force\n\n"
        f"{data['num_items']:,} items x {data['dim']} dims, {_describe(data)}, dot product, "
        f"{data['identifiers']} as identifiers; {data['num_queries']} queries "
        f"from the same distribution, k={k}, seed {data['seed']}. Latency: one query per call "
        "through `export.index.retrieve` in a `tf.function`, after warm-up. Recall against exact "
        "numpy search. State: bytes of the index variables stored in the SavedModel; RSS delta: "
        "process growth across the build (ScaNN holds its searcher and the serialized copy "
        "that is saved).\n\n"
        f"{table}\n"
        f"ScaNN parameters (IndexConfig defaults): {scann_params}.\n\n"
        f"**ScaNN speed-up over brute force at p50: {result['scann_speedup_p50']:.1f}x** "
        f"(target >= {target['speedup_p50']:.0f}x at recall@{k} >= {target['recall_at_k']}: "
        f"{'met' if target['met'] else 'missed'}).\n\n"
        "Reproduce: `twotower bench index --items "
        f"{data['num_items']} --dim {data['dim']} --queries {data['num_queries']} --k {k} "
        f"--seed {data['seed']}`.\n"
    )


def run_defaults_grid(
    *,
    sizes: Sequence[int] = GRID_SIZES,
    dims: Sequence[int] = GRID_DIMS,
    distributions: Sequence[str] = DISTRIBUTIONS,
    ks: Sequence[int] = GRID_KS,
    num_queries: int = 500,
    seed: int = 0,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Recall@k of ScaNN with `IndexConfig(k=k)` defaults against exact search, over a grid.

    Each cell builds one index per k (the derived re-scoring depth depends on k) with int32 row
    identifiers and queries it in batches through `retrieve`.

    Returns:
      {"cells": [{"distribution", "num_items", "dim", "k", "recall_at_k", "build_s",
       "parameters"}, ...], "num_queries", "seed", "target_recall"}.
    """
    import tensorflow as tf

    from export.index import IndexConfig, build_index, resolved_parameters, retrieve

    cells = []
    for distribution in distributions:
        for num_items in sizes:
            for dim in dims:
                candidates, queries, _ = synthetic_catalog(
                    num_items, dim, num_queries, distribution=distribution, seed=seed
                )
                exact_rows = exact_top_k(candidates, queries, max(ks))
                for k in ks:
                    config = IndexConfig(k=k)
                    start = time.perf_counter()
                    index = build_index(
                        config, tf.constant(candidates), tf.range(num_items, dtype=tf.int32)
                    )
                    build_s = time.perf_counter() - start
                    found = np.concatenate(
                        [
                            retrieve(index, tf.constant(queries[i : i + batch_size]), k)[1].numpy()
                            for i in range(0, num_queries, batch_size)
                        ]
                    )
                    cells.append(
                        {
                            "distribution": distribution,
                            "num_items": num_items,
                            "dim": dim,
                            "k": k,
                            "recall_at_k": recall_at_k(found, exact_rows, k),
                            "build_s": build_s,
                            "parameters": resolved_parameters(config, num_items, dim),
                        }
                    )
                    del index
                    gc.collect()
    return {
        "cells": cells,
        "num_queries": num_queries,
        "seed": seed,
        "target_recall": TARGET_RECALL,
    }


def render_grid_markdown(result: dict[str, Any]) -> str:
    """The `index_defaults` section of docs/benchmarks.md for a `run_defaults_grid` result."""
    from benchmarks.report import markdown_table

    rows = []
    for cell in result["cells"]:
        params = cell["parameters"]
        rows.append(
            [
                cell["distribution"],
                f"{cell['num_items']:,}",
                cell["dim"],
                cell["k"],
                params.get("num_leaves", "-"),
                params.get("num_leaves_to_search", "-"),
                params.get("num_reordering_candidates", "-"),
                f"{cell['recall_at_k']:.4f}",
                f"{cell['build_s']:.1f}",
            ]
        )
    table = markdown_table(
        [
            "distribution",
            "items",
            "dim",
            "k",
            "leaves",
            "searched",
            "re-scored",
            "recall@k",
            "build s",
        ],
        rows,
    )
    return (
        "## Index: recall of the default ScaNN parameters\n\n"
        f"ScaNN with `IndexConfig(k=k)` defaults against exact search, {result['num_queries']} "
        f"queries per cell drawn from the catalog's distribution, seed {result['seed']}. "
        "Target: recall@k >= 0.95 on clustered catalogs; isotropic Gaussian vectors have no "
        "neighbourhood structure and are a worst case shown for reference.\n\n"
        f"{table}\n"
        "Reproduce: `twotower bench index --grid`.\n"
    )


def run_parameter_sweep(
    *,
    sizes: Sequence[int] = (100_000, 1_000_000),
    dims: Sequence[int] = GRID_DIMS,
    distributions: Sequence[str] = ("clustered", "clustered-normalized"),
    leaf_fractions: Sequence[float] = (0.01, 0.02, 0.03, 0.05, 0.1),
    reorderings: Sequence[int] = (250, 500, 1000, 2000),
    ks: Sequence[int] = GRID_KS,
    num_queries: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall of one ScaNN index per catalog as leaves searched and re-scoring depth vary.

    The evidence for the derived `num_leaves_to_search` and `num_reordering_candidates`: each
    catalog is indexed once with the default leaves, then searched with ScaNN's per-query
    overrides (`leaves_to_search`, `pre_reorder_num_neighbors`), which give the same results as
    building with those values.

    Returns:
      {"cells": [{"distribution", "num_items", "dim", "num_leaves", "leaf_fraction",
       "num_leaves_to_search", "num_reordering_candidates", "k", "recall_at_k"}, ...], ...}.
    """
    import tensorflow as tf
    from scann.scann_ops.py import scann_ops

    from export.index import IndexConfig, build_index, resolved_parameters

    cells = []
    for distribution in distributions:
        for num_items in sizes:
            for dim in dims:
                candidates, queries, _ = synthetic_catalog(
                    num_items, dim, num_queries, distribution=distribution, seed=seed
                )
                exact_rows = exact_top_k(candidates, queries, max(ks))
                index = build_index(
                    IndexConfig(), tf.constant(candidates), tf.range(num_items, dtype=tf.int32)
                )
                # The searcher behind TFRS 0.7.7's ScaNN layer, for its per-query overrides.
                searcher = scann_ops.searcher_from_module(index._serialized_searcher)
                num_leaves = resolved_parameters(IndexConfig(), num_items, dim)["num_leaves"]
                for fraction in leaf_fractions:
                    leaves = min(num_leaves, max(1, math.ceil(num_leaves * fraction)))
                    for reordering in reorderings:
                        for k in ks:
                            found = searcher.search_batched(
                                tf.constant(queries),
                                final_num_neighbors=k,
                                pre_reorder_num_neighbors=max(k, reordering),
                                leaves_to_search=leaves,
                            ).indices.numpy()
                            cells.append(
                                {
                                    "distribution": distribution,
                                    "num_items": num_items,
                                    "dim": dim,
                                    "num_leaves": num_leaves,
                                    "leaf_fraction": fraction,
                                    "num_leaves_to_search": leaves,
                                    "num_reordering_candidates": reordering,
                                    "k": k,
                                    "recall_at_k": recall_at_k(found, exact_rows, k),
                                }
                            )
                del index, searcher
                gc.collect()
    return {"cells": cells, "num_queries": num_queries, "seed": seed}


def render_sweep_markdown(result: dict[str, Any]) -> str:
    """The `index_sweep` section: recall@k per leaves fraction (rows) and re-scoring (columns)."""
    from benchmarks.report import markdown_table

    reorderings = sorted({cell["num_reordering_candidates"] for cell in result["cells"]})
    groups: dict[tuple, dict[int, float]] = {}
    for cell in result["cells"]:
        key = (
            cell["distribution"],
            cell["num_items"],
            cell["dim"],
            cell["k"],
            cell["num_leaves"],
            cell["leaf_fraction"],
            cell["num_leaves_to_search"],
        )
        groups.setdefault(key, {})[cell["num_reordering_candidates"]] = cell["recall_at_k"]
    rows = [
        [
            distribution,
            f"{items:,}",
            dim,
            k,
            f"{searched}/{leaves} ({fraction:.0%})",
            *(f"{recalls[r]:.4f}" for r in reorderings),
        ]
        for (distribution, items, dim, k, leaves, fraction, searched), recalls in groups.items()
    ]
    table = markdown_table(
        ["distribution", "items", "dim", "k", "leaves searched", *(f"R={r}" for r in reorderings)],
        rows,
    )
    return (
        "## Index: ScaNN recall by leaves searched and re-scoring depth\n\n"
        "recall@k against exact search for one ScaNN index per catalog (default leaves, "
        "dimensions_per_block=2), searched with per-query overrides; R = candidates re-scored "
        f"exactly. {result['num_queries']} queries, seed {result['seed']}. The defaults search "
        "max(5% of N, 10K) candidates and re-score max(1000, 20 * k).\n\n"
        f"{table}\n"
        "Reproduce: `twotower bench index --sweep`.\n"
    )


# Filters of `run_filtered_benchmark`: the fraction of the catalog each one keeps.
FILTER_FRACTIONS = (0.5, 0.05, 0.001)
TARGET_FILTERED_P99_MS = 5.0


def filter_columns(num_items: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """One scalar item feature per fraction p, `keep_<p>`, "yes" on a random p of the items
    (exactly round(p * N) of them, independent of the embeddings), "no" on the others."""
    rng = np.random.default_rng(seed + 1)
    columns = {}
    for fraction in fractions:
        chosen = rng.choice(num_items, size=max(1, round(fraction * num_items)), replace=False)
        values = np.full(num_items, "no", dtype=object)
        values[chosen] = "yes"
        columns[f"keep_{fraction:g}"] = values
    return columns


def measure_filtered(
    kind: str,
    candidates: np.ndarray,
    queries: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    k: int,
    warmup: int = 20,
) -> dict[str, Any]:
    """Filtered top k through the export's filter path, one filter (`<feature>=yes`) at a time.

    The path is the one `recommend_filtered` takes after its user lookup: `FilterIndex.parse`,
    `ItemConstraints` (no allow-list, no exclusions), `filtered_top_k` (default
    `FilteredSearchConfig`), in one `tf.function`.

    Returns:
      {feature: {"passing", "latency_ms" (batch 1), "recall_at_k" against exact search over the
       passing items}}.
    """
    import tensorflow as tf

    from export.constraints import NO_ROW, ItemConstraints
    from export.filtered import FilteredSearchConfig, filtered_top_k
    from export.index import IndexConfig, build_index
    from export.item_filters import FilterIndex, item_feature_codes

    num_items, dim = candidates.shape
    embeddings = tf.constant(candidates)
    index = build_index(IndexConfig(kind=kind, k=k), embeddings, tf.range(num_items))
    filters = FilterIndex(item_feature_codes(columns))
    config = FilteredSearchConfig()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, dim], tf.float32),
            tf.TensorSpec([None, None], tf.string),
        ]
    )
    def search(batch: tf.Tensor, pairs: tf.Tensor) -> tf.Tensor:
        feature_ids, value_codes, checks = filters.parse(pairs)
        size = tf.shape(batch)[0]
        nothing = tf.fill([size, 1], NO_ROW)
        constraints = ItemConstraints(
            filters=filters,
            num_items=tf.constant(num_items, tf.int32),
            allow_rows=nothing,
            allow_listed=tf.zeros([size], tf.bool),
            excluded_rows=nothing,
            feature_ids=feature_ids,
            value_codes=value_codes,
        )
        with tf.control_dependencies(checks):
            ks = tf.fill([size], k)
            return filtered_top_k(index, embeddings, batch, ks, k, constraints, config)[1]

    measured = {}
    for feature, values in columns.items():
        passing = np.flatnonzero(values == "yes")
        pair = tf.constant([[f"{feature}=yes"]])
        singles = [tf.constant(queries[i : i + 1]) for i in range(queries.shape[0])]
        latencies = _time_calls(lambda query, pair=pair: search(query, pair), singles, warmup)
        found = np.concatenate([search(query, pair).numpy() for query in singles])
        exact = passing[exact_top_k(candidates[passing], queries, k)]
        measured[feature] = {
            "passing": len(passing),
            "latency_ms": latency_ms(latencies),
            "recall_at_k": recall_at_k(found, exact, min(k, len(passing))),
        }
    return measured


def run_filtered_benchmark(
    num_items: int,
    dim: int,
    *,
    num_queries: int = 1000,
    k: int = 10,
    seed: int = 0,
    distribution: str = "clustered-normalized",
    fractions: Sequence[float] = FILTER_FRACTIONS,
) -> dict[str, Any]:
    """Filtered recall@k and batch-1 latency for filters keeping each of `fractions` of the
    catalog, with the ScaNN and the brute-force index.

    Returns:
      {"dataset", "k", "filters": {kind: `measure_filtered`}, "target": {..., "met"}} (the
      target applies to ScaNN: recall@k >= 0.95 and p99 <= 5 ms for every filter).
    """
    from export.index import BRUTE_FORCE, SCANN

    candidates, queries, description = synthetic_catalog(
        num_items, dim, num_queries, distribution=distribution, seed=seed
    )
    columns = filter_columns(num_items, fractions, seed)
    kinds = {}
    for kind in (SCANN, BRUTE_FORCE):
        kinds[kind] = measure_filtered(kind, candidates, queries, columns, k=k)
        gc.collect()
    scann = kinds[SCANN].values()
    met = all(
        m["recall_at_k"] >= TARGET_RECALL and m["latency_ms"]["p99"] <= TARGET_FILTERED_P99_MS
        for m in scann
    )
    return {
        "dataset": {**description, "num_items": num_items, "dim": dim, "num_queries": num_queries},
        "k": k,
        "filters": kinds,
        "target": {
            "recall_at_k": TARGET_RECALL,
            "p99_ms": TARGET_FILTERED_P99_MS,
            "met": bool(met),
        },
    }


def render_filtered_markdown(result: dict[str, Any]) -> str:
    """The `index_filtered` section of docs/benchmarks.md for a `run_filtered_benchmark` result."""
    from benchmarks.report import markdown_table

    data, k = result["dataset"], result["k"]
    rows = [
        [
            kind,
            feature,
            f"{measured['passing']:,}",
            f"{measured['latency_ms']['p50']:.3f}",
            f"{measured['latency_ms']['p99']:.3f}",
            f"{measured['recall_at_k']:.4f}",
        ]
        for kind, features in result["filters"].items()
        for feature, measured in features.items()
    ]
    table = markdown_table(
        ["index", "filter (=yes)", "items passing", "p50 ms", "p99 ms", f"recall@{k}"], rows
    )
    target = result["target"]
    return (
        "## Index: filtered search\n\n"
        f"{data['num_items']:,} items x {data['dim']} dims, {_describe(data)}; each filter keeps "
        "a random fraction of the items, independent of the embeddings. One query per call "
        "through the filtered path of `recommend_filtered` (parse; the smallest source scored "
        "exactly, an over-fetch from the index, or the mask), after warm-up; recall against exact "
        "numpy search over the passing items.\n\n"
        f"{table}\n"
        f"Target (ScaNN): recall@{k} >= {target['recall_at_k']} and p99 <= "
        f"{target['p99_ms']} ms for every filter: {'met' if target['met'] else 'missed'}.\n\n"
        f"Reproduce: `twotower bench index --filtered --items {data['num_items']} --dim "
        f"{data['dim']} --queries {data['num_queries']} --k {k} --seed {data['seed']}`.\n"
    )
