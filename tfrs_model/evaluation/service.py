"""Evaluation entry points for the CLI: a run directory, or an exported SavedModel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfrs_model.evaluation.evaluate import EvaluationReport, evaluate_split
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.run import Run

DataOverrides = dict[str, Any]  # DataConfig fields to replace (dataset, data_dir, ...)


def refuse_refit_validation(refit: bool, split: str, source: str) -> None:
    """Raises if a model refit on train + validation is about to be scored on validation.

    Raises:
      ConfigError: `refit` is set and `split` is validation.
    """
    from tfrs_model.data.splits import VALIDATION
    from tfrs_model.errors import ConfigError

    if refit and split == VALIDATION:
        raise ConfigError(
            f"{source} was refit on train + validation (train.refit_on_validation), so scoring "
            "it on validation would leak; its validation metrics from before the refit are in "
            "the run's metrics.json. Evaluate --split test, or train with "
            "refit_on_validation: false"
        )


def evaluate_run_dir(run_dir: Path, split: str, *, with_baselines: bool = True) -> EvaluationReport:
    """Evaluates the run's model (and the baselines) on `split` of the run's own data.

    Raises:
      RunDirError: `run_dir` is not a finished run.
    """
    run = Run.open(run_dir)
    refuse_refit_validation(run.config.train.refit_on_validation, split, str(run_dir))
    ranker = TwoTowerRanker(run.load_model(), run.features, run.split)
    return evaluate_split(run.split, split, [ranker], with_baselines=with_baselines)


def evaluate_saved_model(
    version_dir: Path,
    data_overrides: DataOverrides,
    split: str,
    *,
    cache_dir: Path,
    environ: Mapping[str, str] | None = None,
    with_baselines: bool = True,
) -> EvaluationReport:
    """Evaluates an exported version through `serving_default` on `split` of its training data.

    The data is reloaded from its source with the split configuration recorded in the model
    card (optionally pointed at another directory), so the split equals the run's.

    Raises:
      ExportError: not an export, or its baked history already contains the evaluated split.
    """
    from export.ranker import SavedModelRanker, read_model_card
    from tfrs_model.config import DataConfig, from_mapping, with_overrides
    from tfrs_model.data import assign_splits, load_data
    from tfrs_model.errors import ExportError

    card = read_model_card(version_dir)
    if card.get("known_through") == "all":
        raise ExportError(
            f"{version_dir} was exported with --known-through all: its baked history includes "
            f"the {split} split, so evaluating it there would leak; re-export with "
            "--known-through validation"
        )
    refit = card["config"].get("train", {}).get("refit_on_validation", False)
    refuse_refit_validation(refit, split, str(version_dir))
    config = with_overrides(from_mapping(DataConfig, card["config"]["data"]), **data_overrides)
    split_data = assign_splits(load_data(config, cache_dir, environ=environ), config)
    ranker = SavedModelRanker(version_dir)
    return evaluate_split(split_data, split, [ranker], with_baselines=with_baselines)
