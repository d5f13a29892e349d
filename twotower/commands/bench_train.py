"""`twotower bench train`: preprocess + train + evaluate through the CLI on logs of growing size."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class TrainBenchConfig:
    """What `twotower bench train` measures and where it works."""

    sizes: tuple[str, ...]
    workdir: Path
    data_dir_100k: Path | None = None
    epochs: int = 1
    keep: bool = False
    extra_train_args: tuple[str, ...] = ()
    stage_timeout_s: float | None = None
    merge: bool = True
    out_name: str = "train"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `train` benchmark parser; its handler returns an exit code."""
    parser = subparsers.add_parser(
        "train",
        help="preprocess, train one epoch and evaluate on synthetic logs up to 25M rows",
        description=(
            "For each size, writes (or reuses) a synthetic log with planted structure, then runs "
            "`twotower train --epochs N --no-refit --no-production-fit` and `twotower evaluate "
            "--split test` as subprocesses, recording wall time per stage, examples/s, peak RSS "
            "and recall@10 vs popularity in benchmarks/results/<out-name>.json and a section of "
            "docs/benchmarks.md. Sizes: ml100k (MovieLens 100K), tiny (20K rows), 2.5m (2.5M "
            "rows, 200K users, 50K items), 25m (25M rows, 1M users, 200K items), users-10k and "
            "users-1m (5M rows, 50K items, 10K or 1M users: cost against vocabulary size); "
            "ml100k-tutorial and 2.5m-tutorial train the TFRS tutorial model on those logs. Sizes "
            "measured "
            "earlier and not in --sizes are kept in the results unless --no-merge."
        ),
    )
    parser.add_argument(
        "--sizes",
        default="ml100k,ml100k-tutorial,2.5m,2.5m-tutorial,users-10k,users-1m,25m",
        help="comma-separated sizes (default: all but tiny): ml100k, ml100k-tutorial, tiny, "
        "2.5m, 2.5m-tutorial, users-10k, users-1m, 25m",
    )
    parser.add_argument(
        "--data-dir",
        help="extracted MovieLens 100K for the ml100k size (default: the download cache)",
    )
    parser.add_argument(
        "--workdir",
        help="where logs (kept, reused) and runs go (default $TWOTOWER_DATA_HOME/bench or "
        "~/.cache/twotower/bench)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directories (deleted by default)"
    )
    parser.add_argument(
        "--train-args",
        default="",
        help="extra `twotower train` arguments, one shell-quoted string (e.g. '--batch-size 1024')",
    )
    parser.add_argument(
        "--timeout", type=float, help="kill a stage after this many seconds (recorded as timeout)"
    )
    parser.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="drop sizes recorded earlier instead of keeping those not measured now",
    )
    parser.add_argument(
        "--out-name", default="train", help="results name: benchmarks/results/<name>.json"
    )
    parser.set_defaults(handler=_run)


def build_config(args: argparse.Namespace) -> TrainBenchConfig:
    from benchmarks.train import CASES
    from tfrs_model.errors import ConfigError
    from twotower.arguments import cache_dir

    sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
    unknown = [s for s in sizes if s not in CASES]
    if not sizes or unknown:
        raise ConfigError(f"--sizes: unknown {unknown or 'empty'}; choose from {', '.join(CASES)}")
    if args.epochs < 1:
        raise ConfigError("--epochs must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds")
    if not _NAME.fullmatch(args.out_name):
        raise ConfigError(
            f"--out-name {args.out_name!r} must be a plain name (letters, digits, _ . -)"
        )
    return TrainBenchConfig(
        sizes=tuple(dict.fromkeys(sizes)),
        workdir=Path(args.workdir).expanduser() if args.workdir else cache_dir() / "bench",
        data_dir_100k=Path(args.data_dir) if args.data_dir else None,
        epochs=args.epochs,
        keep=args.keep,
        extra_train_args=tuple(shlex.split(args.train_args)),
        stage_timeout_s=args.timeout,
        merge=args.merge,
        out_name=args.out_name,
    )


def _run(args: argparse.Namespace) -> int:
    from benchmarks import report
    from benchmarks import train as train_bench

    config = build_config(args)
    result = train_bench.run_train_benchmark(
        config.sizes,
        config.workdir,
        config.data_dir_100k,
        config.epochs,
        extra_train_args=config.extra_train_args,
        stage_timeout_s=config.stage_timeout_s,
        keep=config.keep,
    )
    if config.merge:
        previous = report.RESULTS_DIR / f"{config.out_name}.json"
        old = json.loads(previous.read_text()) if previous.is_file() else None
        result = train_bench.merge_results(old, result)
    markdown = train_bench.render_markdown(result)
    path = report.record(config.out_name, result, markdown)
    print(markdown)
    print(f"wrote {path} and {os.path.relpath(report.DOC_PATH)}")
    measured = {entry["size"]: entry for entry in result["sizes"]}
    return 0 if all(measured[s].get("status") == "ok" for s in config.sizes) else 1
