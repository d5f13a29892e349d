"""`twotower bench serve`: closed-loop gRPC (and REST) load test of a model server, or a soak.

Prints the result as JSON and records it as benchmarks/results/serve-<label>.json plus a section of
docs/benchmarks.md, both in the source tree (`benchmarks.report`). With --saved-model it also times the same requests in process, so the report
shows what gRPC adds. Exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
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
        "--max-requests",
        type=int,
        default=None,
        help="stop after this many requests (default: 1,000,000 for a load test; none for "
        "--soak, which runs its --duration whatever the request count)",
    )
    parser.add_argument(
        "--saved-model",
        type=Path,
        help="version directory of the same model, to time the requests in process too",
    )
    parser.add_argument(
        "--channels",
        type=int,
        help="gRPC connections the workers share (default: one per worker, as separate clients "
        "have; a server with --workers N spreads connections, not calls, over its processes)",
    )
    parser.add_argument(
        "--rest",
        nargs="?",
        const="",
        metavar="HOST:PORT",
        help="after the gRPC load, the same load over REST (default endpoint: the --target host "
        f"on port {contract.REST_PORT})",
    )
    soak = parser.add_argument_group("soak (--soak): --duration seconds of load with changes")
    soak.add_argument(
        "--soak",
        action="store_true",
        help="publish versions under load, mix in malformed requests, sample the server's RSS; "
        "exits 1 when a good request failed or a malformed one did not fail INVALID_ARGUMENT",
    )
    soak.add_argument(
        "--model-base-path",
        type=Path,
        help="the served model's base path: a copy of its highest version is published as the "
        "next one every --swap-every seconds",
    )
    soak.add_argument(
        "--swap-every", type=float, default=60.0, help="seconds between versions (default: 60)"
    )
    soak.add_argument(
        "--malformed-every",
        type=int,
        default=0,
        help="every K-th request of each worker is malformed (default: 0, none)",
    )
    soak.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server process whose RSS (with its worker processes) is sampled (repeatable)",
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


def _max_requests(args: argparse.Namespace) -> int:
    """The given cap; else none for a soak, which its duration bounds (a 20-minute soak at
    1,100 QPS sends 1.3M requests), and the load test's own default otherwise."""
    from benchmarks.serve import LoadTestConfig

    if args.max_requests is not None:
        return args.max_requests
    return sys.maxsize if args.soak else LoadTestConfig.max_requests


def run(args: argparse.Namespace) -> int:
    from benchmarks.report import record
    from benchmarks.serve import LoadTestConfig, SoakConfig, run_benchmark, run_soak

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
        max_requests=_max_requests(args),
        channels=args.concurrency if args.channels is None else args.channels,
    )
    name = f"serve-{args.label}"
    if args.soak:
        soak = run_soak(
            SoakConfig(
                load=config,
                model_base_path=args.model_base_path,
                swap_every_s=args.swap_every,
                malformed_every=args.malformed_every,
                server_pids=tuple(args.server_pid),
            )
        )
        record(name, soak.to_dict(), soak.markdown(name))
        print(json.dumps(soak.to_dict(), indent=2))
        return 1 if soak.failed_good_requests or soak.unexpected_malformed else 0
    benchmark = run_benchmark(config, args.saved_model, rest_target(args))
    record(name, benchmark.to_dict(), benchmark.markdown(name))
    print(json.dumps(benchmark.to_dict(), indent=2))
    failed = benchmark.load.errors or (benchmark.rest is not None and benchmark.rest.errors)
    return 1 if failed else 0


def rest_target(args: argparse.Namespace) -> str | None:
    """The REST host:port of --rest: as given, or the --target host on TF Serving's REST port."""
    if args.rest is None:
        return None
    if args.rest:
        return args.rest
    host = args.target.rpartition(":")[0] or args.target
    return f"{host}:{contract.REST_PORT}"
