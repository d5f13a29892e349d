"""`twotower bench quality`: the model vs the TFRS tutorial model and the baselines."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from twotower.arguments import add_data_arguments, cache_dir, data_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quality", help="train the model and the TFRS tutorial model, rank with the baselines"
    )
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, help="max epochs of the project model")
    parser.add_argument("--out-name", default="quality", help="results file name (no path)")
    parser.add_argument(
        "--index",
        choices=("scann", "brute-force"),
        default="scann",
        help="index of the export the project model is also ranked through (default scann)",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="instead: train the default model and one variant per lever over --seeds, and "
        "write the ablation table (results file quality_ablation unless --out-name is given)",
    )
    parser.add_argument(
        "--seeds",
        default="42,1,2",
        type=lambda text: tuple(int(seed) for seed in text.split(",")),
        help="comma-separated training seeds of the ablation (default 42,1,2)",
    )
    parser.add_argument(
        "--variants",
        type=lambda text: tuple(name.strip() for name in text.split(";") if name.strip()),
        default=(),
        help="with --ablation: only these variants beside the default model, by their row "
        "names separated by ';' (e.g. 'one member (no ensemble);2 ensemble members')",
    )
    parser.add_argument(
        "--new-items",
        action="store_true",
        help="instead: hide the newest --new-fraction of items from training, add them through "
        "`twotower export --new-items`, and rank them (benchmarks/new_items.py); results file "
        "quality_new_items unless --out-name is given",
    )
    parser.add_argument(
        "--new-fraction", type=float, default=0.1, help="share of items hidden (default 0.1)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks import quality
    from benchmarks import report as bench_report
    from tfrs_model.data import load_data

    config = data_config(args)
    data = load_data(config, cache_dir(), environ=os.environ)
    if args.ablation:
        return _ablation(args, data, config)
    if args.new_items:
        return _new_items(args, data, config)
    variants = quality.default_variants(args.epochs)
    with tempfile.TemporaryDirectory(prefix="twotower-bench-quality-") as workdir:
        report, timings = quality.run_quality_benchmark(
            data, config, variants, export_dir=Path(workdir), index_kind=args.index
        )
    cold = quality.run_cold_start(data, config, variants[0])
    markdown = quality.quality_markdown(report, timings)
    markdown += "\n" + quality.target_markdown(
        report, quality.exported_name(variants[0].name, args.index)
    )
    # The chart goes beside the results, linked from the doc by a path relative to the doc.
    chart = quality.quality_chart(report, bench_report.RESULTS_DIR / f"{args.out_name}.png")
    if chart is not None:
        link = Path(os.path.relpath(chart, bench_report.DOC_PATH.parent)).as_posix()
        markdown += f"\n![Recall@10 and NDCG@10 per model]({link})\n"
    markdown += "\n" + quality.cold_start_markdown(cold)
    payload = quality.result_payload(report, timings, config.dataset, cold)
    bench_report.record(args.out_name, payload, markdown)
    print(markdown)
    print(json.dumps(payload["results"], indent=2))
    return 0


def _ablation(args: argparse.Namespace, data, config) -> int:
    from benchmarks import quality
    from benchmarks.report import record

    base = quality.default_variants(args.epochs)[0]
    variants = quality.ablation_variants(base)
    if args.variants:
        variants = quality.select_variants(variants, args.variants)
    rows = quality.run_ablation(data, config, variants, args.seeds)
    markdown = quality.ablation_markdown(rows, base.name)
    name = "quality_ablation" if args.out_name == "quality" else args.out_name
    record(name, {"dataset": config.dataset, "seeds": list(args.seeds), "variants": rows}, markdown)
    print(markdown)
    return 0


def _new_items(args: argparse.Namespace, data, config) -> int:
    import dataclasses

    from benchmarks import new_items
    from benchmarks.report import record

    with tempfile.TemporaryDirectory(prefix="twotower-bench-new-items-") as workdir:
        result = new_items.run_new_items_benchmark(
            data, config, Path(workdir), args.new_fraction, args.epochs, args.index
        )
    markdown = new_items.new_items_markdown(result)
    name = "quality_new_items" if args.out_name == "quality" else args.out_name
    record(name, {"dataset": config.dataset, **dataclasses.asdict(result)}, markdown)
    print(markdown)
    return 0
