"""Training end to end on planted-structure data, the run directory, and configuration errors.

The model is trained once per session (`trained_run` in conftest.py) and shared.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tfrs_model import training
from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tfrs_model.data.splits import TEST, VALIDATION
from tfrs_model.data.synthetic import make_synthetic
from tfrs_model.errors import ConfigError, RunDirError
from tfrs_model.evaluation.evaluate import evaluate_split
from tfrs_model.evaluation.metrics import ranking_metrics
from tfrs_model.evaluation.protocol import build_eval_set
from tfrs_model.evaluation.two_tower import TwoTowerRanker
from tfrs_model.run import Run, atomic_directory
from tfrs_model.towers import Tower


@pytest.mark.slow
def test_two_tower_beats_popularity_on_planted_clusters(trained_run):
    ranker = TwoTowerRanker(trained_run.model, trained_run.features, trained_run.split)
    results = evaluate_split(trained_run.split, TEST, [ranker], ks=(10,)).results
    two_tower, popularity = results["two_tower"], results["popularity"]
    # Test positives are the users' preferred-cluster items. Popularity ranks the same global
    # hits for everyone, only about a quarter of which are in a given user's cluster (0.28 on
    # test with seed 0); the towers can learn the cluster from genre, occupation and history
    # (0.9 recall with seed 0). The margins leave room for run-to-run noise.
    assert two_tower["recall@10"] >= popularity["recall@10"] + 0.25
    assert two_tower["ndcg@10"] >= popularity["ndcg@10"] + 0.2
    assert two_tower["recall@10"] >= 0.6
    assert two_tower["recall@10"] > results["random"]["recall@10"]


@pytest.mark.slow
def test_run_directory_has_the_documented_files(trained_run):
    directory = trained_run.directory
    assert {p.name for p in directory.iterdir()} == {
        "config.json",
        "features.json",
        "metrics.json",
        "training_curves.png",
        "weights",
        "production",
        "data",
        "logs",
    }
    assert {p.name for p in (directory / "production").iterdir()} == {"features.json", "weights"}
    assert any((directory / "production" / "weights").glob("towers.index"))
    assert {p.name for p in (directory / "data").iterdir()} == {
        "interactions.parquet",
        "users.parquet",
        "items.parquet",
        "dataset.json",
    }
    assert any((directory / "weights").glob("towers.index"))
    # The staging directory was renamed, not left beside the run.
    assert [p.name for p in directory.parent.iterdir()] == ["run"]
    assert RunConfig.load(directory / "config.json") == trained_run.config


@pytest.mark.slow
def test_metrics_file_counts_the_split_by_hand(trained_run):
    metrics = json.loads((trained_run.directory / "metrics.json").read_text())
    # Per user: 20 interactions, floor(20 * 0.2) = 4 test, floor(16 * 0.1) = 1 validation,
    # 15 train; 16 are preferred-cluster positives and the 4 others are not. Over 200 users:
    by_split = metrics["data"]["interactions_by_split"]
    assert sum(v for k, v in by_split.items() if k.startswith("train/")) == 200 * 15
    assert sum(v for k, v in by_split.items() if k.startswith("validation/")) == 200 * 1
    assert sum(v for k, v in by_split.items() if k.startswith("test/")) == 200 * 4
    assert sum(v for k, v in by_split.items() if k.endswith("/other")) == 200 * 4
    assert metrics["data"]["interactions"] == 4000
    assert metrics["filters"] == [
        "not positives (rating < 4.0): kept as history and exclusions, not as training "
        "targets: 800 rows affected, 3200 remain"
    ]
    assert 1 <= metrics["best_epoch"] <= trained_run.config.train.epochs
    assert metrics["best_epoch"] == trained_run.result.best_epoch


@pytest.mark.slow
def test_reopened_run_reproduces_the_metrics(trained_run):
    run = Run.open(trained_run.directory)
    assert run.config == trained_run.config
    assert run.features == trained_run.features
    assert run.split.interactions.equals(trained_run.split.interactions)
    reloaded = TwoTowerRanker(run.load_model(), run.features, run.split)
    in_memory = TwoTowerRanker(trained_run.model, trained_run.features, trained_run.split)
    for split in (VALIDATION, TEST):
        eval_set = build_eval_set(run.split, split)
        assert (reloaded.rank(eval_set, 50) == in_memory.rank(eval_set, 50)).all()
    assert (
        evaluate_split(run.split, TEST, [reloaded], with_baselines=False).results
        == evaluate_split(trained_run.split, TEST, [in_memory], with_baselines=False).results
    )


@pytest.mark.slow
def test_refit_trains_on_train_and_validation_for_the_best_epoch_count(trained_run):
    metrics = json.loads((trained_run.directory / "metrics.json").read_text())
    by_split = metrics["data"]["interactions_by_split"]
    # One refit example per train or validation interaction (non-positives train retrieval with
    # model.non_positive_weight), for as many epochs as early stopping kept.
    assert trained_run.config.model.non_positive_weight > 0
    assert metrics["refit"] == {
        "epochs": metrics["best_epoch"],
        "examples": sum(
            count
            for name, count in by_split.items()
            if name.split("/")[0] in ("train", "validation")
        ),
    }
    assert trained_run.result.refit_epochs == metrics["best_epoch"]
    # The saved vocabularies are those of train + validation.
    known = trained_run.split.known_before(TEST)
    assert set(Run.open(trained_run.directory).features.get("item_id").vocabulary) == set(
        known["item_id"]
    )


@pytest.mark.slow
def test_a_refit_run_refuses_to_be_scored_on_validation(trained_run):
    from tfrs_model.evaluation.service import evaluate_run_dir

    with pytest.raises(ConfigError, match=r"refit on train \+ validation.*would leak"):
        evaluate_run_dir(trained_run.directory, VALIDATION, with_baselines=False)


@pytest.mark.slow
def test_without_refit_the_saved_weights_are_the_best_epochs(tmp_path, tiny_config):
    data = make_synthetic(num_users=60, num_items=40, interactions_per_user=20, num_clusters=2)
    config = tiny_config(epochs=3, refit_on_validation=False)
    result = training.train(data, config, tmp_path / "run")
    run = Run.open(tmp_path / "run")
    assert run.metrics["refit"] == {"epochs": 0, "examples": 0}
    assert result.refit_epochs == 0
    # They score exactly the validation Recall@10 that metrics.json reports for the best epoch.
    validation = build_eval_set(run.split, VALIDATION)
    ranker = TwoTowerRanker(run.load_model(), run.features, run.split)
    recall = ranking_metrics(ranker.rank(validation, 10), validation.relevant, 40, (10,))
    assert recall["recall@10"] == run.metrics["validation"]["recall_at_10"]


@pytest.mark.slow
def test_production_fit_trains_on_every_split_after_reporting_test(trained_run):
    metrics = json.loads((trained_run.directory / "metrics.json").read_text())
    by_split = metrics["data"]["interactions_by_split"]
    # One production example per interaction of any split, for the epochs early stopping kept.
    assert metrics["production"] == {
        "trained": True,
        "epochs": metrics["best_epoch"],
        "examples": sum(by_split.values()),
        "trained_on": ["train", "validation", "test"],
    }
    # The reported test metrics are those of the evaluation weights (weights/), recomputed here.
    run = Run.open(trained_run.directory)
    report = evaluate_split(
        run.split,
        TEST,
        [TwoTowerRanker(run.load_model(), run.features, run.split)],
        with_baselines=False,
    )
    assert report.results["two_tower"]["recall@10"] == pytest.approx(metrics["test"]["recall@10"])
    assert trained_run.result.test == metrics["test"]


@pytest.mark.slow
def test_without_production_fit_the_run_has_no_production_weights(tmp_path, tiny_config):
    data = make_synthetic(num_users=60, num_items=40, interactions_per_user=20, num_clusters=2)
    training.train(data, tiny_config(epochs=2, production_fit=False), tmp_path / "run")
    run = Run.open(tmp_path / "run")
    assert not run.has_production and not (tmp_path / "run" / "production").exists()
    assert run.metrics["production"]["trained"] is False and run.metrics["test"] == {}


def test_existing_out_fails_before_any_training(tmp_path, synthetic, tiny_config, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")

    def not_reached(*args, **kwargs):
        raise AssertionError("training started although --out exists")

    monkeypatch.setattr(training, "prepare", not_reached)
    with pytest.raises(RunDirError, match="already exists; choose another --out or pass --force"):
        training.train(synthetic, tiny_config(), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failure_mid_training_leaves_no_directory(tmp_path, tiny_config, monkeypatch):
    def fail(self, epoch, logs=None):
        raise RuntimeError("disk full")

    # Fails at the end of the first epoch: towers built, TensorBoard logs being written.
    monkeypatch.setattr(training.ValidationRanking, "on_epoch_end", fail)
    data = make_synthetic(num_users=30, num_items=40, interactions_per_user=20, num_clusters=2)
    with pytest.raises(RuntimeError, match="disk full"):
        training.train(data, tiny_config(epochs=2), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_failed_replacement_keeps_the_previous_run(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "config.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final, overwrite=True) as staging:
        (staging / "config.json").write_text("new")
        raise RuntimeError("crash before the rename")
    assert (final / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    # A successful replacement swaps the whole directory.
    with atomic_directory(final, overwrite=True) as staging:
        (staging / "config.json").write_text("new")
    assert (final / "config.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_open_rejects_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"is not a training run \(missing features.json, "):
        Run.open(tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DataConfig(test_fraction=0.0), r"test_fraction must be in \(0, 1\)"),
        (lambda: DataConfig(validation_fraction=1.0), r"validation_fraction must be in \(0, 1\)"),
        (lambda: DataConfig(split="random"), "split must be 'per-user' or 'global-time'"),
        (lambda: DataConfig(history_length=-1), "history_length must be >= 0"),
        (lambda: ModelConfig(embedding_dim=0), "must be positive"),
        (lambda: ModelConfig(feature_embedding_dim=0), "feature_embedding_dim must be positive"),
        (lambda: ModelConfig(hidden_layers=(64, 0)), "hidden_layers sizes must be positive"),
        (lambda: ModelConfig(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: ModelConfig(temperature=0.0), "temperature must be > 0"),
        (lambda: ModelConfig(oov_buckets=0), "oov_buckets must be >= 1"),
        (lambda: ModelConfig(id_dropout=1.0), r"id_dropout must be in \[0, 1\)"),
        (lambda: TrainConfig(epochs=0), "epochs and batch_size must be >= 1"),
        (lambda: TrainConfig(learning_rate=-0.1), "learning_rate must be > 0"),
        (lambda: TrainConfig(early_stopping_patience=-1), "early_stopping_patience must be >= 0"),
        (lambda: TrainConfig(optimizer="rmsprop"), "optimizer must be adam, adagrad or sgd"),
        (lambda: TrainConfig(strategy="tpu"), "strategy must be default, mirrored"),
        (lambda: RunConfig.from_dict({"optimizer": {}}), r"unknown config section\(s\)"),
        (
            lambda: RunConfig.from_dict({"model": {"embeding_dim": 8}}),
            r"unknown ModelConfig field\(s\) \['embeding_dim'\]; valid fields:",
        ),
    ],
)
def test_bad_config_values_raise_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_config_round_trips_through_json(tmp_path: Path):
    config = RunConfig.from_dict({"model": {"hidden_layers": [64, 32]}, "train": {"epochs": 3}})
    # JSON lists become the tuples the dataclass declares.
    assert config.model.hidden_layers == (64, 32)
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read config"):
        RunConfig.load(tmp_path / "broken.json")


def test_a_run_saved_before_ensembles_loads_as_one_member(tmp_path: Path):
    """Its checkpoint holds one pair of towers; a config file without the field gets today's
    default (an ensemble), a saved run its own past."""
    (tmp_path / "config.json").write_text(json.dumps({"model": {"embedding_dim": 32}}))
    assert RunConfig.load(tmp_path / "config.json").model.ensemble_members == 1
    assert RunConfig.from_dict({"model": {"embedding_dim": 32}}).model.ensemble_members == 3
    config = RunConfig.from_dict({"model": {"ensemble_members": 2}})
    config.save(tmp_path / "ensemble.json")
    assert RunConfig.load(tmp_path / "ensemble.json").model.ensemble_members == 2


def test_logs_above_the_ensemble_limit_train_one_pair_of_towers():
    """Worked by hand: 3 members, limit 100 rows: 100 rows keep 3, 101 rows train 1; a limit of
    0 never drops members; a negative limit is refused."""
    model = ModelConfig(ensemble_members=3, ensemble_max_rows=100)
    assert model.for_log(100) is model
    assert model.for_log(101) == ModelConfig(ensemble_members=1, ensemble_max_rows=100)
    assert model.for_log(101).output_dim == model.embedding_dim
    assert ModelConfig(ensemble_members=3, ensemble_max_rows=0).for_log(10**9).ensemble_members == 3
    with pytest.raises(ConfigError, match="ensemble_max_rows must be a whole number >= 0"):
        ModelConfig(ensemble_max_rows=-1)


@pytest.mark.slow
def test_a_run_over_the_ensemble_limit_saves_the_one_member_it_trained(tmp_path, tiny_config):
    data = make_synthetic(num_users=60, num_items=40, interactions_per_user=20, num_clusters=2)
    config = tiny_config(epochs=1, production_fit=False, refit_on_validation=False)
    limit = len(data.interactions) - 1
    model = dataclasses.replace(config.model, ensemble_members=2, ensemble_max_rows=limit)
    training.train(data, dataclasses.replace(config, model=model), tmp_path / "run")
    run = Run.open(tmp_path / "run")
    # The saved config is what was trained, so the export builds the same (single) towers.
    assert run.config.model.ensemble_members == 1
    assert run.config.model.ensemble_max_rows == limit
    model = run.load_model()
    assert isinstance(model.query_model, Tower) and isinstance(model.candidate_model, Tower)
