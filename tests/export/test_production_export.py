"""The production export is the default: weights fit on every interaction, history known through
all of it, and every evaluation path refuses to score it.

The run is the export fixtures' synthetic run (tests/fixtures/exports.py), trained with the
default `production_fit`: early stopping on validation, the refit on train + validation (the
evaluation weights, scored on test), then the production fit on all three splits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from export import contract
from export.evaluation import evaluate_saved_model
from export.index import BRUTE_FORCE, IndexConfig
from export.loading import load_saved_model
from export.savedmodel import ExportConfig, export_run
from tfrs_model.data.splits import SPLITS, TEST, TRAIN, VALIDATION
from tfrs_model.errors import ExportError, RunDirError
from tfrs_model.features.spec import ITEM_ID
from tfrs_model.run import EVALUATION, PRODUCTION, Run
from twotower.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def production_version(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plain export of the run (no weights or known-through chosen), brute force, k 10."""
    base = tmp_path_factory.mktemp("production-models")
    config = ExportConfig(
        run_dir=str(run_dir),
        model_base_path=str(base),
        index=IndexConfig(kind=BRUTE_FORCE, k=10),
        verify=False,
    )
    return export_run(config).path


def test_the_run_keeps_evaluation_and_production_weights(run: Run):
    metrics = run.metrics
    assert run.has_production
    assert run.trained_on(PRODUCTION) == SPLITS
    assert run.trained_on(EVALUATION) == (TRAIN, VALIDATION)  # the refit on train + validation
    assert metrics["production"]["trained_on"] == list(SPLITS)
    assert metrics["production"]["epochs"] == metrics["best_epoch"] == 3  # early stopping off
    # The test metrics are the evaluation weights', measured before the production fit.
    assert 0 < metrics["test"]["recall@10"] <= 1


def test_production_vocabularies_and_weights_cover_every_split(run: Run):
    interactions = run.split.interactions
    every_item = set(interactions["item_id"])
    before_test = set(interactions.loc[interactions["split"] != TEST, "item_id"])
    production = run.features_of(PRODUCTION).get(ITEM_ID).vocabulary
    evaluation = run.features_of(EVALUATION).get(ITEM_ID).vocabulary
    assert set(production) == every_item
    assert set(evaluation) == before_test

    tables = {
        weights: run.load_model(weights).candidate_model.embeddings[ITEM_ID].embedding.embeddings
        for weights in (EVALUATION, PRODUCTION)
    }
    assert not np.allclose(tables[EVALUATION].numpy()[:5], tables[PRODUCTION].numpy()[:5])


def test_the_plain_export_is_the_production_model_knowing_everything(production_version, run):
    card = json.loads(
        (production_version / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE).read_text()
    )
    assert card["weights"] == PRODUCTION
    assert card["trained_on"] == [TRAIN, VALIDATION, TEST]
    assert card["known_through"] == "all"

    # serving_default excludes what each user did in test too.
    seen = run.split.interactions.groupby("user_id")["item_id"].agg(set)
    users = sorted(seen.index)[:20]
    serve = load_saved_model(production_version).signatures[contract.SERVING_DEFAULT]
    ids = serve(user_id=tf.constant(users))[contract.ITEM_IDS].numpy().astype(str)
    for user, row in zip(users, ids, strict=True):
        assert not set(row) & seen[user]


def test_evaluation_refuses_the_production_export_naming_the_fix(
    production_version, tmp_path, capsys
):
    with pytest.raises(ExportError, match="production weights trained on") as error:
        evaluate_saved_model(production_version, {}, TEST, cache_dir=tmp_path, with_baselines=False)
    assert "--weights evaluation --known-through validation" in str(error.value)

    assert main(["evaluate", "--saved-model", str(production_version), "--no-baselines"]) == 2
    assert "would leak" in capsys.readouterr().err


def test_a_run_without_production_weights_says_how_to_export(run_dir: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "production")  # as `twotower train --no-production-fit` leaves it
    with pytest.raises(RunDirError, match="no production weights") as error:
        export_run(ExportConfig(run_dir=str(copy), model_base_path=str(tmp_path / "models")))
    assert "--weights evaluation" in str(error.value)
    assert not (tmp_path / "models").exists()  # refused before any work
