"""`twotower bench quality`: the model vs the TFRS tutorial model and the baselines."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tfrs_model.cli._common import add_data_arguments, cache_dir, data_config

CHART_PATH = Path("benchmarks/results/quality.png")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quality", help="train the model and the TFRS tutorial model, rank with the baselines"
    )
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, help="max epochs of the project model")
    parser.add_argument("--out-name", default="quality", help="results file name (no path)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfrs_model.benchreport import record
    from tfrs_model.data import load_data
    from tfrs_model.evaluation import quality

    config = data_config(args)
    data = load_data(config, cache_dir(), environ=os.environ)
    report, timings = quality.run_quality_benchmark(
        data, config, quality.default_variants(args.epochs)
    )
    markdown = quality.quality_markdown(report, timings)
    chart = quality.quality_chart(report, CHART_PATH.with_name(f"{args.out_name}.png"))
    if chart is not None:
        markdown += f"\n![Recall@10 and NDCG@10 per model](../{chart})\n"
    payload = quality.result_payload(report, timings, config.dataset)
    record(args.out_name, payload, markdown)
    print(markdown)
    print(json.dumps(payload["results"], indent=2))
    return 0
