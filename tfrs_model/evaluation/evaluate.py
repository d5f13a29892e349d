"""Evaluates a run and the baselines on one split, in one harness, with one set of metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tfrs_model.config import EvaluationConfig
from tfrs_model.data.splits import VALIDATION, SplitData
from tfrs_model.evaluation.baselines import (
    EASE_L2_GRID,
    SVD_FACTOR_GRID,
    EaseBaseline,
    PopularityBaseline,
    RandomBaseline,
    SvdBaseline,
    tune,
)
from tfrs_model.evaluation.memory import memory_errors, users_per_block
from tfrs_model.evaluation.metrics import DEFAULT_KS, ranking_metrics
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set

logger = logging.getLogger(__name__)

TUNING_METRIC = "ndcg@10"


class Ranker(Protocol):
    name: str

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics per model on one split, plus how baselines were tuned.

    Attributes:
      split: the evaluated split.
      users: users ranked (a seeded sample when `users < total_users`).
      items: catalog size.
      results: `{model: {"recall@10": ...}}`.
      tuning: how the baselines were tuned, which users were scored, what was skipped.
      skipped: `{model: reason}` for baselines left out (EASE over the memory budget).
      total_users: users with a positive in the split; None when it equals `users`.
    """

    split: str
    users: int
    items: int
    results: dict[str, dict[str, float]]
    tuning: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    total_users: int | None = None

    def to_json(self) -> dict[str, dict[str, float]]:
        """`{"<model>": {"recall@10": ...}}`, the `--json` file format (skipped models and the
        user sample are in `tuning` and the Markdown report)."""
        return self.results


def evaluate_rankers(
    eval_set: EvalSet, rankers: Sequence[Ranker], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Ranks every user of `eval_set` with each ranker and computes the metrics at `ks`."""
    results = {}
    for ranker in rankers:
        ranked = ranker.rank(eval_set, max(ks))
        results[ranker.name] = ranking_metrics(ranked, eval_set.relevant, eval_set.num_items, ks)
        logger.info("%s: recall@10 %.4f", ranker.name, results[ranker.name].get("recall@10", 0))
    return results


def _sample_note(eval_set: EvalSet, evaluation: EvaluationConfig) -> dict[str, Any]:
    """Which users of `eval_set`'s split were scored, for the report's `tuning`."""
    return {
        "scored": eval_set.num_users,
        "of": eval_set.population,
        "sample_seed": evaluation.seed if eval_set.num_users < eval_set.population else None,
    }


def tuned_baselines(
    split: SplitData, seed: int = 0, evaluation: EvaluationConfig | None = None
) -> tuple[list[Ranker], dict[str, Any]]:
    """Random, popularity, EASE and PureSVD; EASE's L2 and SVD's rank chosen on validation.

    Validation is ranked for `evaluation.eval_users` users at most (seeded). EASE is left out
    when its item x item matrices exceed `evaluation.memory_budget_gb`: its reason is in
    `tuning["skipped"]["ease"]`.

    Returns:
      The baselines and the tuning record.
    """
    evaluation = evaluation or EvaluationConfig()
    budget = evaluation.memory_budget_gb
    validation = build_eval_set(
        split, VALIDATION, max_users=evaluation.eval_users, seed=evaluation.seed
    )

    def score(ranked: np.ndarray) -> float:
        return ranking_metrics(ranked, validation.relevant, validation.num_items, (10,))[
            TUNING_METRIC
        ]

    tuning: dict[str, Any] = {
        "metric": f"validation {TUNING_METRIC}",
        "validation_users": _sample_note(validation, evaluation),
    }
    baselines: list[Ranker] = [
        RandomBaseline(seed=seed, memory_budget_gb=budget),
        PopularityBaseline(memory_budget_gb=budget),
    ]
    skipped = {}
    ease_reason = EaseBaseline(memory_budget_gb=budget).skip_reason(validation.num_items)
    if ease_reason is None:
        ease_l2, ease_scores = tune(
            lambda v: EaseBaseline(l2=v, memory_budget_gb=budget),
            EASE_L2_GRID,
            validation,
            score,
            10,
        )
        tuning["ease_l2"] = {"chosen": ease_l2, "scores": ease_scores}
        baselines.append(EaseBaseline(l2=ease_l2, memory_budget_gb=budget))
    else:
        logger.info("ease skipped: %s", ease_reason)
        skipped["ease"] = ease_reason
    factors, svd_scores = tune(
        lambda v: SvdBaseline(factors=int(v), memory_budget_gb=budget),
        SVD_FACTOR_GRID,
        validation,
        score,
        10,
    )
    tuning["svd_factors"] = {"chosen": factors, "scores": svd_scores}
    baselines.append(SvdBaseline(factors=int(factors), memory_budget_gb=budget))
    if skipped:
        tuning["skipped"] = skipped
    return baselines, tuning


def evaluate_split(
    split: SplitData,
    target: str,
    rankers: Sequence[Ranker],
    *,
    with_baselines: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    evaluation: EvaluationConfig | None = None,
) -> EvaluationReport:
    """Evaluates `rankers` (and the tuned baselines) on split `target`.

    Args:
      evaluation: how many users to rank (`eval_users`, seeded) and the memory budget of the
        baselines; None uses `EvaluationConfig()` (every user, 4 GiB).

    Raises:
      DataError: `target` (or validation, for tuning) has no positives.
      ConfigError: one user's scores over the catalog exceed `memory_budget_gb`.
      EvaluationMemoryError: the machine ran out of memory anyway.
    """
    evaluation = evaluation or EvaluationConfig()
    with memory_errors(evaluation.memory_budget_gb):
        eval_set = build_eval_set(
            split, target, max_users=evaluation.eval_users, seed=evaluation.seed
        )
        users_per_block(eval_set.num_items, evaluation.memory_budget_gb)  # refuse early
        tuning: dict[str, Any] = {}
        all_rankers = list(rankers)
        if with_baselines:
            baselines, tuning = tuned_baselines(split, evaluation=evaluation)
            all_rankers += baselines
        tuning["users"] = _sample_note(eval_set, evaluation)
        results = evaluate_rankers(eval_set, all_rankers, ks)
    return EvaluationReport(
        split=target,
        users=eval_set.num_users,
        items=eval_set.num_items,
        results=results,
        tuning=tuning,
        skipped=dict(tuning.get("skipped", {})),
        total_users=eval_set.population,
    )


def _users_line(report: EvaluationReport) -> str:
    total = report.total_users
    if total is None or total == report.users:
        return f"{report.users} users"
    return f"{report.users:,} of {total:,} users (a seeded sample, evaluation.eval_users)"


def markdown_report(report: EvaluationReport, ks: Sequence[int] = DEFAULT_KS) -> str:
    """A Markdown table: one row per model, Recall/Precision/NDCG/MAP/HitRate/Coverage at `ks`;
    each skipped baseline and its reason below it."""
    metrics = ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")
    columns = [f"{m}@{k}" for k in ks for m in metrics]
    lines = [
        f"Split `{report.split}`: {_users_line(report)}, {report.items} items, full-catalog "
        "ranking with each user's known items excluded.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, values in report.results.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    if report.skipped:
        lines.append("")
        lines += [f"Skipped {name}: {reason}." for name, reason in report.skipped.items()]
    return "\n".join(lines) + "\n"
