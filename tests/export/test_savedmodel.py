"""Exporting a run: the round trip through a real SavedModel, what travels beside it (warm-up,
model card), publishing (version numbers, --force, atomicity, failures), the fresh-process
checks, and evaluating the export against the run.

The real exports are built once per session (conftest.py). Publishing tests replace the writer
and the verifier with `StubExport` (conftest.py), which leaves `export_run`'s own logic intact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from export import contract
from export.evaluation import evaluate_saved_model
from export.index import BRUTE_FORCE, SCANN, IndexConfig
from export.savedmodel import ExportConfig, existing_versions, export_run, next_version
from export.verify import VerificationError, check_ops, graph_ops
from tfrs_model.config import RunConfig
from tfrs_model.data.splits import TEST
from tfrs_model.errors import ExportError
from tfrs_model.evaluation.protocol import build_eval_set, top_k_excluding
from tfrs_model.evaluation.service import evaluate_run_dir
from tfrs_model.evaluation.two_tower import TwoTowerRanker

KINDS = (BRUTE_FORCE, SCANN)
K = 100  # the exports' k: the whole synthetic catalog (conftest.py)


def serve(model, user_ids) -> tuple[np.ndarray, np.ndarray]:
    """serving_default: `[B, K]` item ids (str) and scores."""
    out = model.signatures[contract.SERVING_DEFAULT](user_id=tf.constant(np.asarray(user_ids, str)))
    return out[contract.ITEM_IDS].numpy().astype(str), out[contract.SCORES].numpy()


def known_items(run) -> dict[str, set[str]]:
    """user -> items of their interactions before the test split (any rating)."""
    known = run.split.known_before(TEST)
    return {user: set(items) for user, items in known.groupby("user_id")["item_id"]}


# --- Round trip --------------------------------------------------------------------------------


@pytest.mark.integration
def test_brute_force_serving_default_equals_in_memory_towers_and_exact_search(
    loaded, run, towers, catalog
):
    eval_set = build_eval_set(run.split, TEST)
    queries, candidates = TwoTowerRanker(towers, run.features, run.split).embeddings(eval_set)
    scores = tf.linalg.matmul(queries, candidates, transpose_b=True).numpy()
    # Exact search with each user's items known before test excluded; -1 marks empty slots.
    rows = top_k_excluding(scores, eval_set.excluded, K)
    filled = rows >= 0
    expected_ids = np.where(filled, catalog[np.maximum(rows, 0)], "")

    ids, served_scores = serve(loaded[BRUTE_FORCE], eval_set.user_ids)

    assert len(eval_set.user_ids) > 150  # most of the 200 users have test positives
    np.testing.assert_array_equal(ids, expected_ids)
    expected_scores = np.take_along_axis(scores, np.maximum(rows, 0), axis=1)
    np.testing.assert_allclose(served_scores[filled], expected_scores[filled], rtol=1e-5, atol=1e-6)
    assert np.isneginf(served_scores[~filled]).all()


@pytest.mark.integration
def test_scann_serving_default_agrees_with_brute_force(loaded, run):
    users = run.split.data.users["user_id"].astype(str).to_numpy()
    exact_ids, exact_scores = serve(loaded[BRUTE_FORCE], users)
    ids, scores = serve(loaded[SCANN], users)
    assert ids.shape == exact_ids.shape == (len(users), K)
    overlap = [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ids, exact_ids, strict=True)]
    assert np.mean(overlap) >= 0.95
    # Reordering re-scores candidates exactly, so the best score of each user agrees.
    np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_serving_default_never_returns_items_seen_before_the_test_split(loaded, run, catalog, kind):
    known = known_items(run)
    users = sorted(known)
    ids, _ = serve(loaded[kind], users)
    for user, row in zip(users, ids, strict=True):
        returned = set(row) - {""}
        assert not returned & known[user], user
        # k = N: every other item comes back, test items included.
        assert returned == set(catalog) - known[user], user


# --- Files beside the SavedModel ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_warmup_file_parses_as_prediction_logs_covering_every_signature(version_dirs, loaded, kind):
    path = version_dirs[kind] / contract.ASSETS_EXTRA / contract.WARMUP_FILE
    model = loaded[kind]
    seen = set()
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == contract.DEFAULT_MODEL_NAME
        signature = model.signatures[request.model_spec.signature_name]
        assert set(request.inputs) == set(signature.structured_input_signature[1])
        outputs = signature(**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        batch = next(iter(request.inputs.values())).tensor_shape.dim[0].size
        assert all(value.shape[0] == batch for value in outputs.values())
        seen.add(request.model_spec.signature_name)
    assert seen == set(contract.ALL_SIGNATURES)


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_model_card_records_config_index_packages_and_signatures(version_dirs, loaded, run, kind):
    card = json.loads(
        (version_dirs[kind] / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE).read_text()
    )
    assert RunConfig.from_dict(card["config"]) == run.config
    assert (card["version"], card["k"], card["known_through"]) == (1, K, "validation")
    assert card["index"]["kind"] == kind
    assert card["index"]["num_candidates"] == 100
    if kind == SCANN:
        # 100 items: 2 leaves of 50, both searched, every candidate re-scored (the derived
        # defaults of export.index for a catalog this small).
        assert card["index"]["num_leaves"] == 2
        assert card["index"]["num_leaves_to_search"] == 2
        assert card["index"]["num_reordering_candidates"] == 100
    assert card["export"]["index"]["kind"] == kind
    assert card["packages"]["tensorflow"] == tf.__version__
    assert {"tf-keras", "tensorflow-recommenders", "scann", "numpy"} <= card["packages"].keys()
    assert set(card["signatures"]) == set(contract.ALL_SIGNATURES)
    for name, description in card["signatures"].items():
        signature = loaded[kind].signatures[name]
        assert set(description["inputs"]) == set(signature.structured_input_signature[1])
        assert set(description["outputs"]) == set(signature.structured_outputs)
    assert card["signatures"][contract.SERVING_DEFAULT]["outputs"][contract.ITEM_IDS] == {
        "dtype": "DT_STRING",  # the DataType name, as SignatureDefs print it
        "shape": [-1, K],
    }
    catalog = json.loads(
        (version_dirs[kind] / contract.ASSETS_EXTRA / contract.CATALOG_FILE).read_text()
    )
    assert len(catalog) == 100 and set(catalog[0]) == {"item_id", "title"}


# --- Fresh-process checks ----------------------------------------------------------------------


@pytest.mark.integration
def test_loading_a_scann_export_without_scann_names_the_fix(version_dirs):
    script = (
        "import sys\n"
        "sys.modules['scann'] = None  # as if scann were not installed\n"
        "from export.loading import ScannOpsMissingError, load_saved_model\n"
        "try:\n"
        f"    load_saved_model({str(version_dirs[SCANN])!r})\n"
        "except ScannOpsMissingError as error:\n"
        "    print('MISSING:', error)\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.split("MISSING:", 1)[1]
    assert "import scann" in message
    assert "brute-force" in message  # the alternative that needs no custom ops


def test_op_list_check_rejects_a_py_func(tmp_path):
    class CallsPython(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return tf.py_function(lambda v: v * 2, [x], tf.float32)

    module = CallsPython()
    tf.saved_model.save(module, str(tmp_path), signatures={"double": module.double})
    ops = graph_ops(tmp_path)
    assert "EagerPyFunc" in ops
    with pytest.raises(VerificationError, match="calls back into Python"):
        check_ops(ops)


@pytest.mark.integration
def test_op_list_check_accepts_both_exports(version_dirs):
    assert check_ops(graph_ops(version_dirs[BRUTE_FORCE]))["scann_ops"] == []
    scann_ops = check_ops(graph_ops(version_dirs[SCANN]))["scann_ops"]
    assert scann_ops and all(op.startswith("Scann>") for op in scann_ops)


# --- Evaluating the export ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_metrics(run_dir):
    return evaluate_run_dir(run_dir, TEST, with_baselines=False).results["two_tower"]


def _saved_model_metrics(version_dir: Path, cache: Path) -> dict[str, float]:
    report = evaluate_saved_model(version_dir, {}, TEST, cache_dir=cache, with_baselines=False)
    return report.results["two_tower"]


@pytest.mark.integration
def test_brute_force_export_metrics_equal_the_run_metrics_exactly(
    run_metrics, version_dirs, tmp_path
):
    metrics = _saved_model_metrics(version_dirs[BRUTE_FORCE], tmp_path)
    assert metrics == run_metrics
    assert run_metrics["recall@100"] == 1.0  # k = N: every test positive is ranked


@pytest.mark.integration
def test_scann_export_metrics_are_within_one_percent_of_the_run_metrics(
    run_metrics, version_dirs, tmp_path
):
    metrics = _saved_model_metrics(version_dirs[SCANN], tmp_path)
    assert metrics.keys() == run_metrics.keys()
    for name, value in run_metrics.items():
        assert metrics[name] == pytest.approx(value, rel=0.01, abs=1e-9), name


# --- Publishing: version numbers, --force, atomicity, failures ---------------------------------


def _config(run_dir: Path, base: Path, **overrides) -> ExportConfig:
    return ExportConfig(run_dir=str(run_dir), model_base_path=str(base), **overrides)


def test_versions_are_the_integer_named_directories(tmp_path):
    for name in ("1", "3", "notes", ".7.tmp-abc", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert existing_versions(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4
    assert next_version(tmp_path / "missing") == 1


@pytest.mark.integration
def test_export_picks_the_next_integer_version(run_dir, tmp_path, stub_export):
    base = tmp_path / "models"
    first = export_run(_config(run_dir, base))
    (base / "5").mkdir()
    after_gap = export_run(_config(run_dir, base))
    assert (first.version, after_gap.version) == (1, 6)
    assert after_gap.path == base / "6"
    assert (base / "6" / "saved_model.pb").read_text() == "stub v6\n"
    assert sorted(p.name for p in base.iterdir()) == ["1", "5", "6"]  # no temporary left


@pytest.mark.integration
def test_export_takes_an_explicit_version(run_dir, tmp_path, stub_export):
    result = export_run(_config(run_dir, tmp_path, version=42))
    assert result.version == 42
    assert existing_versions(tmp_path) == [42]


@pytest.mark.integration
@pytest.mark.parametrize("version", [0, -3])
def test_export_refuses_a_version_below_one(run_dir, tmp_path, stub_export, version):
    with pytest.raises(ExportError, match="positive integer"):
        export_run(_config(run_dir, tmp_path / "models", version=version))
    assert not (tmp_path / "models").exists()
    assert stub_export.written == []


@pytest.mark.integration
def test_existing_version_is_refused_without_force_and_replaced_with_it(
    run_dir, tmp_path, stub_export
):
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_text("the served version\n")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_run(_config(run_dir, tmp_path, version=2))
    assert (tmp_path / "2" / "saved_model.pb").read_text() == "the served version\n"
    assert stub_export.written == []  # refused before any work

    export_run(_config(run_dir, tmp_path, version=2, force=True))
    assert (tmp_path / "2" / "saved_model.pb").read_text() == "stub v2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2"]


@pytest.mark.integration
def test_version_directory_appears_only_after_verification(run_dir, tmp_path, stub_export):
    (tmp_path / "1").mkdir()
    export_run(_config(run_dir, tmp_path))

    [(version, staging, visible_while_writing)] = stub_export.written
    [(verified, visible_while_verifying)] = stub_export.verified
    assert version == 2
    # Written and verified in a hidden sibling, which no server takes for a version.
    assert staging == verified
    assert staging.parent.parent == tmp_path
    assert staging.parent.name.startswith(".2.tmp-")
    assert visible_while_writing == visible_while_verifying == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


@pytest.mark.integration
def test_failed_verification_leaves_no_version_and_no_temporary(run_dir, tmp_path, stub_export):
    stub_export.fail_verification = True
    with pytest.raises(ExportError, match=r"verification of .* failed"):
        export_run(_config(run_dir, tmp_path / "models"))
    assert stub_export.written and stub_export.verified
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.integration
def test_failed_save_leaves_no_version_and_no_temporary(run_dir, tmp_path, monkeypatch):
    def disk_full(obj, export_dir, *args, **kwargs):
        Path(export_dir).mkdir(parents=True)
        (Path(export_dir) / "saved_model.pb").write_bytes(b"half written")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", disk_full)
    base = tmp_path / "models"
    with pytest.raises(ExportError, match="No space left on device"):
        export_run(_config(run_dir, base, index=IndexConfig(kind=BRUTE_FORCE, k=10)))
    assert list(base.iterdir()) == []
