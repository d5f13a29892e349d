"""Evaluation entry point for a run directory; exported versions are scored by `export.evaluation`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfrs_model.data.splits import VALIDATION
from tfrs_model.errors import ConfigError
from tfrs_model.evaluation.evaluate import EvaluationReport, evaluate_split
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.run import Run


def refuse_refit_validation(refit: bool, split: str, source: str) -> None:
    """Raises if a model refit on train + validation is about to be scored on validation.

    Raises:
      ConfigError: `refit` is set and `split` is validation.
    """
    if refit and split == VALIDATION:
        raise ConfigError(
            f"{source} was refit on train + validation (train.refit_on_validation), so scoring "
            "it on validation would leak; its validation metrics from before the refit are in "
            "the run's metrics.json. Evaluate --split test, or train with "
            "refit_on_validation: false"
        )


def evaluate_run_dir(
    run_dir: Path,
    split: str,
    *,
    with_baselines: bool = True,
    evaluation_overrides: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluates the run's model (and the baselines) on `split` of the run's own data.

    Args:
      evaluation_overrides: `EvaluationConfig` fields replacing the run's `evaluation` section
        (e.g. `{"eval_users": 5000}`; a None value sets that field to None).

    Raises:
      RunDirError: `run_dir` is not a finished run.
      ConfigError: an override is not a valid `EvaluationConfig`.
    """
    run = Run.open(run_dir)
    refuse_refit_validation(run.config.train.refit_on_validation, split, str(run_dir))
    evaluation = dataclasses.replace(run.config.evaluation, **(evaluation_overrides or {}))
    ranker = TwoTowerRanker(
        run.load_model(), run.features, run.split, memory_budget_gb=evaluation.memory_budget_gb
    )
    return evaluate_split(
        run.split, split, [ranker], with_baselines=with_baselines, evaluation=evaluation
    )
