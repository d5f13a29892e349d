"""The `twotower` console script: one subcommand per job, each a thin wrapper over a library call.

Every subcommand module exposes `register(subparsers)`, which adds its parser and sets `handler`
to a function taking the parsed arguments and returning an exit code. Heavy imports (TensorFlow)
happen inside the handlers, so `twotower --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfrs_model.errors import TwoTowerError

# Python loggers whose INFO and WARNING records are start-up noise for a person (shown with -v).
_NOISY_LOGGERS = ("tensorflow", "absl", "h5py")
# Subcommand modules, in the order `--help` lists them.
_SUBCOMMANDS = ("train", "evaluate", "export", "serve", "query", "recommend", "bench", "demo")


def register_modules(subparsers: argparse._SubParsersAction, names: tuple[str, ...]) -> None:
    """Lets each `twotower.commands.<name>` module add its parser.

    A module that cannot be imported is an error of the build, not a command to hide: it raises
    instead of vanishing from `--help`.
    """
    for name in names:
        importlib.import_module(f"twotower.commands.{name}").register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower",
        description="Train, evaluate, export and serve a TFRS two-tower retrieval model.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, with TensorFlow's own logs"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_modules(subparsers, _SUBCOMMANDS)
    return parser


def configure_output(verbose: bool) -> None:
    """Our own INFO logs for a person; TensorFlow's start-up noise only with `-v`.

    Must run before TensorFlow is imported: its C++ logging level is read once, at import. Without
    `-v` that level is 3, which hides CUDA probing on CPU-only machines, oneDNN and CPU-feature
    notices (logged at INFO and ERROR alike); real failures still reach the user as Python
    exceptions. TensorFlow's and absl's Python loggers (signature renames, "non-serializable
    objects", sharding timings) are lowered to ERROR. An explicit `TF_CPP_MIN_LOG_LEVEL` wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in _NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|keras|absl)(\.|$)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_output(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except TwoTowerError as error:
        print(f"twotower {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
