"""`twotower bench {index,serve,quality}`: measurements that write benchmarks/results/*.json."""

from __future__ import annotations

import argparse
import importlib

# Each module registers one benchmark under `twotower bench`.
_BENCHMARKS = ("bench_index", "bench_serve", "bench_quality")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and record its numbers")
    benches = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name in _BENCHMARKS:
        try:
            module = importlib.import_module(f"tfrs_model.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tfrs_model.cli.{name}":
                raise
            continue
        module.register(benches)
