"""`twotower bench index`: ScaNN against brute force on a synthetic catalog, the defaults grid, the
parameter sweep, or filtered search (`--filtered`)."""

from __future__ import annotations

import argparse
import re


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `index` benchmark parser; its handler returns an exit code."""
    parser = subparsers.add_parser(
        "index",
        help="ScaNN vs brute force: build time, memory, latency, throughput, recall",
        description=(
            "Measures ScaNN (IndexConfig defaults) and TFRS brute force on a synthetic, clustered, "
            "L2-normalized catalog and records benchmarks/results/<out-name>.json plus a section "
            "of docs/benchmarks.md. With --grid, measures the recall of the default ScaNN "
            "parameters over catalog sizes, dimensions and distributions instead; with --sweep, "
            "recall as the leaves searched and the re-scoring depth vary; with --filtered, filtered "
            "recall and latency for filters keeping 50%, 5% and 0.1% of the catalog."
        ),
    )
    parser.add_argument("--items", type=int, default=1_000_000, help="catalog size N")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension")
    parser.add_argument("--queries", type=int, default=1000, help="queries to time and score")
    parser.add_argument("--k", type=int, default=10, help="results per query (recall@k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128, help="batch for throughput")
    parser.add_argument(
        "--distribution",
        default="clustered-normalized",
        choices=("gaussian", "gaussian-normalized", "clustered", "clustered-normalized"),
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="measure recall of the ScaNN defaults over 1.7K..1M items, dim 32/64, 4 "
        "distributions (records index_defaults)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="measure ScaNN recall as leaves searched and re-scoring depth vary, at 100K and 1M "
        "items (records index_sweep)",
    )
    parser.add_argument(
        "--filtered",
        action="store_true",
        help="measure filtered recall@k (against exact search over the passing items) and "
        "batch-1 p99 latency of recommend_filtered's search path, for filters keeping 50%%, 5%% "
        "and 0.1%% of a --items catalog, ScaNN and brute force (records index_filtered)",
    )
    parser.add_argument(
        "--grid-items",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=None,
        help="comma-separated catalog sizes for --grid or --sweep",
    )
    parser.add_argument(
        "--out-name",
        default=None,
        help="result name: benchmarks/results/<name>.json (default index, index_defaults with "
        "--grid, index_sweep with --sweep)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from benchmarks import index as index_bench
    from benchmarks.report import record
    from tfrs_model.errors import ConfigError

    for flag in ("items", "dim", "queries", "k", "batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.out_name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.out_name):
        raise ConfigError(
            f"--out-name {args.out_name!r} must be a plain name (letters, digits, _ . -): it "
            "names benchmarks/results/<name>.json and a section of docs/benchmarks.md"
        )
    if args.sweep:
        kwargs = {"sizes": args.grid_items} if args.grid_items else {}
        result = index_bench.run_parameter_sweep(seed=args.seed, **kwargs)
        path = record(
            args.out_name or "index_sweep", result, index_bench.render_sweep_markdown(result)
        )
        print(f"wrote {path}")
        return 0
    if args.filtered:
        result = index_bench.run_filtered_benchmark(args.items, args.dim, **_catalog(args))
        path = record(
            args.out_name or "index_filtered", result, index_bench.render_filtered_markdown(result)
        )
        print(f"target {'met' if result['target']['met'] else 'missed'}; wrote {path}")
        return 0
    if args.grid:
        kwargs = {"sizes": args.grid_items} if args.grid_items else {}
        result = index_bench.run_defaults_grid(seed=args.seed, **kwargs)
        path = record(
            args.out_name or "index_defaults", result, index_bench.render_grid_markdown(result)
        )
        worst = min(
            cell["recall_at_k"]
            for cell in result["cells"]
            if cell["distribution"].startswith("clustered")
        )
        print(f"worst recall@k on clustered catalogs: {worst:.4f}; wrote {path}")
        return 0
    result = index_bench.run_index_benchmark(
        args.items, args.dim, batch_size=args.batch_size, **_catalog(args)
    )
    path = record(args.out_name or "index", result, index_bench.render_markdown(result))
    scann, brute = result["indexes"]["scann"], result["indexes"]["brute-force"]
    print(
        f"scann p50 {scann['latency_ms']['p50']:.3f} ms, brute force p50 "
        f"{brute['latency_ms']['p50']:.3f} ms: {result['scann_speedup_p50']:.1f}x; "
        f"scann recall@{args.k} {scann['recall_at_k']:.4f}; wrote {path}"
    )
    return 0


def _catalog(args: argparse.Namespace) -> dict:
    """The synthetic catalog and query flags the single-catalog benchmarks share."""
    return {
        "num_queries": args.queries,
        "k": args.k,
        "seed": args.seed,
        "distribution": args.distribution,
    }
