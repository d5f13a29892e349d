"""`twotower export` end to end: flags to `ExportConfig`, version numbering, --force, exit
codes and messages, and an export with `--known-through all` that refuses evaluation.

One real export (brute force, no verification) runs through the CLI; the other tests stub the
writer and the verifier (`stub_export`, conftest.py), so they exercise the CLI and `export_run`
without building SavedModels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from export import contract
from export.evaluation import evaluate_saved_model
from export.index import BRUTE_FORCE, SCANN, IndexConfig
from export.loading import load_saved_model
from tfrs_model.errors import ExportError
from twotower.cli import main

pytestmark = pytest.mark.integration


def export(run_dir: Path, base: Path, *flags: str) -> int:
    return main(["export", "--run", str(run_dir), "--model-base-path", str(base), *flags])


@pytest.fixture(scope="module")
def known_through_all(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real export through the CLI: brute force, k 5, version 7, the evaluation weights with
    every interaction baked (so only the baked history makes it unfit for evaluation)."""
    base = tmp_path_factory.mktemp("cli-models")
    flags = ("--index", "brute-force", "--k", "5", "--version", "7", "--known-through", "all")
    flags += ("--weights", "evaluation")
    code = export(run_dir, base, *flags, "--no-verify")
    return code, base


def test_cli_export_writes_the_requested_version(known_through_all, capsys):
    code, base = known_through_all
    assert code == 0
    assert [p.name for p in base.iterdir()] == ["7"]
    card = json.loads((base / "7" / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE).read_text())
    assert (card["version"], card["k"], card["known_through"]) == (7, 5, "all")
    assert card["index"]["kind"] == BRUTE_FORCE
    assert card["export"]["verify"] is False


def test_known_through_all_excludes_every_interaction(known_through_all, run):
    _, base = known_through_all
    model = load_saved_model(base / "7")
    seen = run.split.interactions.groupby("user_id")["item_id"].agg(set)  # test split included
    users = sorted(seen.index)
    ids = model.signatures[contract.SERVING_DEFAULT](user_id=tf.constant(users))
    ids = ids[contract.ITEM_IDS].numpy().astype(str)
    assert ids.shape == (len(users), 5)
    for user, row in zip(users, ids, strict=True):
        assert not set(row) & seen[user]
        assert (row != "").all()  # 20 interactions of 100 items leave plenty


def test_known_through_all_export_refuses_evaluation(known_through_all, tmp_path, capsys):
    _, base = known_through_all
    with pytest.raises(ExportError, match="--known-through all") as error:
        evaluate_saved_model(base / "7", {}, "test", cache_dir=tmp_path, with_baselines=False)
    assert "re-export with --known-through validation" in str(error.value)

    assert main(["evaluate", "--saved-model", str(base / "7"), "--no-baselines"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("twotower evaluate: error:")
    assert "--known-through all" in stderr


def test_existing_version_is_refused_without_force(known_through_all, run_dir, capsys):
    _, base = known_through_all
    before = (base / "7" / "saved_model.pb").read_bytes()
    capsys.readouterr()
    assert export(run_dir, base, "--index", "brute-force", "--version", "7") == 2
    stderr = capsys.readouterr().err
    assert "already exists; pass --force to replace it or omit --version" in stderr
    assert (base / "7" / "saved_model.pb").read_bytes() == before
    assert [p.name for p in base.iterdir()] == ["7"]


def test_cli_numbers_versions_and_replaces_with_force(run_dir, tmp_path, stub_export, capsys):
    assert export(run_dir, tmp_path, "--index", "brute-force") == 0
    assert export(run_dir, tmp_path, "--index", "brute-force") == 0
    assert export(run_dir, tmp_path, "--index", "brute-force", "--version", "1", "--force") == 0
    lines = capsys.readouterr().out.splitlines()
    # The plain command exports the production model, knowing every interaction.
    what = "(production weights, trained on train + validation + test; history known through all)"
    assert lines == [
        f"exported version 1 to {tmp_path / '1'} {what}",
        f"exported version 2 to {tmp_path / '2'} {what}",
        f"exported version 1 to {tmp_path / '1'} {what}",
    ]
    assert [version for version, _, _ in stub_export.written] == [1, 2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_cli_flags_become_the_export_config(run_dir, tmp_path, stub_export):
    flags = ["--index", "scann", "--k", "7", "--num-leaves", "4", "--num-leaves-to-search", "2"]
    flags += ["--num-reordering-candidates", "50", "--dimensions-per-block", "1"]
    flags += ["--training-iterations", "3", "--no-verify"]
    assert export(run_dir, tmp_path, *flags) == 0
    [config] = stub_export.configs
    assert config.index == IndexConfig(
        kind=SCANN,
        k=7,
        num_leaves=4,
        num_leaves_to_search=2,
        num_reordering_candidates=50,
        dimensions_per_block=1,
        training_iterations=3,
    )
    assert (config.weights, config.known_through, config.force, config.verify) == (
        "production",
        None,
        False,
        False,
    )
    assert config.resolved_known_through == "all"  # production weights know every interaction
    assert stub_export.verified == []  # --no-verify skips the fresh-process check


def test_cli_reports_a_failed_verification_and_publishes_nothing(
    run_dir, tmp_path, stub_export, capsys
):
    stub_export.fail_verification = True
    assert export(run_dir, tmp_path, "--index", "brute-force") == 2
    assert "verification of" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--version", "0"), "--version must be a positive integer"),
        (("--num-leaves", "2", "--num-leaves-to-search", "3"), "must not exceed num_leaves"),
    ],
)
def test_cli_rejects_bad_flags_with_one_line(
    run_dir, tmp_path, stub_export, capsys, flags, fragment
):
    assert export(run_dir, tmp_path / "models", *flags) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("twotower export: error:") and fragment in stderr
    assert stub_export.written == []


def test_cli_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert export(tmp_path / "nothing", tmp_path / "models") == 2
    assert "is not a training run" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
