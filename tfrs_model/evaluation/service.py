"""Evaluation entry points for the CLI: a run directory, or an exported SavedModel."""

from __future__ import annotations

from pathlib import Path

from tfrs_model.evaluation.evaluate import EvaluationReport, evaluate_split
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.run import Run


def evaluate_run_dir(run_dir: Path, split: str, *, with_baselines: bool = True) -> EvaluationReport:
    """Evaluates the run's model (and the baselines) on `split` of the run's own data.

    Raises:
      RunDirError: `run_dir` is not a finished run.
    """
    run = Run.open(run_dir)
    ranker = TwoTowerRanker(run.load_model(), run.features, run.split)
    return evaluate_split(run.split, split, [ranker], with_baselines=with_baselines)
