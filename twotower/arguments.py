"""Flags shared by several subcommands, and turning them into config objects."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from tfrs_model.config import DataConfig, EvaluationConfig, RunConfig, with_overrides
from tfrs_model.errors import ConfigError

# How a flag spells a config value of None: every user, or no rating threshold.
ALL_USERS = "all"
NO_THRESHOLD = "none"


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


def _count_or_all(text: str) -> int | str:
    """A `--eval-users`-style value: a whole number, or `all` (kept as the string)."""
    if text.strip().lower() == ALL_USERS:
        return ALL_USERS
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of users or {ALL_USERS!r}, got {text!r}"
        ) from None


def _rating_or_none(text: str) -> float | str:
    """A `--min-positive-rating` value: a number, or `none` (kept as the string)."""
    if text.strip().lower() == NO_THRESHOLD:
        return NO_THRESHOLD
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a rating (e.g. 4) or {NO_THRESHOLD!r}, got {text!r}"
        ) from None


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Config field -> value for the flags given: None (not given) is left out, and the
    spellings `all` / `none` become a config value of None."""
    return {
        name: None if value in (ALL_USERS, NO_THRESHOLD) else value
        for name, value in flags.items()
        if value is not None
    }


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """How `train` splits the interactions and which count as positives (`DataConfig`)."""
    group = parser.add_argument_group("split")
    group.add_argument(
        "--split",
        choices=("per-user", "global-time"),
        help="per-user: the last fractions of each user's interactions by time (default); "
        "global-time: two cut points in time over all interactions",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        help="share of interactions held out as test, in (0, 1) (default 0.2)",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        help="share of the remaining interactions held out as validation, in (0, 1) (default 0.1)",
    )
    group.add_argument(
        "--min-positive-rating",
        type=_rating_or_none,
        metavar="RATING|none",
        help="interactions rated at least this are positives (default 4); 'none' makes every "
        "interaction a positive (implicit feedback: clicks, plays, purchases)",
    )


def split_config(args: argparse.Namespace, base: DataConfig) -> DataConfig:
    """`base` with the split flags applied.

    Raises:
      ConfigError: a fraction is outside (0, 1).
    """
    return dataclasses.replace(
        base,
        **flag_overrides(
            split=args.split,
            test_fraction=args.test_fraction,
            validation_fraction=args.validation_fraction,
            min_positive_rating=args.min_positive_rating,
        ),
    )


def add_evaluation_arguments(parser: argparse.ArgumentParser, *, training: bool) -> None:
    """Ranking at scale (`EvaluationConfig`): user samples and the memory budget.

    `training` adds `--validation-users`, the bound of the per-epoch validation ranking.
    """
    group = parser.add_argument_group("evaluation at scale")
    group.add_argument(
        "--eval-users",
        type=_count_or_all,
        metavar="N|all",
        help="rank a seeded sample of N of the evaluated split's users (test, and validation "
        "for tuning the baselines); 'all' ranks every one (default: all)",
    )
    if training:
        group.add_argument(
            "--validation-users",
            type=_count_or_all,
            metavar="N|all",
            help="rank a seeded sample of N validation users after every epoch (early "
            "stopping); 'all' ranks every one (default 10000)",
        )
    group.add_argument(
        "--memory-budget-gb",
        type=float,
        help="working memory of ranking (default 4): score blocks are sized to it, and EASE "
        "is skipped when its item x item matrices exceed it"
        + ("; not the preprocessing limit (--memory-limit-gb)" if training else ""),
    )


def evaluation_config(args: argparse.Namespace, base: EvaluationConfig) -> EvaluationConfig:
    """`base` with the evaluation flags applied.

    Raises:
      ConfigError: a value is out of range (e.g. `--eval-users 0`).
    """
    return dataclasses.replace(base, **evaluation_overrides(args))


def evaluation_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """`EvaluationConfig` field -> value for the evaluation flags given."""
    return flag_overrides(
        eval_users=args.eval_users,
        validation_users=getattr(args, "validation_users", None),
        memory_budget_gb=args.memory_budget_gb,
    )


def load_config_file(path: str | None) -> RunConfig:
    """A RunConfig from a JSON or YAML file with `data`, `model`, `train` and `evaluation`
    sections (each optional)."""
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
