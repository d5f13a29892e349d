"""Session fixtures of the export tests: one tiny model trained on synthetic data, exported once
with brute force and once with ScaNN.

The synthetic log (200 users x 20 interactions, 100 items in 4 planted clusters) is written as a
MovieLens-100K directory and the run is trained from that directory (`DataConfig.data_dir`), so
`evaluate_saved_model` can reload exactly the run's data from the model card. Both exports use
k = 100 = the catalog size, so `serving_default` returns every item that is not excluded and the
metrics at K = 100 are comparable with the run's own evaluation.

The builders below are idempotent on disk (the training run and each export are published
atomically, so "the directory exists" means "it is complete"): `tests/serving/
test_real_export_grpc.py` loads this file by path and calls `exported_version` with the same
root (`EXPORT_ROOT` under the session's base temp dir), reusing what these fixtures built.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.index import BRUTE_FORCE, SCANN

EXPORT_ROOT = "twotower-export"  # under tmp_path_factory.getbasetemp()
SYNTHETIC_SHAPE = {"num_users": 200, "num_items": 100, "interactions_per_user": 20, "seed": 0}
K = 100  # results per query: the whole catalog (see the module docstring)
HISTORY_LENGTH = 10
EMBEDDING_DIM = 16


def _run_config(data_dir: Path):
    from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        data=DataConfig(
            dataset="movielens-100k", data_dir=str(data_dir), history_length=HISTORY_LENGTH
        ),
        model=ModelConfig(
            embedding_dim=EMBEDDING_DIM,
            id_embedding_dim=EMBEDDING_DIM,
            feature_embedding_dim=8,
            hidden_layers=(),
        ),
        # Early stopping off: exactly 3 epochs, enough for the planted clusters to show.
        train=TrainConfig(
            epochs=3,
            batch_size=256,
            learning_rate=0.01,
            early_stopping_patience=0,
            tensorboard=False,
        ),
    )


def synthetic_run(root: Path) -> Path:
    """The run directory `root/run`, trained from `root/movielens-100k` if not there yet."""
    from tfrs_model.data import load_data
    from tfrs_model.data.synthetic import make_synthetic, write_movielens
    from tfrs_model.training import train

    run_dir = root / "run"
    if not run_dir.exists():
        data_dir = write_movielens(make_synthetic(**SYNTHETIC_SHAPE), root / "movielens-100k")
        config = _run_config(data_dir)
        train(load_data(config.data, root / "cache"), config, run_dir)
    return run_dir


def exported_version(root: Path, kind: str) -> Path:
    """Version 1 of the run exported with index `kind` (verified), under `root/models/<kind>`."""
    from export.index import IndexConfig
    from export.savedmodel import ExportConfig, export_run

    version_dir = root / "models" / kind / "1"
    if not version_dir.exists():
        export_run(
            ExportConfig(
                run_dir=str(synthetic_run(root)),
                model_base_path=str(version_dir.parent),
                index=IndexConfig(kind=kind, k=K),
            )
        )
    return version_dir


@pytest.fixture(scope="session")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / EXPORT_ROOT
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def run_dir(export_root: Path) -> Path:
    return synthetic_run(export_root)


@pytest.fixture(scope="session")
def run(run_dir: Path):
    """The `Run` (config, features, split data) the exports were made from."""
    from tfrs_model.run import Run

    return Run.open(run_dir)


@pytest.fixture(scope="session")
def towers(run):
    """The trained `TwoTowerModel`, restored in memory from the run's checkpoint."""
    return run.load_model()


@pytest.fixture(scope="session")
def version_dirs(export_root: Path, run_dir: Path) -> dict[str, Path]:
    """Index kind -> exported version directory."""
    return {kind: exported_version(export_root, kind) for kind in (BRUTE_FORCE, SCANN)}


@pytest.fixture(scope="session")
def loaded(version_dirs: dict[str, Path]) -> dict[str, object]:
    """Index kind -> the SavedModel loaded in this process (ScaNN ops registered)."""
    from export.loading import load_saved_model

    return {kind: load_saved_model(path) for kind, path in version_dirs.items()}


@pytest.fixture(scope="session")
def catalog(run) -> np.ndarray:
    """`[100]` item ids in catalog order (the export's row order)."""
    return run.split.data.items["item_id"].astype(str).to_numpy(dtype=object)


@pytest.fixture(scope="session")
def candidate_embeddings(run, towers, catalog) -> np.ndarray:
    """`[100, 16]` candidate tower outputs of the catalog, computed in memory."""
    from tfrs_model.evaluation.two_tower import embed
    from tfrs_model.features.examples import candidate_inputs
    from tfrs_model.features.tables import FeatureTables

    inputs = candidate_inputs(run.features, FeatureTables(run.split.data), catalog)
    return embed(towers.candidate_model, inputs)


class StubExport:
    """Stands in for the SavedModel writer and the fresh-process verifier of `export_run`.

    The writer puts a one-line `saved_model.pb` ("stub v<N>") in the staging directory; both
    record what the base path looked like while they ran, so tests can check that nothing was
    visible as a version before publishing. `fail_verification` makes the verifier raise.

    Attributes:
      configs: the `ExportConfig` of each write.
      written: `(version, staging_dir, visible_versions)` per write.
      verified: `(staging_dir, visible_versions)` per verification.
    """

    def __init__(self) -> None:
        self.configs: list = []
        self.written: list[tuple[int, Path, list[int]]] = []
        self.verified: list[tuple[Path, list[int]]] = []
        self.fail_verification = False

    def write(self, run, config, staging: Path, version: int) -> None:
        from export.savedmodel import existing_versions

        staging.mkdir(parents=True)
        (staging / "saved_model.pb").write_text(f"stub v{version}\n")
        base = Path(config.model_base_path)
        self.configs.append(config)
        self.written.append((version, staging, existing_versions(base)))

    def verify(self, version_dir: Path, timeout: float = 600.0) -> dict:
        from export.savedmodel import existing_versions
        from tfrs_model.errors import ExportError

        base = version_dir.parent.parent  # <base>/.<N>.tmp-*/model
        self.verified.append((version_dir, existing_versions(base)))
        if self.fail_verification:
            raise ExportError(f"verification of {version_dir} failed: stub")
        return {"stub": True}


@pytest.fixture
def stub_export(monkeypatch: pytest.MonkeyPatch) -> StubExport:
    """`export_run` (and `twotower export`) with `StubExport` writing and verifying."""
    from export import savedmodel

    stub = StubExport()
    monkeypatch.setattr(savedmodel, "_write_version", stub.write)
    monkeypatch.setattr(savedmodel, "verify_in_subprocess", stub.verify)
    return stub
