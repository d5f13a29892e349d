"""`twotower serve`: serve exported versions over TF Serving's gRPC (and REST) API.

Runs `tensorflow_model_server` when it is on PATH, else (or with --embedded) the embedded server.
Both watch --model-base-path for new numeric version directories and swap to them without
failing requests; SIGTERM drains. TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export import contract
from serving.server import launcher
from serving.server.config import ServingConfig, VersionPolicy, available_cores
from tfrs_model.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve exported model versions over TF Serving's gRPC and REST APIs",
        description=(
            "Serve the versions under --model-base-path with tensorflow_model_server when it is "
            "on PATH, otherwise (or with --embedded) with the embedded server, which speaks the "
            "same gRPC API. New versions are loaded, warmed up and swapped in as they appear; "
            "SIGTERM drains in-flight requests and exits 0."
        ),
    )
    parser.add_argument(
        "--model-base-path",
        type=Path,
        required=True,
        help="directory of numeric version directories, e.g. models/twotower",
    )
    parser.add_argument(
        "--model-name",
        default=contract.DEFAULT_MODEL_NAME,
        help="name clients put in ModelSpec.name (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=contract.GRPC_PORT,
        help="gRPC port (default: %(default)s; 0 picks a free one, embedded only)",
    )
    parser.add_argument(
        "--rest-api-port",
        type=int,
        default=contract.REST_PORT,
        help="REST and metrics port (default: %(default)s; 0 picks a free one, embedded only)",
    )
    parser.add_argument("--no-rest", action="store_true", help="do not serve REST or metrics")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind, 0.0.0.0 for all (default: %(default)s; embedded only, "
        "tensorflow_model_server always binds all)",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="use the embedded server even when tensorflow_model_server is installed",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="embedded server processes sharing the gRPC and REST ports, each loading the "
        f"model (default: one per CPU core, here {default_workers()}; 1 serves from this "
        "process)",
    )
    parser.add_argument(
        "--max-worker-restarts",
        type=int,
        default=ServingConfig.max_worker_restarts,
        help="crashed workers restarted within a minute before the server gives up and exits "
        "1 (default: %(default)s)",
    )
    versions = parser.add_argument_group("versions")
    versions.add_argument(
        "--version-policy",
        default="latest",
        help="latest, latest:N, all or specific:V1,V2 (default: %(default)s)",
    )
    versions.add_argument(
        "--version-label",
        action="append",
        default=[],
        metavar="LABEL=VERSION",
        help="name a version for ModelSpec.version_label, e.g. stable=3 (repeatable)",
    )
    versions.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between scans for new versions (default: %(default)s)",
    )
    limits = parser.add_argument_group("limits and batching")
    limits.add_argument(
        "--max-batch-size",
        type=int,
        default=1024,
        help="most rows per request (and per merged batch) (default: %(default)s)",
    )
    limits.add_argument(
        "--max-message-bytes",
        type=int,
        default=64 * 1024 * 1024,
        help="largest request accepted, embedded only (default: %(default)s)",
    )
    defaults = ServingConfig(model_base_path=".")
    for flag, kind, help_text in (
        ("--max-dim-size", int, "largest size of any non-batch input dimension"),
        ("--max-tensor-elements", int, "most elements in one input tensor"),
        ("--max-tensor-bytes", int, "most bytes one input tensor may decode to"),
        ("--rest-max-connections", int, "open REST connections at most; more get 503"),
        ("--rest-max-workers", int, "threads running REST requests"),
        ("--rest-backlog", int, "REST connections the kernel queues before refusing"),
        ("--rest-read-timeout", float, "seconds a REST body may take to arrive; then 408"),
        ("--rest-keepalive", float, "seconds an idle REST keep-alive connection stays open"),
        ("--grpc-max-workers", int, "threads answering gRPC calls"),
    ):
        field = flag[2:].replace("-", "_")
        field = {
            "rest_read_timeout": "rest_read_timeout_s",
            "rest_keepalive": "rest_keepalive_s",
        }.get(field, field)
        limits.add_argument(
            flag,
            type=kind,
            dest=field,
            default=getattr(defaults, field),
            help=f"{help_text}, embedded only (default: %(default)s)",
        )
    limits.add_argument(
        "--enable-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge concurrent requests into one model call (default: on; a request never waits "
        "for others unless --batch-timeout-micros is set)",
    )
    limits.add_argument(
        "--batch-timeout-micros",
        type=int,
        default=0,
        help="with batching, how long a request waits for others (default: %(default)s)",
    )
    for flag in ("--tensorflow-intra-op-parallelism", "--tensorflow-inter-op-parallelism"):
        limits.add_argument(
            flag,
            type=int,
            default=getattr(defaults, flag[2:].replace("-", "_")),
            help="TF Serving's flag of that name: threads per op / ops at once, per process "
            "(default: 0, TensorFlow's choice; embedded --workers N: each worker's share of the "
            "cores)",
        )
    limits.add_argument(
        "--drain-grace",
        type=float,
        default=20.0,
        help="seconds in-flight requests may take after SIGTERM (default: %(default)s)",
    )
    parser.set_defaults(handler=_serve)


def default_workers() -> int:
    """Worker processes when --workers is not given: one per CPU core this process may use.

    One process serves at most about one core (the GIL); on a shared 2-core machine 2 workers
    answered 886-909 QPS at 32 clients where 1 answered 403-750 (docs/serving.md,
    "Throughput"). Beyond the cores, workers only compete for them and each holds the model.
    """
    return available_cores()


def serving_config(args: argparse.Namespace) -> ServingConfig:
    """The ServingConfig the parsed flags describe.

    Raises:
      ConfigError: a flag value is invalid (e.g. a malformed --version-label).
    """
    labels = {}
    for text in args.version_label:
        label, _, version = text.partition("=")
        if not label or not version.isdigit():
            raise ConfigError(f"--version-label wants LABEL=VERSION, e.g. stable=3, not {text!r}")
        labels[label] = int(version)
    return ServingConfig(
        model_base_path=args.model_base_path,
        model_name=args.model_name,
        host=args.host,
        grpc_port=args.port,
        rest_port=None if args.no_rest else args.rest_api_port,
        version_policy=VersionPolicy.parse(args.version_policy),
        version_labels=labels,
        poll_interval_s=args.poll_interval,
        max_message_bytes=args.max_message_bytes,
        max_batch_size=args.max_batch_size,
        max_dim_size=args.max_dim_size,
        max_tensor_elements=args.max_tensor_elements,
        max_tensor_bytes=args.max_tensor_bytes,
        grpc_max_workers=args.grpc_max_workers,
        rest_max_workers=args.rest_max_workers,
        rest_max_connections=args.rest_max_connections,
        rest_backlog=args.rest_backlog,
        rest_read_timeout_s=args.rest_read_timeout_s,
        rest_keepalive_s=args.rest_keepalive_s,
        drain_grace_s=args.drain_grace,
        enable_batching=args.enable_batching,
        batch_timeout_micros=args.batch_timeout_micros,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        workers=default_workers() if args.workers is None else args.workers,
        max_worker_restarts=args.max_worker_restarts,
    )


def _serve(args: argparse.Namespace) -> int:
    return launcher.serve(serving_config(args), embedded=args.embedded)
