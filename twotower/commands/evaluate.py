"""`twotower evaluate`: full-catalog ranking metrics of a run (or an exported SavedModel) and
of the baselines, on the same split, as a Markdown table (and JSON with --json)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from twotower.arguments import (
    add_data_arguments,
    add_evaluation_arguments,
    cache_dir,
    data_config,
    evaluation_overrides,
)

# DataConfig fields the data flags can override when evaluating a SavedModel.
_DATA_FLAGS = ("dataset", "data_dir", "dataset_config", "drop_duplicates")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a run or a SavedModel vs baselines")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory written by `twotower train`")
    source.add_argument("--saved-model", help="exported version directory, e.g. models/twotower/1")
    add_data_arguments(parser)
    add_evaluation_arguments(parser, training=False)
    parser.add_argument("--split", default="test", choices=("validation", "test"))
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from export.evaluation import evaluate_saved_model
    from tfrs_model.evaluation.evaluate import markdown_report
    from tfrs_model.evaluation.service import evaluate_run_dir

    overrides = evaluation_overrides(args)
    if args.run:
        report = evaluate_run_dir(
            Path(args.run),
            args.split,
            with_baselines=not args.no_baselines,
            evaluation_overrides=overrides,
        )
    else:
        data_overrides = {k: v for k, v in vars(data_config(args)).items() if k in _DATA_FLAGS}
        report = evaluate_saved_model(
            Path(args.saved_model),
            data_overrides,
            args.split,
            cache_dir=cache_dir(),
            environ=os.environ,
            with_baselines=not args.no_baselines,
            evaluation_overrides=overrides,
        )
    print(markdown_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0
