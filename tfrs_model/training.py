"""Trains a two-tower model end to end and writes the run directory atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfrs_model.config import RunConfig
from tfrs_model.curves import write_training_curves
from tfrs_model.data.schema import InteractionData
from tfrs_model.data.splits import SPLITS, TEST, TRAIN, VALIDATION, SplitData, assign_splits
from tfrs_model.distribute import is_chief, is_parameter_server, make_strategy, shards_of
from tfrs_model.errors import RunDirError
from tfrs_model.evaluation.evaluate import evaluate_split
from tfrs_model.evaluation.memory import memory_errors
from tfrs_model.evaluation.metrics import ranking_metrics
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.features.engine import EngineConfig
from tfrs_model.features.negatives import attach_negatives, negatives_dataset
from tfrs_model.features.shards import (
    ExampleShards,
    cached_example_shards,
    write_example_shards,
)
from tfrs_model.features.spec import HISTORY, FeatureSet
from tfrs_model.features.streaming import (
    ExampleUse,
    check_likes,
    check_ratings,
    code_tables,
    remote_training_dataset,
    saved_examples,
    steps_per_epoch,
    training_dataset,
)
from tfrs_model.features.vocabulary import build_feature_set
from tfrs_model.model import TwoTowerModel
from tfrs_model.optimizers import build_optimizer
from tfrs_model.progress import EpochProgress, StepProgress, Throughput
from tfrs_model.run import (
    CONFIG_FILE,
    CURVES_FILE,
    DATA_DIR,
    FEATURES_FILE,
    LOGS_DIR,
    METRICS_FILE,
    PRODUCTION_DIR,
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
    throughput: Throughput
    refit_epochs: int = 0
    refit_examples: int = 0
    test: dict[str, float] = field(default_factory=dict)
    production_examples: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class ValidationRanking(tf.keras.callbacks.Callback):
    """Adds full-catalog validation Recall@10, NDCG@10 and Recall@100 (known items excluded) to
    the logs.

    It must come before EarlyStopping in the callback list: both read the same `logs` dict.
    Under a distribution strategy it ranks eagerly with the local copy of the (synchronized)
    weights and runs no collective op, so every worker computes the same metrics and
    EarlyStopping stops them all at the same epoch. `eval_set` may be a seeded sample of the
    validation users (`evaluation.validation_users`); every worker draws the same one.
    """

    def __init__(self, ranker: TwoTowerRanker, eval_set: EvalSet) -> None:
        super().__init__()
        self.ranker = ranker
        self.eval_set = eval_set

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        with memory_errors(self.ranker.memory_budget_gb):
            ranked = self.ranker.rank(self.eval_set, 100)
            metrics = ranking_metrics(
                ranked, self.eval_set.relevant, self.eval_set.num_items, (10, 100)
            )
        if logs is not None:  # the progress callback's epoch line shows the first two
            logs[EARLY_STOPPING_METRIC] = metrics["recall@10"]
            logs["val_ndcg_at_10"] = metrics["ndcg@10"]
            logs["val_recall_at_100"] = metrics["recall@100"]


def prepare(data: InteractionData, config: RunConfig) -> tuple[SplitData, FeatureSet]:
    """Splits the data and builds the feature vocabularies from the training split."""
    split = assign_splits(data, config.data)
    return split, build_feature_set(split, config.model, config.data)


@dataclass
class Fitted:
    """What `fit` produced.

    Attributes:
      model: the final model: the refit one when `refit_on_validation` is set, else the
        early-stopping phase's best weights.
      features: the final model's feature specs (with a refit, vocabularies of train + validation).
      history: the early-stopping phase's Keras history (validation metrics per epoch).
      throughput: training throughput of the early-stopping phase.
      refit_epochs: epochs of the refit on train + validation; 0 when there was none.
      refit_examples: training examples of the refit; 0 when there was none.
      test: test metrics of `model` (the evaluation weights), measured before the production
        fit; empty without one.
      production: the production model, fit on every split for the same epochs; None when
        `production_fit` is off.
      production_features: its feature specs (vocabularies of every split).
      production_examples: its training examples.
      timings: seconds per stage (example_shards, fit, refit, test_evaluation, production_fit).
    """

    model: TwoTowerModel
    features: FeatureSet
    history: tf.keras.callbacks.History
    throughput: Throughput
    refit_epochs: int = 0
    refit_examples: int = 0
    test: dict[str, float] = field(default_factory=dict)
    production: TwoTowerModel | None = None
    production_features: FeatureSet | None = None
    production_examples: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Compiled:
    """A compiled model and its training input: a dataset, or a DatasetCreator under a
    distribution strategy, with the steps of one epoch."""

    model: TwoTowerModel
    train_data: Any
    steps_per_epoch: int
    num_examples: int


def _compile(
    split: SplitData,
    features: FeatureSet,
    config: RunConfig,
    strategy: tf.distribute.Strategy,
    shards: ExampleShards,
    splits: tuple[str, ...],
) -> _Compiled:
    """The model (seeded, compiled under `strategy`) and its batches of the `splits`' examples.

    `split` is the fit's view of the data (its `train` rows are the `splits`), which gives the
    in-batch sampling probabilities.
    """
    tf.keras.utils.set_random_seed(config.train.seed)
    use = ExampleUse(
        history_length=_history_length(features),
        with_ratings=config.model.rating_weight > 0,
        with_likes=config.model.like_weight > 0,
        non_positive_weight=config.model.non_positive_weight,
    )
    if use.with_ratings:
        check_ratings(split)
    if use.with_likes:
        check_likes(split)
    with strategy.scope():
        model = TwoTowerModel(features, config.model)
        build_towers(model)
        model.compile(
            optimizer=build_optimizer(model, config.train),
            steps_per_execution=config.train.steps_per_execution,
        )
    # tfrs.Model's train steps return `metric.result()`, which is already aggregated over all
    # replicas; tf-keras' default ("auto", meaning "sum" off TPUs) would sum it once more. With
    # "first" the logged `loss` is the first local replica's share of the global batch.
    model.distribute_reduction_method = "first"
    tables = code_tables(model, features, split, use.positives_only)
    negatives = None
    if config.model.sampled_negatives:
        negatives = functools.partial(
            negatives_dataset, tables.item, tables.probability, config.model.sampled_negatives
        )

    def dataset_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        if parameter_server:
            dataset = remote_training_dataset(
                saved,
                tables,
                history_length=shards.history_length,
                batch_size=config.train.batch_size,
                use=use,
            )
            # Under a parameter server the members share batches (one remote stream).
            return attach_negatives(dataset, negatives(config.train.seed)) if negatives else dataset
        # Ensemble members each read their own stream (order, history skips, negatives), as
        # separately trained models would (docs/quality.md compares shared batches).
        streams = [
            member_stream(config.train.seed + member, input_context)
            for member in range(config.model.ensemble_members)
        ]
        return streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams))

    def member_stream(
        seed: int, input_context: tf.distribute.InputContext | None
    ) -> tf.data.Dataset:
        dataset = training_dataset(
            shards,
            splits,
            tables,
            batch_size=config.train.batch_size,
            seed=seed,
            use=use,
            input_context=input_context,
        )
        if negatives:
            dataset = attach_negatives(dataset, negatives(seed))
        return dataset

    parameter_server = is_parameter_server(strategy)
    if parameter_server:
        _log_table_shards(model)
        saved = saved_examples(shards, splits, positives_only=use.positives_only)
    # Under a distribution strategy each worker builds its own pipeline (over its own shard
    # files under multi-worker; over the whole saved copy, in its own order, as a PS worker).
    distributed = config.train.strategy != "default"
    data = tf.keras.utils.experimental.DatasetCreator(dataset_fn) if distributed else dataset_fn()
    return _Compiled(
        model,
        data,
        steps_per_epoch(shards, splits, config.train.batch_size, use.positives_only),
        shards.num_examples(splits, positives_only=use.positives_only),
    )


def _log_table_shards(model: TwoTowerModel) -> None:
    """One line per embedding table: how many parameter servers hold a piece of it."""
    for tower in (model.query_model, model.candidate_model):
        for name, embedding in tower.embeddings.items():
            shards = len(shards_of(embedding.embedding.embeddings))
            logger.info("%s_embedding: %d shards on the parameter servers", name, shards)


def _validation_ranking(
    model: TwoTowerModel, features: FeatureSet, split: SplitData, config: RunConfig
) -> ValidationRanking:
    """The per-epoch validation ranking, on at most `evaluation.validation_users` users."""
    evaluation = config.evaluation
    eval_set = build_eval_set(
        split, VALIDATION, max_users=evaluation.validation_users, seed=evaluation.seed
    )
    logger.info(
        "validation ranking: %d of %d validation users (evaluation.validation_users = %s)",
        eval_set.num_users,
        eval_set.population,
        evaluation.validation_users,
    )
    ranker = TwoTowerRanker(model, features, split, memory_budget_gb=evaluation.memory_budget_gb)
    return ValidationRanking(ranker, eval_set)


def _fit_with_early_stopping(
    split: SplitData,
    features: FeatureSet,
    config: RunConfig,
    log_dir: Path | None,
    strategy: tf.distribute.Strategy,
    shards: ExampleShards,
) -> tuple[TwoTowerModel, tf.keras.callbacks.History, Throughput]:
    """Trains on the training split, keeping the epoch with the best validation Recall@10.

    Returns the model, its history, and its training throughput.
    """
    compiled = _compile(split, features, config, strategy, shards, (TRAIN,))
    model = compiled.model
    stopping: list[tf.keras.callbacks.Callback] = []
    if config.train.early_stopping_patience > 0:
        stopping.append(
            tf.keras.callbacks.EarlyStopping(
                monitor=EARLY_STOPPING_METRIC,
                mode="max",
                patience=config.train.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    logger.info("training on %d examples, validating on %s", compiled.num_examples, VALIDATION)
    progress = _run_fit(
        compiled,
        config,
        config.train.epochs,
        log_dir,
        what=TRAIN,
        before=[_validation_ranking(model, features, split, config)],
        after=stopping,
    )
    return model, model.history, progress.throughput()


def _run_fit(
    compiled: _Compiled,
    config: RunConfig,
    epochs: int,
    log_dir: Path | None,
    *,
    what: str,
    before: Sequence[tf.keras.callbacks.Callback] = (),
    after: Sequence[tf.keras.callbacks.Callback] = (),
) -> EpochProgress:
    """`model.fit` with progress (examples/s, ETA) and TensorBoard scalars.

    The callbacks run in the order `before` (which add metrics to the epoch's logs), progress,
    `after` (which read them, e.g. early stopping), TensorBoard (which records them all).
    """
    # ParameterServerStrategy allows no batch-level callbacks: epoch lines only there.
    parameter_server = is_parameter_server(compiled.model.distribute_strategy)
    kind = EpochProgress if parameter_server else StepProgress
    progress = kind(what, epochs, compiled.steps_per_epoch, config.train.batch_size)
    callbacks = [progress.stopwatch, *before, progress, *after]
    if log_dir is not None and config.train.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(log_dir), profile_batch=0))
    compiled.model.fit(
        compiled.train_data,
        epochs=epochs,
        steps_per_epoch=compiled.steps_per_epoch,
        callbacks=callbacks,
        verbose=0,
    )
    return progress


def _fit_fresh(
    merged: SplitData,
    config: RunConfig,
    epochs: int,
    log_dir: Path | None,
    strategy: tf.distribute.Strategy,
    shards: ExampleShards,
    splits: tuple[str, ...],
) -> tuple[TwoTowerModel, FeatureSet, int]:
    """A fresh model trained for `epochs` on the `splits`, which are the `train` rows of
    `merged` (vocabularies from them too)."""
    features = build_feature_set(merged, config.model, config.data)
    compiled = _compile(merged, features, config, strategy, shards, splits)
    what = " + ".join(splits)
    logger.info("fitting on %d %s examples for %d epochs", compiled.num_examples, what, epochs)
    _run_fit(compiled, config, epochs, log_dir, what=what)
    return compiled.model, features, compiled.num_examples


def _test_metrics(
    model: TwoTowerModel, features: FeatureSet, split: SplitData, config: RunConfig
) -> dict:
    """Full-catalog test metrics of the evaluation weights (the two-tower model only), on at
    most `evaluation.eval_users` test users."""
    evaluation = config.evaluation
    ranker = TwoTowerRanker(model, features, split, memory_budget_gb=evaluation.memory_budget_gb)
    report = evaluate_split(split, TEST, [ranker], with_baselines=False, evaluation=evaluation)
    metrics = report.results[TwoTowerRanker.name]
    logger.info(
        "test (evaluation weights): recall@10 %.4f, ndcg@10 %.4f",
        metrics["recall@10"],
        metrics["ndcg@10"],
    )
    return metrics


def fit(
    split: SplitData,
    features: FeatureSet,
    config: RunConfig,
    log_dir: Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
    shards_dir: Path | None = None,
) -> Fitted:
    """Trains the evaluation weights, reports their test metrics, then the production model.

    0. Every interaction becomes an example row in Parquet shards under `shards_dir` (a
       temporary directory when None), with its history computed by the columnar engine.
    1. Early stopping on validation Recall@10 over the training split chooses the epochs.
    2. With `refit_on_validation`, a fresh model is fit for that many epochs on train +
       validation: the evaluation weights, which know the interactions just before test time.
    3. With `production_fit`, their test metrics are measured, and a fresh model is fit for the
       same epochs on every interaction: the production weights, which nothing may score.

    `features` are the training split's; each later fit builds its own vocabularies. Seconds per
    stage are in `Fitted.timings`.
    """
    strategy = strategy or make_strategy(config.train.strategy, config.train.min_shard_bytes)
    timings: dict[str, float] = {}
    with _example_shards(split, features, config, shards_dir, timings) as shards:
        with _timed(timings, "fit"):
            model, history, throughput = _fit_with_early_stopping(
                split, features, config, log_dir, strategy, shards
            )
        fitted = Fitted(model, features, history, throughput, timings=timings)
        epochs = best_epoch(history.history, config) + 1
        if config.train.refit_on_validation:
            with _timed(timings, "refit"):
                model, features, examples = _fit_fresh(
                    split.with_validation_as_train(),
                    config,
                    epochs,
                    _sub_dir(log_dir, "refit"),
                    strategy,
                    shards,
                    (TRAIN, VALIDATION),
                )
            fitted = Fitted(model, features, history, throughput, epochs, examples, timings=timings)
        if config.train.production_fit:
            with _timed(timings, "test_evaluation"):
                fitted.test = _test_metrics(fitted.model, fitted.features, split, config)
            with _timed(timings, "production_fit"):
                production = _fit_fresh(
                    split.with_all_as_train(),
                    config,
                    epochs,
                    _sub_dir(log_dir, "production"),
                    strategy,
                    shards,
                    SPLITS,
                )
            fitted.production, fitted.production_features, fitted.production_examples = production
    return fitted


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - started, 3)


def _history_length(features: FeatureSet) -> int:
    """H, the history the query tower takes; 0 without a history feature."""
    return features.get(HISTORY).max_values if HISTORY in features.names("query") else 0


@contextlib.contextmanager
def _example_shards(
    split: SplitData,
    features: FeatureSet,
    config: RunConfig,
    directory: Path | None,
    timings: dict[str, float],
) -> Iterator[ExampleShards]:
    """The example shards of `split`: written to `directory`, else found or written in the
    shards cache (`data.shards_cache`), else written to a temporary directory."""
    # With `history_skip`, each row keeps that many more items, cut per epoch while training.
    history_length = _history_length(features)
    if history_length:
        history_length += config.train.history_skip
    engine = EngineConfig(memory_limit_gb=config.data.preprocess_memory_gb)
    if directory is None and config.data.shards_cache:
        with _timed(timings, "example_shards"):
            cache = Path(config.data.shards_cache).expanduser()
            shards = cached_example_shards(split, cache, history_length, engine)
        yield shards
        return
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="twotower-")))
        with _timed(timings, "example_shards"):
            shards = write_example_shards(split, directory / "examples", history_length, engine)
        yield shards


@contextlib.contextmanager
def _shared_shards(out_dir: Path, strategy: tf.distribute.Strategy) -> Iterator[Path | None]:
    """Where the example shards go: beside the run when parameter-server workers must read
    them (removed afterwards), else None (a private temporary directory)."""
    if not is_parameter_server(strategy):
        yield None
        return
    directory = out_dir.with_name(f"{out_dir.name}.examples")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sub_dir(log_dir: Path | None, name: str) -> Path | None:
    return log_dir / name if log_dir is not None else None


def best_epoch(history: dict[str, list[float]], config: RunConfig) -> int:
    """0-based epoch whose weights the early-stopping phase kept."""
    recalls = history.get(EARLY_STOPPING_METRIC, [0.0])
    if config.train.early_stopping_patience == 0:
        # Without early stopping the last epoch's weights are kept.
        return len(recalls) - 1
    return int(max(range(len(recalls)), key=recalls.__getitem__))


def train(
    data: InteractionData,
    config: RunConfig,
    out_dir: Path | None,
    *,
    overwrite: bool = False,
    load_seconds: float = 0.0,
) -> TrainResult:
    """Splits, trains, and (if `out_dir`) writes the run directory atomically.

    `load_seconds` (how long reading `data` took the caller) is reported with the other stages.

    With `strategy="multi-worker"` (TF_CONFIG names the cluster) every worker trains, and only
    the chief (the "chief" task, else worker 0) writes `out_dir`; the others write nothing.
    With `strategy="parameter-server"` this runs on the chief (the coordinator) only, and the
    example shards go beside `out_dir` (`<out_dir>.examples`, removed afterwards), where the
    workers read them: that filesystem must be shared by every task.

    Raises:
      RunDirError: `out_dir` exists and `overwrite` is false (checked before training).
      DataError: the data cannot be split or has no positives.
    """
    if out_dir is not None and Path(out_dir).exists() and not overwrite:
        raise RunDirError(f"{out_dir} already exists; choose another --out or pass --force")
    started = time.perf_counter()
    # First TensorFlow call of `twotower train`: MultiWorkerMirroredStrategy configures the
    # collective ops, which must happen before the eager context is initialized.
    strategy = make_strategy(config.train.strategy, config.train.min_shard_bytes)
    split_started = time.perf_counter()
    config = _for_log_size(config, len(data.interactions))
    split, features = prepare(data, config)
    split_seconds = time.perf_counter() - split_started
    stage_seconds = {"load": load_seconds, "split": split_seconds}
    if out_dir is None or not is_chief(strategy):
        fitted = fit(split, features, config, strategy=strategy)
        return _result(None, fitted, started, config, stage_seconds)
    with (
        atomic_directory(Path(out_dir), overwrite=overwrite) as staging,
        _shared_shards(Path(out_dir), strategy) as shards_dir,
    ):
        fitted = fit(split, features, config, staging / LOGS_DIR, strategy, shards_dir)
        write_started = time.perf_counter()
        config.save(staging / CONFIG_FILE)
        fitted.features.save(staging / FEATURES_FILE)
        save_weights(fitted.model, staging / WEIGHTS_DIR)
        save_split_data(split, staging / DATA_DIR)
        write_training_curves(fitted.history.history, staging / CURVES_FILE)
        if fitted.production is not None:
            (staging / PRODUCTION_DIR).mkdir()
            fitted.production_features.save(staging / PRODUCTION_DIR / FEATURES_FILE)
            save_weights(fitted.production, staging / PRODUCTION_DIR / WEIGHTS_DIR)
        fitted.timings["write_run"] = round(time.perf_counter() - write_started, 3)
        result = _result(Path(out_dir), fitted, started, config, stage_seconds)
        write_json(staging / METRICS_FILE, _metrics_payload(split, result))
    logger.info("wrote run %s", out_dir)
    return result


def _for_log_size(config: RunConfig, interactions: int) -> RunConfig:
    """`config` with its model as trained on this log (`ModelConfig.for_log`), said in the log."""
    model = config.model.for_log(interactions)
    if model is config.model:
        return config
    logger.info(
        "%d interactions > model.ensemble_max_rows (%d): training one pair of towers instead of "
        "%d ensemble members (at this size they add little recall for their cost; "
        "--ensemble-max-rows 0 keeps them)",
        interactions,
        config.model.ensemble_max_rows,
        config.model.ensemble_members,
    )
    return dataclasses.replace(config, model=model)


def _result(
    run_dir: Path | None,
    fitted: Fitted,
    started: float,
    config: RunConfig,
    stage_seconds: dict[str, float],
) -> TrainResult:
    values = {k: [float(x) for x in v] for k, v in fitted.history.history.items()}
    best = best_epoch(values, config)
    validation = {
        k.removeprefix("val_"): v[best] for k, v in values.items() if k.startswith("val_")
    }
    return TrainResult(
        run_dir,
        values,
        validation,
        best + 1,
        time.perf_counter() - started,
        fitted.throughput,
        fitted.refit_epochs,
        fitted.refit_examples,
        fitted.test,
        fitted.production_examples,
        _stage_seconds(stage_seconds, fitted.timings),
    )


def _stage_seconds(before: dict[str, float], timings: dict[str, float]) -> dict[str, float]:
    """Seconds per stage; `preprocess` is from the source to the example shards: reading the
    data (`load`, measured by the caller), the split and vocabularies, and the shards."""
    stages = {name: round(seconds, 3) for name, seconds in {**before, **timings}.items()}
    stages["preprocess"] = round(
        sum(stages.get(name, 0.0) for name in ("load", "split", "example_shards")), 3
    )
    return stages


def _metrics_payload(split: SplitData, result: TrainResult) -> dict[str, Any]:
    counts = split.interactions.groupby(["split", "positive"]).size()
    return {
        "best_epoch": result.best_epoch,
        "validation": result.validation,
        "history": result.history,
        "train_seconds": result.seconds,
        # Training examples/s of the early-stopping phase (validation time excluded), with and
        # without its first execution (tracing, compiling, filling the input pipeline).
        **result.throughput.to_json(),
        "timings": result.timings,
        # With a refit, the saved weights come from it and have seen validation: the
        # validation metrics above are the early-stopping phase's, measured before the refit.
        "refit": {"epochs": result.refit_epochs, "examples": result.refit_examples},
        # Test metrics of the evaluation weights (weights/), measured before the production fit;
        # the production weights (production/) were fit on test too and are never scored.
        "test": result.test,
        "production": {
            "trained": bool(result.production_examples),
            "epochs": result.best_epoch if result.production_examples else 0,
            "examples": result.production_examples,
            "trained_on": list(SPLITS) if result.production_examples else [],
        },
        "data": {
            **split.data.summary(),
            "interactions_by_split": {
                f"{s}/{'positive' if p else 'other'}": int(n) for (s, p), n in counts.items()
            },
        },
        "filters": [str(r) for r in (*split.data.reports, *split.reports)],
    }


__all__ = ["TEST", "TrainResult", "fit", "prepare", "train"]
