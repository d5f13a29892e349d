"""The `twotower` console script: one subcommand per job, each a thin wrapper over a library call.

Every subcommand module exposes `register(subparsers)`, which adds its parser and sets `handler`
to a function taking the parsed arguments and returning an exit code. Heavy imports (TensorFlow)
happen inside the handlers, so `twotower --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import tfrs_model  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfrs_model.errors import TwoTowerError

# Subcommand modules, in the order `--help` lists them.
_SUBCOMMANDS = ("train", "evaluate", "export", "serve", "query", "recommend", "bench", "demo")


def register_modules(subparsers: argparse._SubParsersAction, names: tuple[str, ...]) -> None:
    """Lets each `twotower.commands.<name>` module add its parser; absent modules are skipped."""
    for name in names:
        try:
            module = importlib.import_module(f"twotower.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"twotower.commands.{name}":
                raise
            continue  # a command whose module is not part of this build
        module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower",
        description="Train, evaluate, export and serve a TFRS two-tower retrieval model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_modules(subparsers, _SUBCOMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.handler(args) or 0)
    except TwoTowerError as error:
        print(f"twotower {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
