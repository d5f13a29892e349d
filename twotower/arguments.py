"""Flags shared by several subcommands, and turning them into config objects."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tfrs_model.config import DataConfig, RunConfig, with_overrides
from tfrs_model.errors import ConfigError


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        help="movielens-100k, movielens-1m, movielens-latest-small, movielens-20m, "
        "movielens-25m, movielens-32m (default: movielens-100k), or tabular",
    )
    group.add_argument("--data-dir", help="directory with the extracted dataset files")
    group.add_argument("--dataset-config", help="YAML file declaring your own interaction tables")
    group.add_argument(
        "--drop-duplicates",
        action="store_true",
        default=None,
        help="drop repeated (user, item, timestamp) rows instead of failing",
    )


def data_config(args: argparse.Namespace, base: DataConfig | None = None) -> DataConfig:
    return with_overrides(
        base or DataConfig(),
        dataset="tabular" if args.dataset_config and not args.dataset else args.dataset,
        data_dir=str(Path(args.data_dir).resolve()) if args.data_dir else None,
        dataset_config=str(Path(args.dataset_config).resolve()) if args.dataset_config else None,
        drop_duplicates=args.drop_duplicates,
    )


def load_config_file(path: str | None) -> RunConfig:
    """A RunConfig from a JSON or YAML file with `data`, `model` and `train` sections."""
    if path is None:
        return RunConfig()
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from error
    return RunConfig.from_dict(values)


def cache_dir() -> Path:
    """The MovieLens download cache: $TWOTOWER_DATA_HOME or ~/.cache/twotower."""
    from tfrs_model.data.download import default_cache_dir

    return default_cache_dir(os.environ)
