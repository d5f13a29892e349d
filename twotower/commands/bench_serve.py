"""`twotower bench serve`: closed-loop gRPC load test of a model server (QPS, latency percentiles).

Prints the result as JSON and records it as benchmarks/results/serve-<label>.json plus a section of
docs/benchmarks.md, both in the source tree (`benchmarks.report`). With --saved-model it also times the same requests in process, so the report
shows what gRPC adds. Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from export import contract
from tfrs_model.errors import ConfigError
from twotower.commands.query import add_server_arguments, client_config

# Threads: on 2 cores neither mode saturated a loopback server consistently better (see
# benchmarks/serve.py), and threads cost a little less client CPU per request.
_DEFAULT_MODE = "threads"
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="load-test a model server over gRPC",
        description="N workers send batch-1 Predict requests back to back for --duration seconds "
        "after --warmup seconds; reports QPS, p50/p95/p99/max latency and errors by status code.",
    )
    add_server_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=4, help="workers (default: 4)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds (default: 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="uncounted seconds first (default: 1)"
    )
    parser.add_argument("--signature", default=contract.SERVING_DEFAULT)
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument(
        "--user-ids-file",
        type=Path,
        help="ids to send, one per line (item ids for item signatures)",
    )
    ids.add_argument("--users", type=int, default=100, help="send user ids 1..N (default: 100)")
    parser.add_argument(
        "--label", default="grpc", help="result name: serve-<label> (default: grpc)"
    )
    parser.add_argument(
        "--client",
        choices=("threads", "aio"),
        default=_DEFAULT_MODE,
        help=f"threads sharing one channel, or grpc.aio coroutines (default: {_DEFAULT_MODE})",
    )
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="stop after this many requests"
    )
    parser.add_argument(
        "--saved-model",
        type=Path,
        help="version directory of the same model, to time the requests in process too",
    )
    parser.set_defaults(handler=run)


def read_ids(user_ids_file: Path | None, users: int) -> tuple[str, ...]:
    """The ids to send: the file's non-blank lines, or "1".."users".

    Raises:
      ConfigError: the file cannot be read or holds no ids, or users < 1.
    """
    if user_ids_file is None:
        if users < 1:
            raise ConfigError(f"--users must be at least 1, not {users}")
        return tuple(str(n) for n in range(1, users + 1))
    try:
        lines = user_ids_file.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read {user_ids_file}: {error.strerror}") from error
    ids = tuple(line.strip() for line in lines if line.strip())
    if not ids:
        raise ConfigError(f"{user_ids_file} holds no ids (one per line)")
    return ids


def run(args: argparse.Namespace) -> int:
    from benchmarks.report import record
    from benchmarks.serve import LoadTestConfig, run_benchmark

    if not _LABEL.fullmatch(args.label):
        raise ConfigError(f"--label {args.label!r}: use letters, digits, '_', '.' and '-'")
    config = LoadTestConfig(
        client=client_config(args),
        ids=read_ids(args.user_ids_file, args.users),
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        signature=args.signature,
        mode=args.client,
        max_requests=args.max_requests,
    )
    benchmark = run_benchmark(config, args.saved_model)
    name = f"serve-{args.label}"
    record(name, benchmark.to_dict(), benchmark.markdown(name))
    print(json.dumps(benchmark.to_dict(), indent=2))
    return 1 if benchmark.load.errors else 0
