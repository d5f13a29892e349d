"""`twotower train`: train a two-tower model and write a run directory."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tfrs_model.config import STRATEGIES, RunConfig, with_overrides
from twotower.arguments import (
    add_data_arguments,
    add_evaluation_arguments,
    add_split_arguments,
    cache_dir,
    data_config,
    evaluation_config,
    load_config_file,
    split_config,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model and write a run directory")
    add_data_arguments(parser)
    add_split_arguments(parser)
    add_evaluation_arguments(parser, training=True)
    parser.add_argument("--out", required=True, help="run directory to create (e.g. runs/ml100k)")
    parser.add_argument(
        "--config", help="JSON/YAML file with data, model, train and evaluation sections"
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--embedding-dim", type=int)
    parser.add_argument(
        "--ensemble-members",
        type=int,
        help="independently trained tower pairs served as one (model.ensemble_members; default "
        "3): 1 trains about 2-2.6x faster and serves embeddings a third the size",
    )
    parser.add_argument(
        "--ensemble-max-rows",
        type=int,
        help="logs with more interactions train one pair of towers (model.ensemble_max_rows; "
        "default 1000000; 0: no limit): at 2.5M-25M rows three members measured 0.4-0.6%% "
        "more recall@10 for 3.2-3.4x the training time",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="default (one process), mirrored (local devices), multi-worker or "
        "parameter-server (TF_CONFIG names the cluster; docs/scale.md)",
    )
    parser.add_argument(
        "--no-refit",
        dest="refit_on_validation",
        action="store_false",
        default=None,
        help="keep the early-stopping model instead of refitting it on train + validation",
    )
    parser.add_argument(
        "--no-production-fit",
        dest="production_fit",
        action="store_false",
        default=None,
        help="skip the production model fit on every interaction (export --weights evaluation "
        "then serves the evaluation weights)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        help="memory limit of the columnar engine that builds the example shards (default 4); "
        "beyond it, it spills to disk",
    )
    parser.add_argument(
        "--shards-cache",
        help="keep the example shards in this directory, keyed by the data, split and history, "
        "and reuse them in later runs on the same data (default: rebuilt every run)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> RunConfig:
    base = load_config_file(args.config)
    return RunConfig(
        data=with_overrides(
            split_config(args, data_config(args, base.data)),
            preprocess_memory_gb=args.memory_limit_gb,
            shards_cache=args.shards_cache,
        ),
        model=with_overrides(
            base.model,
            embedding_dim=args.embedding_dim,
            ensemble_members=args.ensemble_members,
            ensemble_max_rows=args.ensemble_max_rows,
        ),
        train=with_overrides(
            base.train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            strategy=args.strategy,
            refit_on_validation=args.refit_on_validation,
            production_fit=args.production_fit,
        ),
        evaluation=evaluation_config(args, base.evaluation),
    )


def run(args: argparse.Namespace) -> int:
    from tfrs_model.data import load_data
    from tfrs_model.distribute import is_server_task, serve_cluster_task
    from tfrs_model.training import train

    config = build_config(args)
    if is_server_task(config.train.strategy):
        # A worker or parameter server of a parameter-server cluster: the chief sends it
        # everything; it reads no data and writes nothing.
        serve_cluster_task()
        return 0
    started = time.perf_counter()
    data = load_data(config.data, cache_dir(), environ=os.environ)
    load_seconds = time.perf_counter() - started
    result = train(data, config, Path(args.out), overwrite=args.force, load_seconds=load_seconds)
    refit = (
        f"; refit on train + validation: {result.refit_epochs} epochs, "
        f"{result.refit_examples:,} examples"
        if result.refit_epochs
        else ""
    )
    print(
        f"best epoch {result.best_epoch}: validation recall@10 "
        f"{result.validation.get('recall_at_10', float('nan')):.4f}, "
        f"ndcg@10 {result.validation.get('ndcg_at_10', float('nan')):.4f}{refit} "
        f"({result.seconds:.0f}s, {result.throughput.examples_per_second:,.0f} examples/s) -> {args.out}"
    )
    if result.production_examples:
        print(
            f"test (evaluation weights): recall@10 {result.test['recall@10']:.4f}, ndcg@10 "
            f"{result.test['ndcg@10']:.4f}; production model fit on all "
            f"{result.production_examples:,} examples for {result.best_epoch} epochs "
            "(what `twotower export` exports)"
        )
    return 0
