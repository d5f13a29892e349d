"""`twotower train` and `twotower evaluate` through `twotower.commands.main`, on MovieLens-format
directories the tests write. Bad inputs exit with status 2, one line on stderr naming the problem,
and no run directory."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tfrs_model.config import DataConfig, EvaluationConfig
from tfrs_model.data.synthetic import make_synthetic, write_movielens
from twotower.arguments import evaluation_overrides
from twotower.cli import build_parser, main
from twotower.commands.train import build_config

# Baselines plus the model; each reports these metrics at K = 10, 50 and 100.
MODELS = {"two_tower", "random", "popularity", "ease", "svd"}
METRICS = {
    f"{m}@{k}"
    for m in ("recall", "precision", "ndcg", "map", "hit_rate", "coverage")
    for k in (10, 50, 100)
}
# One epoch of a small model: the CLI plumbing is under test here, not model quality.
CONFIG = {
    "data": {"history_length": 5},
    "model": {
        "embedding_dim": 16,
        "id_embedding_dim": 16,
        "feature_embedding_dim": 4,
        "hidden_layers": [],
    },
    "train": {"epochs": 1, "batch_size": 512, "tensorboard": False},
}


@pytest.fixture(scope="module")
def ml100k_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 60 users x 20 interactions over 40 items (a catalog smaller than K=100).
    data = make_synthetic(num_users=60, num_items=40, interactions_per_user=20, seed=5)
    return write_movielens(data, tmp_path_factory.mktemp("template") / "ml-100k", "100k")


@pytest.fixture
def ml100k(tmp_path: Path, ml100k_template: Path) -> Path:
    """A fresh copy the test may corrupt."""
    return Path(shutil.copytree(ml100k_template, tmp_path / "ml-100k"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIG))
    return path


def _error_line(capsys: pytest.CaptureFixture, command: str) -> str:
    """The CLI's one error line on stderr (log records go to pytest's handlers, not stderr)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"twotower {command}: error: ")
    return lines[0]


def _train(data_dir: Path, out: Path, config: Path, *extra: str) -> int:
    return main(
        ["train", "--data-dir", str(data_dir), "--out", str(out), "--config", str(config), *extra]
    )


@pytest.mark.slow
def test_train_then_evaluate_with_json(tmp_path, ml100k, config_file, capsys, caplog):
    caplog.set_level(logging.INFO, logger="tfrs_model")
    # A duplicated row: refused without the flag...
    with (ml100k / "u.data").open("a") as ratings:
        ratings.write((ml100k / "u.data").read_text().splitlines()[0] + "\n")
    out = tmp_path / "run"
    assert _train(ml100k, out, config_file) == 2
    assert "--drop-duplicates" in _error_line(capsys, "train")
    assert not out.exists()
    # ...and dropped, and counted, with it.
    assert _train(ml100k, out, config_file, "--drop-duplicates") == 0
    assert "best epoch 1: validation recall@10" in capsys.readouterr().out
    assert "drop duplicate interactions: 1 rows affected, 1200 remain" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert "drop duplicate interactions: 1 rows affected, 1200 remain" in metrics["filters"]

    report = tmp_path / "reports" / "test.json"
    assert main(["evaluate", "--run", str(out), "--json", str(report)]) == 0
    table = capsys.readouterr().out
    assert "| two_tower |" in table and "| popularity |" in table
    results = json.loads(report.read_text())
    # {"two_tower": {"recall@10": ...}, "popularity": {...}, ...}
    assert set(results) == MODELS
    for name, values in results.items():
        assert set(values) == METRICS, name
        assert all(0.0 <= v <= 1.0 for v in values.values()), name
    # 40 items: K=100 lists hold every unknown item, so recall@100 is 1 for every model.
    assert {values["recall@100"] for values in results.values()} == {1.0}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["--dataset", "movielens-7m"],
            "unknown dataset 'movielens-7m'; use one of movielens-100k",
        ),
        (["--epochs", "0"], "epochs and batch_size must be >= 1"),
        (["--learning-rate", "-1"], "learning_rate must be > 0"),
        (["--test-fraction", "1.5"], "test_fraction must be in (0, 1), got 1.5"),
        (["--eval-users", "0"], "evaluation.eval_users must be a whole number >= 1"),
        (["--memory-budget-gb", "-2"], "evaluation.memory_budget_gb must be a number of GiB > 0"),
    ],
    ids=[
        "unknown-dataset",
        "zero-epochs",
        "negative-rate",
        "test-fraction",
        "eval-users",
        "budget",
    ],
)
def test_bad_flags(tmp_path, ml100k, config_file, capsys, arguments, expected):
    out = tmp_path / "run"
    assert _train(ml100k, out, config_file, *arguments) == 2
    assert expected in _error_line(capsys, "train")
    assert not out.exists()


def test_missing_data_dir(tmp_path, config_file, capsys):
    out = tmp_path / "run"
    assert _train(tmp_path / "no-such-dir", out, config_file) == 2
    line = _error_line(capsys, "train")
    assert "no-such-dir does not exist or is not a directory" in line
    assert not out.exists()


def test_misnamed_columns_in_ratings_csv(tmp_path, config_file, capsys):
    data = make_synthetic(num_users=10, num_items=10, interactions_per_user=5, num_clusters=2)
    directory = write_movielens(data, tmp_path / "ml-latest-small", "csv")
    text = (directory / "ratings.csv").read_text()
    (directory / "ratings.csv").write_text(text.replace("userId,movieId", "user,movie", 1))
    out = tmp_path / "run"
    code = _train(directory, out, config_file, "--dataset", "movielens-latest-small")
    assert code == 2
    line = _error_line(capsys, "train")
    assert "ratings.csv has columns ['user', 'movie', 'rating', 'timestamp']" in line
    assert "expected ['movieId', 'rating', 'timestamp', 'userId']" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("u_data", "expected"),
    [
        ("", "no interactions: the source is empty"),
        (
            "1\t1\tfive\t881250949\n",
            "interactions.rating: 1 value(s) are not numbers (e.g. 'five')",
        ),
        ("1\t1\t5\tnoon\n", "interactions.timestamp: 1 value(s) are not times (e.g. 'noon')"),
    ],
    ids=["empty", "rating", "timestamp"],
)
def test_bad_ratings_file(tmp_path, ml100k, config_file, capsys, u_data, expected):
    (ml100k / "u.data").write_text(u_data)
    out = tmp_path / "run"
    assert _train(ml100k, out, config_file) == 2
    assert expected in _error_line(capsys, "train")
    assert not out.exists()


def test_existing_out_without_force(tmp_path, ml100k, config_file, capsys):
    out = tmp_path / "run"
    out.mkdir()
    assert _train(ml100k, out, config_file) == 2
    assert "already exists; choose another --out or pass --force" in _error_line(capsys, "train")
    assert list(out.iterdir()) == []


def test_evaluate_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    line = _error_line(capsys, "evaluate")
    assert "is not a training run (missing config.json" in line
    assert "pass the --out directory of a finished `twotower train`" in line


def test_train_split_and_evaluation_flags_parse_into_the_config(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            str(tmp_path / "run"),
            "--split",
            "global-time",
            "--test-fraction",
            "0.25",
            "--validation-fraction",
            "0.15",
            "--min-positive-rating",
            "3.5",
            "--eval-users",
            "5000",
            "--validation-users",
            "all",
            "--memory-budget-gb",
            "2",
        ]
    )
    config = build_config(args)
    assert (config.data.split, config.data.test_fraction, config.data.validation_fraction) == (
        "global-time",
        0.25,
        0.15,
    )
    assert config.data.min_positive_rating == 3.5
    # `all` is the config's None: every validation user is ranked after each epoch.
    assert config.evaluation == EvaluationConfig(
        eval_users=5000, validation_users=None, memory_budget_gb=2.0
    )


def test_train_defaults_and_implicit_feedback(tmp_path):
    out = ["train", "--out", str(tmp_path / "run")]
    defaults = build_config(build_parser().parse_args(out))
    assert defaults.data == DataConfig() and defaults.evaluation == EvaluationConfig()
    # `none`: no rating threshold, every interaction is a positive.
    implicit = build_config(build_parser().parse_args([*out, "--min-positive-rating", "none"]))
    assert implicit.data.min_positive_rating is None


def test_config_file_evaluation_section_and_flags_over_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"evaluation": {"eval_users": 100, "validation_users": 50}}))
    args = build_parser().parse_args(
        ["train", "--out", str(tmp_path / "run"), "--config", str(path), "--eval-users", "all"]
    )
    assert build_config(args).evaluation == EvaluationConfig(eval_users=None, validation_users=50)


def test_evaluate_flags_become_evaluation_overrides():
    args = build_parser().parse_args(
        ["evaluate", "--run", "r", "--eval-users", "5000", "--memory-budget-gb", "0.5"]
    )
    assert evaluation_overrides(args) == {"eval_users": 5000, "memory_budget_gb": 0.5}
    plain = build_parser().parse_args(["evaluate", "--run", "r"])
    assert evaluation_overrides(plain) == {}
    everyone = build_parser().parse_args(["evaluate", "--run", "r", "--eval-users", "all"])
    assert evaluation_overrides(everyone) == {"eval_users": None}


def test_evaluate_rejects_a_word_for_eval_users(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["evaluate", "--run", "r", "--eval-users", "many"])
    assert stopped.value.code == 2
    assert "expected a whole number of users or 'all', got 'many'" in capsys.readouterr().err


@pytest.mark.integration
def test_evaluate_saved_model_ranks_a_seeded_sample_of_users(version_dirs, tmp_path, capsys):
    from export.index import BRUTE_FORCE

    out = tmp_path / "eval.json"
    version = str(version_dirs[BRUTE_FORCE])
    args = ["evaluate", "--saved-model", version, "--no-baselines", "--eval-users", "7"]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "7 of " in capsys.readouterr().out  # "7 of N users (a seeded sample ...)"
    assert 0.0 <= report["two_tower"]["recall@10"] <= 1.0
