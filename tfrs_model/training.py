"""Trains a two-tower model end to end and writes the run directory atomically."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfrs_model.config import RunConfig
from tfrs_model.data.schema import InteractionData
from tfrs_model.data.splits import TEST, VALIDATION, SplitData, assign_splits
from tfrs_model.evaluation.metrics import ranking_metrics
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.features.examples import (
    candidate_inputs,
    evaluation_examples,
    make_dataset,
    to_tensor_dict,
    training_examples,
)
from tfrs_model.features.spec import FeatureSet
from tfrs_model.features.tables import FeatureTables
from tfrs_model.features.vocabulary import build_feature_set
from tfrs_model.model import TwoTowerModel
from tfrs_model.run import (
    CONFIG_FILE,
    DATA_DIR,
    FEATURES_FILE,
    LOGS_DIR,
    METRICS_FILE,
    WEIGHTS_DIR,
    atomic_directory,
    build_towers,
    save_split_data,
    save_weights,
    write_json,
)

logger = logging.getLogger(__name__)

EARLY_STOPPING_METRIC = "val_recall_at_10"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path | None
    history: dict[str, list[float]]
    validation: dict[str, float]
    best_epoch: int
    seconds: float
    examples_per_second: float


class ValidationRanking(tf.keras.callbacks.Callback):
    """Adds full-catalog validation Recall@10 and NDCG@10 (known items excluded) to the logs.

    It must come before EarlyStopping in the callback list: both read the same `logs` dict.
    Under a distribution strategy it ranks eagerly with the local copy of the (synchronized)
    weights and runs no collective op, so every worker computes the same metrics and
    EarlyStopping stops them all at the same epoch.
    """

    def __init__(self, ranker: TwoTowerRanker, eval_set: EvalSet) -> None:
        super().__init__()
        self.ranker = ranker
        self.eval_set = eval_set

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        ranked = self.ranker.rank(self.eval_set, 10)
        metrics = ranking_metrics(ranked, self.eval_set.relevant, self.eval_set.num_items, (10,))
        if logs is not None:
            logs[EARLY_STOPPING_METRIC] = metrics["recall@10"]
            logs["val_ndcg_at_10"] = metrics["ndcg@10"]
        logger.info("epoch %d: validation recall@10 %.4f", epoch + 1, metrics["recall@10"])


def _strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def _optimizer(config: RunConfig) -> tf.keras.optimizers.Optimizer:
    optimizers = {
        "adam": tf.keras.optimizers.Adam,
        "adagrad": tf.keras.optimizers.Adagrad,
        "sgd": tf.keras.optimizers.SGD,
    }
    return optimizers[config.train.optimizer](learning_rate=config.train.learning_rate)


def prepare(data: InteractionData, config: RunConfig) -> tuple[SplitData, FeatureSet]:
    """Splits the data and builds the feature vocabularies from the training split."""
    split = assign_splits(data, config.data)
    return split, build_feature_set(split, config.model, config.data)


def fit(
    split: SplitData,
    features: FeatureSet,
    config: RunConfig,
    log_dir: Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[TwoTowerModel, tf.keras.callbacks.History, float]:
    """Trains on the training split with early stopping on validation Recall@10.

    Returns:
      The model (best weights restored), the Keras history and the examples per second.
    """
    tf.keras.utils.set_random_seed(config.train.seed)
    strategy = strategy or _strategy(config.train.strategy)
    tables = FeatureTables(split.data)
    train_arrays = training_examples(split, features, tables)
    num_examples = len(train_arrays["user_id"])
    batch = config.train.batch_size
    # `batch` is the global batch: Keras splits it over the replicas. Every worker builds the
    # same in-memory dataset (same seed, so the same shuffle order), and the DATA policy gives
    # each its own share of every global batch; the default AUTO policy first tries to shard by
    # file, which in-memory tensors do not have.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds = make_dataset(train_arrays, batch, shuffle=True, seed=config.train.seed)
    val_ds = make_dataset(
        evaluation_examples(split, features, tables, VALIDATION), batch, shuffle=False, seed=0
    )
    train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)
    catalog = candidate_inputs(features, tables, split.data.items["item_id"].to_numpy())
    candidates = tf.data.Dataset.from_tensor_slices(to_tensor_dict(catalog)).batch(1024)
    with strategy.scope():
        model = TwoTowerModel(features, config.model, candidates=candidates)
        build_towers(model)
        model.compile(optimizer=_optimizer(config))
    # tfrs.Model's train/test steps return `metric.result()`, which is already aggregated over
    # all replicas; tf-keras' default ("auto", meaning "sum" off TPUs) summed it once more, so
    # two workers logged top-100 accuracies of 2.0. "first" keeps the metrics right; the logged
    # `loss` is then the first local replica's share of the global batch.
    model.distribute_reduction_method = "first"
    callbacks: list[tf.keras.callbacks.Callback] = [
        ValidationRanking(TwoTowerRanker(model, features, split), build_eval_set(split, VALIDATION))
    ]
    if config.train.early_stopping_patience > 0:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor=EARLY_STOPPING_METRIC,
                mode="max",
                patience=config.train.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if log_dir is not None and config.train.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(log_dir), profile_batch=0))
    logger.info("training on %d examples, validating on %s", num_examples, VALIDATION)
    started = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=config.train.epochs, callbacks=callbacks, verbose=2
    )
    seconds = time.perf_counter() - started
    epochs_run = len(history.history.get("loss", [])) or 1
    return model, history, num_examples * epochs_run / seconds


def train(
    data: InteractionData,
    config: RunConfig,
    out_dir: Path | None,
    *,
    overwrite: bool = False,
) -> TrainResult:
    """Splits, trains, and (if `out_dir`) writes the run directory atomically.

    With `strategy="multi-worker"` (TF_CONFIG names the cluster) every worker trains, and only
    the chief (the "chief" task, else worker 0) writes `out_dir`; the others write nothing.

    Raises:
      RunDirError: `out_dir` exists and `overwrite` is false (checked before training).
      DataError: the data cannot be split or has no positives.
    """
    if out_dir is not None and Path(out_dir).exists() and not overwrite:
        from tfrs_model.errors import RunDirError

        raise RunDirError(f"{out_dir} already exists; choose another --out or pass --force")
    started = time.perf_counter()
    # First TensorFlow call of `twotower train`: MultiWorkerMirroredStrategy configures the
    # collective ops, which must happen before the eager context is initialized.
    strategy = _strategy(config.train.strategy)
    split, features = prepare(data, config)
    if out_dir is None or not _is_chief(strategy):
        model, history, throughput = fit(split, features, config, strategy=strategy)
        return _result(None, history, throughput, started, config)
    with atomic_directory(Path(out_dir), overwrite=overwrite) as staging:
        model, history, throughput = fit(split, features, config, staging / LOGS_DIR, strategy)
        config.save(staging / CONFIG_FILE)
        features.save(staging / FEATURES_FILE)
        save_weights(model, staging / WEIGHTS_DIR)
        save_split_data(split, staging / DATA_DIR)
        result = _result(Path(out_dir), history, throughput, started, config)
        write_json(staging / METRICS_FILE, _metrics_payload(split, result))
    logger.info("wrote run %s", out_dir)
    return result


def _result(
    run_dir: Path | None, history, throughput: float, started: float, config: RunConfig
) -> TrainResult:
    values = {k: [float(x) for x in v] for k, v in history.history.items()}
    recalls = values.get(EARLY_STOPPING_METRIC, [0.0])
    best = int(max(range(len(recalls)), key=recalls.__getitem__))
    if config.train.early_stopping_patience == 0:
        # Without early stopping the last epoch's weights are kept, so report that epoch.
        best = len(recalls) - 1
    validation = {
        k.removeprefix("val_"): v[best] for k, v in values.items() if k.startswith("val_")
    }
    return TrainResult(
        run_dir, values, validation, best + 1, time.perf_counter() - started, throughput
    )


def _metrics_payload(split: SplitData, result: TrainResult) -> dict[str, Any]:
    counts = split.interactions.groupby(["split", "positive"]).size()
    return {
        "best_epoch": result.best_epoch,
        "validation": result.validation,
        "history": result.history,
        "train_seconds": result.seconds,
        "examples_per_second": result.examples_per_second,
        "data": {
            **split.data.summary(),
            "interactions_by_split": {
                f"{s}/{'positive' if p else 'other'}": int(n) for (s, p), n in counts.items()
            },
        },
        "filters": [str(r) for r in (*split.data.reports, *split.reports)],
    }


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


__all__ = ["TEST", "TrainResult", "fit", "prepare", "train"]
