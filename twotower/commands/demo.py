"""`twotower demo`: the whole path on MovieLens 100K, as `make demo` runs it."""

from __future__ import annotations

import argparse
from pathlib import Path

from twotower.arguments import cache_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="train, evaluate, export, serve and query MovieLens 100K end to end"
    )
    parser.add_argument("--data-dir", help="extracted ml-100k (default: download into the cache)")
    parser.add_argument("--run-dir", default="runs/ml100k")
    parser.add_argument("--model-base-path", default="models/twotower")
    parser.add_argument("--index", choices=("scann", "brute-force"), default="scann")
    parser.add_argument("--user-id", action="append", help="users to query (repeatable)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--retrain", action="store_true", help="train even if --run-dir exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from twotower.demo import DemoConfig, run_demo

    config = DemoConfig(
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        run_dir=Path(args.run_dir),
        model_base_path=Path(args.model_base_path),
        cache_dir=cache_dir(),
        index=args.index,
        k=args.k,
        retrain=args.retrain,
        epochs=args.epochs,
        **({"users": tuple(args.user_id)} if args.user_id else {}),
    )
    return run_demo(config)
