"""Evaluates a run and the baselines on one split, in one harness, with one set of metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

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
from tfrs_model.evaluation.metrics import DEFAULT_KS, ranking_metrics
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set

logger = logging.getLogger(__name__)

TUNING_METRIC = "ndcg@10"


class Ranker(Protocol):
    name: str

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics per model on one split, plus how baselines were tuned."""

    split: str
    users: int
    items: int
    results: dict[str, dict[str, float]]
    tuning: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, float]]:
        """`{"<model>": {"recall@10": ...}}`, the `--json` file format."""
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


def tuned_baselines(split: SplitData, seed: int = 0) -> tuple[list[Ranker], dict[str, Any]]:
    """Random, popularity, EASE and PureSVD; EASE's L2 and SVD's rank chosen on validation."""
    validation = build_eval_set(split, VALIDATION)

    def score(ranked: np.ndarray) -> float:
        return ranking_metrics(ranked, validation.relevant, validation.num_items, (10,))[
            TUNING_METRIC
        ]

    ease_l2, ease_scores = tune(lambda v: EaseBaseline(l2=v), EASE_L2_GRID, validation, score, 10)
    factors, svd_scores = tune(
        lambda v: SvdBaseline(factors=int(v)), SVD_FACTOR_GRID, validation, score, 10
    )
    tuning = {
        "metric": f"validation {TUNING_METRIC}",
        "ease_l2": {"chosen": ease_l2, "scores": ease_scores},
        "svd_factors": {"chosen": factors, "scores": svd_scores},
    }
    baselines: list[Ranker] = [
        RandomBaseline(seed=seed),
        PopularityBaseline(),
        EaseBaseline(l2=ease_l2),
        SvdBaseline(factors=int(factors)),
    ]
    return baselines, tuning


def evaluate_split(
    split: SplitData,
    target: str,
    rankers: Sequence[Ranker],
    *,
    with_baselines: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
) -> EvaluationReport:
    """Evaluates `rankers` (and the tuned baselines) on split `target`."""
    eval_set = build_eval_set(split, target)
    tuning: dict[str, Any] = {}
    all_rankers = list(rankers)
    if with_baselines:
        baselines, tuning = tuned_baselines(split)
        all_rankers += baselines
    return EvaluationReport(
        split=target,
        users=len(eval_set.user_ids),
        items=eval_set.num_items,
        results=evaluate_rankers(eval_set, all_rankers, ks),
        tuning=tuning,
    )


def markdown_report(report: EvaluationReport, ks: Sequence[int] = DEFAULT_KS) -> str:
    """A Markdown table: one row per model, Recall/Precision/NDCG/MAP/HitRate/Coverage at `ks`."""
    metrics = ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")
    columns = [f"{m}@{k}" for k in ks for m in metrics]
    lines = [
        f"Split `{report.split}`: {report.users} users, {report.items} items, full-catalog "
        "ranking with each user's known items excluded.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, values in report.results.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"
