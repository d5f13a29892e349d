"""Typed configuration for data, model and training, saved with every run as `config.json`."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from tfrs_model.errors import ConfigError

T = TypeVar("T")

# `TrainConfig.strategy` values (`tfrs_model.distribute` builds them); kept here, free of
# TensorFlow, so the CLI can offer them without importing it.
STRATEGIES = ("default", "mirrored", "multi-worker", "parameter-server")
# `ModelConfig.history_pooling` values (`tfrs_model.layers.HistoryEmbedding` implements them).
HISTORY_POOLINGS = ("mean", "attention", "gru", "transformer")


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from and how they are split.

    Attributes:
      dataset: a MovieLens name (`movielens-100k`, ...) or `tabular` for a dataset config file.
      data_dir: directory with extracted files; None downloads MovieLens into the cache.
      dataset_config: YAML file declaring a tabular dataset (with `dataset="tabular"`).
      split: `per-user` holds out the last fractions of each user's interactions by time;
        `global-time` cuts all interactions at two points in time.
      test_fraction, validation_fraction: per-user: the last `test_fraction` of each user's
        interactions is test, and the last `validation_fraction` of the rest is validation.
        global-time: the same fractions of the time-ordered log.
      min_positive_rating: interactions rated at least this are positives; None counts every
        interaction as positive (implicit feedback, or sources without ratings).
      history_length: how many past items form the query's history feature.
      drop_duplicates: drop repeated (user, item, timestamp) rows instead of failing.
      preprocess_memory_gb: memory limit of the columnar engine that computes histories and
        writes the example shards; larger intermediate results spill to disk.
      shards_cache: a directory where example shards are kept, keyed by a digest of the data,
        the split and the history length, and reused by later runs on the same data; None
        writes them to a temporary directory removed after training.
    """

    dataset: str = "movielens-100k"
    data_dir: str | None = None
    dataset_config: str | None = None
    split: Literal["per-user", "global-time"] = "per-user"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    min_positive_rating: float | None = 4.0
    history_length: int = 20
    drop_duplicates: bool = False
    preprocess_memory_gb: float = 4.0
    shards_cache: str | None = None

    def __post_init__(self) -> None:
        if self.split not in ("per-user", "global-time"):
            raise ConfigError(f"split must be 'per-user' or 'global-time', got {self.split!r}")
        for name in ("test_fraction", "validation_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if self.history_length < 0:
            raise ConfigError(f"history_length must be >= 0, got {self.history_length}")
        if self.preprocess_memory_gb <= 0:
            raise ConfigError(
                f"preprocess_memory_gb must be > 0, got {self.preprocess_memory_gb}; it is the "
                "columnar engine's memory limit (--memory-limit-gb)"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Towers and retrieval task.

    Attributes:
      embedding_dim: output dimension of each tower (of each member, with `ensemble_members`).
      ensemble_members: independently initialised copies of both towers, trained side by side on
        the same batches, each with its own retrieval loss (a deep ensemble). A tower's output
        is its members' unit vectors concatenated and divided by sqrt(members): still unit norm,
        and its dot product is the mean of the members' scores, so one index serves the
        ensemble. The exported embeddings (and the index) have `members * embedding_dim`
        dimensions, and training costs about `members` times the tower computation.
      ensemble_max_rows: logs with more interactions than this train one pair of towers
        whatever `ensemble_members` says (0: no limit). The ensemble's gain shrinks as the log
        grows while its cost does not: after one epoch three members add 7.8% recall@10 on
        MovieLens 100K, 0.6% and 0.4% on synthetic logs of 2.5M and 25M rows, for 3.2-3.4x the
        training time and 2.75 GB more memory at 25M rows (docs/scale.md).
      id_embedding_dim: embedding size of user and item ids (and history items).
      feature_embedding_dim: embedding size of the other categorical features.
      hidden_layers: sizes of the MLP on top of the concatenated embeddings; () for none.
      l2_normalize: unit-normalize tower outputs, so scores are cosines divided by `temperature`.
      temperature: softmax temperature of the retrieval loss.
      logq_correction: subtract log(sampling probability) of in-batch negatives (item frequency).
      logq_strength: multiplies that correction: 1 removes the popularity bias of in-batch
        negatives exactly; below 1 keeps part of it (pushes popular items down), above 1
        favours popular items.
      remove_accidental_hits: ignore in-batch negatives that are the positive item itself.
      sampled_negatives: catalog items drawn uniformly for every training batch and scored
        against all its queries beside the in-batch negatives; 0 uses in-batch negatives only,
        and a number >= the catalog size scores the whole catalog (a full softmax).
      hard_negatives: keep only this many highest-scoring negatives per query in the loss
        (TFRS hard-negative mining); 0 keeps all.
      rating_weight: weight of a pointwise rating-regression head (mean squared error of an
        MLP over both tower outputs, as in the TFRS multitask tutorial) added to the retrieval
        loss; it trains on every rated training interaction, positives or not, while retrieval
        still learns from positives only. 0 turns it off; the data must have ratings.
      like_weight: weight of a pointwise like-probability head (binary cross-entropy of an MLP
        over both tower outputs against the positive label: a like, a save, a rating >= the
        threshold) added to the retrieval loss, for logs whose engagement label separates
        liked from merely seen interactions; it trains on every interaction. 0 turns it off;
        the training data must hold both positive and non-positive interactions.
      non_positive_weight: retrieval weight of interactions below `min_positive_rating` (a user
        chose the item but did not like it): 0 trains retrieval on positives only, as the
        evaluation counts them; above 0 the model also learns what users choose to watch.
      use_user_features, use_item_features, use_history: feature switches.
      history_pooling: how the history is summarized beside its most recent item: `mean`,
        `attention` (learned item and recency weights), `gru` or `transformer` (a causal
        self-attention block with positions, as in SASRec).
      oov_buckets: out-of-vocabulary buckets per lookup, so unseen ids still embed.
      id_dropout: training-time probability of replacing a user or item id by the
        out-of-vocabulary bucket, which teaches the towers to answer from features (cold start).
      dropout: dropout rate between MLP layers.
    """

    embedding_dim: int = 64
    ensemble_members: int = 3
    ensemble_max_rows: int = 1_000_000
    id_embedding_dim: int = 64
    feature_embedding_dim: int = 16
    hidden_layers: tuple[int, ...] = (128,)
    l2_normalize: bool = True
    temperature: float = 0.05
    logq_correction: bool = True
    logq_strength: float = 1.2
    remove_accidental_hits: bool = True
    sampled_negatives: int = 0
    hard_negatives: int = 0
    rating_weight: float = 0.0
    like_weight: float = 0.0
    non_positive_weight: float = 0.5
    use_user_features: bool = True
    use_item_features: bool = True
    use_history: bool = True
    history_pooling: Literal["mean", "attention", "gru", "transformer"] = "mean"
    oov_buckets: int = 1
    id_dropout: float = 0.05
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # feature_embedding_dim, hidden_layers and dropout were unchecked: bad values surfaced as
        # Keras tracebacks while building the towers, after the data had been loaded.
        if self.embedding_dim <= 0 or self.id_embedding_dim <= 0 or self.feature_embedding_dim <= 0:
            raise ConfigError(
                "embedding_dim, id_embedding_dim and feature_embedding_dim must be positive"
            )
        if not _is_int(self.ensemble_members) or self.ensemble_members < 1:
            raise ConfigError(
                f"ensemble_members must be a whole number >= 1, got {self.ensemble_members!r}; "
                "1 trains one pair of towers"
            )
        if not _is_int(self.ensemble_max_rows) or self.ensemble_max_rows < 0:
            raise ConfigError(
                f"ensemble_max_rows must be a whole number >= 0 (0: no limit), got "
                f"{self.ensemble_max_rows!r}"
            )
        if any(units <= 0 for units in self.hidden_layers):
            raise ConfigError(
                f"hidden_layers sizes must be positive, got {self.hidden_layers}; use () for none"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.logq_strength < 0:
            raise ConfigError(f"logq_strength must be >= 0, got {self.logq_strength}")
        if self.sampled_negatives < 0 or self.hard_negatives < 0:
            raise ConfigError(
                "sampled_negatives and hard_negatives must be >= 0 (0 turns them off), got "
                f"{self.sampled_negatives} and {self.hard_negatives}"
            )
        if not 0.0 <= self.non_positive_weight <= 1.0:
            raise ConfigError(
                f"non_positive_weight must be in [0, 1] (0 is off), got {self.non_positive_weight}"
            )
        for name in ("rating_weight", "like_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 is off), got {getattr(self, name)}")
        if self.history_pooling not in HISTORY_POOLINGS:
            raise ConfigError(
                "history_pooling must be mean, attention, gru or transformer, got "
                f"{self.history_pooling!r}"
            )
        if self.oov_buckets < 1:
            raise ConfigError("oov_buckets must be >= 1 so unseen ids still get an embedding")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(f"id_dropout must be in [0, 1), got {self.id_dropout}")

    def for_log(self, interactions: int) -> ModelConfig:
        """This config as trained on a log of `interactions` rows: one member above
        `ensemble_max_rows` (the run saves what was trained, so the export builds the same)."""
        limit = self.ensemble_max_rows
        if self.ensemble_members == 1 or not limit or interactions <= limit:
            return self
        return dataclasses.replace(self, ensemble_members=1)

    @property
    def output_dim(self) -> int:
        """The towers' output (and the index's) dimension: `ensemble_members * embedding_dim`."""
        return self.ensemble_members * self.embedding_dim


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation.

    Attributes:
      epochs: maximum epochs; early stopping on validation Recall@10 may stop sooner.
      early_stopping_patience: epochs without improvement before stopping; 0 disables.
      strategy: `default`, `mirrored` (all local devices), `multi-worker` or `parameter-server`
        (both read TF_CONFIG; see `tfrs_model.distribute`).
      refit_on_validation: after early stopping has chosen the number of epochs on validation,
        train a fresh model for that many epochs on train + validation and keep it. The weights
        then know the interactions just before test time (what the baselines fit on too), so
        the run can only be evaluated on test; its validation metrics are recorded before the
        refit.
      production_fit: after that, report the test metrics of those (evaluation) weights and
        train the production model: a fresh model fit for the same number of epochs on every
        interaction (train + validation + test), with vocabularies of all of them. `twotower
        export` exports it by default; it can never be evaluated (it has seen every split), so
        the run keeps the evaluation weights beside it.
      optimizer, learning_rate: the optimizer of the dense variables (MLPs, attention, heads).
      embedding_optimizer, embedding_learning_rate: the optimizer of the embedding tables,
        which updates only the batch's rows (`adagrad`, `sgd`), so a step costs the same
        whatever the vocabulary size; `same` uses `optimizer` for the tables too (Adam then
        updates every row on every step: slow on large vocabularies).
      steps_per_execution: training steps run per call from Python into TensorFlow; fewer
        calls, less overhead per step. Progress and callbacks update once per call.
      min_shard_bytes: with `strategy="parameter-server"`, a variable larger than this is split
        across the parameter servers in pieces of at least this many bytes.
      history_skip: each training example's history ends a random 0..history_skip items
        before its target (uniform, drawn anew every epoch), instead of just before it. A served
        query must predict all of a user's next interactions from one history; training on
        targets further ahead of their history teaches exactly that. 0 turns it off.
    """

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 0.003
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    embedding_optimizer: Literal["adagrad", "sgd", "same"] = "adagrad"
    embedding_learning_rate: float = 0.1
    steps_per_execution: int = 32
    min_shard_bytes: int = 1 << 20
    history_skip: int = 8
    seed: int = 42
    early_stopping_patience: int = 4
    strategy: Literal["default", "mirrored", "multi-worker", "parameter-server"] = "default"
    tensorboard: bool = True
    refit_on_validation: bool = True
    production_fit: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        # Unchecked before: Keras accepts a negative learning rate or patience without a word.
        for name in ("learning_rate", "embedding_learning_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.history_skip < 0:
            raise ConfigError(f"history_skip must be >= 0 (0 is off), got {self.history_skip}")
        if self.min_shard_bytes < 1:
            raise ConfigError(f"min_shard_bytes must be >= 1, got {self.min_shard_bytes}")
        if self.steps_per_execution < 1:
            raise ConfigError(f"steps_per_execution must be >= 1, got {self.steps_per_execution}")
        if self.embedding_optimizer not in ("adagrad", "sgd", "same"):
            raise ConfigError(
                "embedding_optimizer must be adagrad, sgd or same (the dense optimizer), got "
                f"{self.embedding_optimizer!r}"
            )
        if self.early_stopping_patience < 0:
            raise ConfigError(
                f"early_stopping_patience must be >= 0 (0 disables), got "
                f"{self.early_stopping_patience}"
            )
        if self.optimizer not in ("adam", "adagrad", "sgd"):
            raise ConfigError(f"optimizer must be adam, adagrad or sgd, got {self.optimizer!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"strategy must be {', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]}, got "
                f"{self.strategy!r}"
            )


@dataclass(frozen=True)
class EvaluationConfig:
    """How much of a split is ranked, and in how much memory.

    Attributes:
      eval_users: rank a fixed-seed sample of this many of the users with a positive in the
        evaluated split (`twotower evaluate`, test and the baselines' validation tuning); None
        ranks every one.
      validation_users: the same bound for the per-epoch validation ranking during training
        (early stopping); None ranks every validation user. The default leaves MovieLens 100K
        (943 users) whole.
      memory_budget_gb: working memory of a scoring block and of EASE's item x item matrices;
        blocks are sized to fit it, EASE is skipped (with its reason in the report) when it
        does not, and a catalog where one user's scores exceed it is refused.
      seed: seed of the user samples.
    """

    eval_users: int | None = None
    validation_users: int | None = 10_000
    memory_budget_gb: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, flag in (
            ("eval_users", "--eval-users"),
            ("validation_users", "--validation-users"),
        ):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ConfigError(
                    f"evaluation.{name} must be a whole number >= 1, or null (`{flag} all`) to "
                    f"rank every user; got {value!r}"
                )
        budget = self.memory_budget_gb
        if (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not 0 < budget < float("inf")
        ):
            raise ConfigError(
                f"evaluation.memory_budget_gb must be a number of GiB > 0 (e.g. 4), got {budget!r}"
                "; set it with --memory-budget-gb"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"evaluation.seed must be a whole number >= 0, got {self.seed!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        # Runs saved before the evaluation section existed load with its defaults.
        unknown = set(values) - {"data", "model", "train", "evaluation"}
        if unknown:
            raise ConfigError(
                f"unknown config section(s) {sorted(unknown)}; use data, model, train, evaluation"
            )
        return cls(
            data=from_mapping(DataConfig, values.get("data", {})),
            model=from_mapping(ModelConfig, values.get("model", {})),
            train=from_mapping(TrainConfig, values.get("train", {})),
            evaluation=from_mapping(EvaluationConfig, values.get("evaluation", {})),
        )

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """The config a run directory saved (`save`).

        A field the run predates takes its default, except `model.ensemble_members`: runs saved
        before ensembles existed trained one pair of towers, and their checkpoints hold one.
        """
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from error
        if isinstance(values, dict) and isinstance(values.get("model", {}), dict):
            values.setdefault("model", {}).setdefault("ensemble_members", 1)
        return cls.from_dict(values)


def from_mapping(cls: type[T], values: dict[str, Any]) -> T:
    """Builds dataclass `cls` from a mapping, rejecting unknown keys and coercing lists to tuples.

    Raises:
      ConfigError: a key is not a field of `cls`.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid fields: {sorted(names)}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        origin = typing.get_origin(hints[key])
        if isinstance(value, list) and (origin is tuple or origin is types.UnionType):
            value = tuple(value)
        coerced[key] = value
    return cls(**coerced)


def with_overrides(config: T, **overrides: Any) -> T:
    """A copy of a frozen dataclass with the non-None overrides applied."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
