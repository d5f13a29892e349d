"""`twotower bench {index,serve,quality,train}`: measurements that write benchmarks/results/*.json."""

from __future__ import annotations

import argparse

# Each module registers one benchmark under `twotower bench`.
_BENCHMARKS = ("bench_index", "bench_serve", "bench_quality", "bench_train")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and record its numbers")
    benches = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    from twotower.cli import register_modules

    register_modules(benches, _BENCHMARKS)
