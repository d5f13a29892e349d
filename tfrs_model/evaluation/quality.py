"""The quality benchmark: the project's model, the TFRS basic-retrieval tutorial model and the
baselines, trained and ranked in one harness on one split."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tfrs_model.data.schema import InteractionData
from tfrs_model.data.splits import TEST, SplitData
from tfrs_model.evaluation.evaluate import EvaluationReport, evaluate_split
from tfrs_model.evaluation.two_tower import TwoTowerRanker

# The TensorFlow Recommenders basic-retrieval tutorial: user and item id embeddings of 32,
# Adagrad 0.1, batch 8192, 3 epochs, plain in-batch softmax (no features, history, logQ or
# normalization). The towers here add a linear 32x32 projection, a reparametrization.
TUTORIAL_MODEL = ModelConfig(
    embedding_dim=32,
    id_embedding_dim=32,
    hidden_layers=(),
    l2_normalize=False,
    temperature=1.0,
    logq_correction=False,
    remove_accidental_hits=False,
    use_user_features=False,
    use_item_features=False,
    use_history=False,
    id_dropout=0.0,
)
TUTORIAL_TRAIN = TrainConfig(
    epochs=3,
    batch_size=8192,
    learning_rate=0.1,
    optimizer="adagrad",
    early_stopping_patience=0,
    tensorboard=False,
)


@dataclass(frozen=True)
class Variant:
    """A model configuration to train and rank under `name`."""

    name: str
    model: ModelConfig
    train: TrainConfig


def default_variants(epochs: int | None = None) -> tuple[Variant, ...]:
    project_train = TrainConfig(tensorboard=False)
    if epochs is not None:
        project_train = dataclasses.replace(project_train, epochs=epochs)
    return (
        Variant("two_tower", ModelConfig(), project_train),
        Variant("tfrs_tutorial", TUTORIAL_MODEL, TUTORIAL_TRAIN),
    )


def _train_variant(
    split: SplitData, data_config: DataConfig, variant: Variant
) -> tuple[TwoTowerRanker, dict[str, float]]:
    from tfrs_model.features.vocabulary import build_feature_set
    from tfrs_model.training import fit

    config = RunConfig(data=data_config, model=variant.model, train=variant.train)
    features = build_feature_set(split, config.model, config.data)
    started = time.perf_counter()
    model, history, examples_per_second = fit(split, features, config)
    timing = {
        "train_seconds": time.perf_counter() - started,
        "examples_per_second": examples_per_second,
        "epochs": len(history.history.get("loss", [])),
    }
    ranker = TwoTowerRanker(model, features, split)
    ranker.name = variant.name
    return ranker, timing


def run_quality_benchmark(
    data: InteractionData, data_config: DataConfig, variants: tuple[Variant, ...]
) -> tuple[EvaluationReport, dict[str, dict[str, float]]]:
    """Trains every variant, then ranks the test split with them and the tuned baselines."""
    from tfrs_model.data.splits import assign_splits

    split = assign_splits(data, data_config)
    rankers, timings = [], {}
    for variant in variants:
        ranker, timings[variant.name] = _train_variant(split, data_config, variant)
        rankers.append(ranker)
    return evaluate_split(split, TEST, rankers), timings


def quality_markdown(report: EvaluationReport, timings: Mapping[str, Mapping[str, float]]) -> str:
    metrics = [f"{m}@{k}" for k in (10, 50, 100) for m in ("recall", "ndcg", "hit_rate")]
    lines = [
        f"### Retrieval quality ({report.split} split, {report.users} users, {report.items} items)",
        "",
        "| model | " + " | ".join(metrics) + " | train s | examples/s |",
        "|---|" + "---:|" * (len(metrics) + 2),
    ]
    for name, values in report.results.items():
        timing = timings.get(name, {})
        seconds = f"{timing['train_seconds']:.0f}" if timing else "-"
        throughput = f"{timing['examples_per_second']:,.0f}" if timing else "-"
        cells = " | ".join(f"{values[m]:.4f}" for m in metrics)
        lines.append(f"| {name} | {cells} | {seconds} | {throughput} |")
    return "\n".join(lines) + "\n"


def quality_chart(report: EvaluationReport, path: Path) -> Path | None:
    """A bar chart of Recall@10 and NDCG@10 per model; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(report.results)
    width = 0.4
    figure, axis = plt.subplots(figsize=(8, 4))
    for offset, metric in ((-width / 2, "recall@10"), (width / 2, "ndcg@10")):
        axis.bar(
            [i + offset for i in range(len(names))],
            [report.results[n][metric] for n in names],
            width,
            label=metric,
        )
    axis.set_xticks(range(len(names)), names)
    axis.set_title(f"MovieLens {report.split} split: full-catalog ranking")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def result_payload(
    report: EvaluationReport, timings: Mapping[str, Mapping[str, float]], dataset: str
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "split": report.split,
        "users": report.users,
        "items": report.items,
        "results": report.results,
        "training": dict(timings),
        "baseline_tuning": report.tuning,
    }
