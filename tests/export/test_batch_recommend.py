"""`recommend_to_file`: batch results equal `serving_default`, in Parquet and CSV, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from export import contract
from export.batch import read_user_ids, recommend_to_file, result_rows
from tfrs_model.errors import DataError

K = 5


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory) -> Path:
    """A tiny brute-force export of a one-epoch model on synthetic data."""
    from export.index import IndexConfig
    from export.savedmodel import ExportConfig, export_run
    from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tfrs_model.data.synthetic import make_synthetic
    from tfrs_model.training import train

    root = tmp_path_factory.mktemp("batch")
    data = make_synthetic(num_users=40, num_items=30, interactions_per_user=10, seed=1)
    config = RunConfig(
        data=DataConfig(history_length=4, min_positive_rating=None, validation_fraction=0.2),
        model=ModelConfig(
            embedding_dim=8, id_embedding_dim=8, feature_embedding_dim=4, hidden_layers=()
        ),
        train=TrainConfig(epochs=1, batch_size=128, early_stopping_patience=0, tensorboard=False),
    )
    train(data, config, root / "run")
    result = export_run(
        ExportConfig(
            run_dir=str(root / "run"),
            model_base_path=str(root / "models"),
            index=IndexConfig(kind="brute-force", k=K),
            verify=False,
        )
    )
    return result.path


def _serving_default(version_dir: Path, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    from export.loading import load_saved_model

    function = load_saved_model(version_dir).signatures[contract.SERVING_DEFAULT]
    answer = function(user_id=tf.constant(users))
    return answer[contract.ITEM_IDS].numpy().astype(str), answer[contract.SCORES].numpy()


def test_result_rows_by_hand():
    rows = result_rows(
        np.array(["a", "b"], dtype=object),
        np.array([[b"i1", b"i2"], [b"i3", b""]]),  # b has one result: "" is padding
        np.array([[0.9, 0.5], [0.7, -1.0]], dtype=np.float32),
    )
    assert rows.to_dict("list") == {
        "user_id": ["a", "a", "b"],
        "item_id": ["i1", "i2", "i3"],
        "score": pytest.approx([0.9, 0.5, 0.7]),
        "rank": [1, 2, 1],
    }


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_users_from_file_match_serving_default(version_dir, tmp_path, suffix):
    users = ["3", "1", "__never_seen__"]
    user_file = tmp_path / "users.txt"
    user_file.write_text("# one id per line\n3\n1\n\n__never_seen__\n3\n")
    assert read_user_ids(user_file).tolist() == users  # repeated ids once, in file order

    out = tmp_path / f"recs{suffix}"
    result = recommend_to_file(
        version_dir, out, read_user_ids(user_file), k=3, batch_size=2, progress=False
    )

    frame = (
        pd.read_parquet(out)
        if suffix == ".parquet"
        else pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    )
    expected_ids, expected_scores = _serving_default(version_dir, users)
    assert result.users == 3 and result.rows == 9 and result.k == 3
    assert result.unknown_users == 1  # __never_seen__ is not baked: cold start
    assert frame["user_id"].tolist() == [u for u in users for _ in range(3)]
    assert frame["rank"].tolist() == [1, 2, 3] * 3
    assert frame["item_id"].tolist() == expected_ids[:, :3].reshape(-1).tolist()
    np.testing.assert_allclose(
        frame["score"], expected_scores[:, :3].reshape(-1), rtol=1e-5, atol=1e-6
    )
    assert not list(tmp_path.glob(".recs*"))  # the temporary file was renamed away


def test_all_users_are_the_baked_users(version_dir, tmp_path):
    out = tmp_path / "all.parquet"
    result = recommend_to_file(version_dir, out, None, batch_size=16, progress=False)
    frame = pd.read_parquet(out)
    run_users = pd.read_parquet(version_dir.parent.parent / "run" / "data" / "users.parquet")
    assert sorted(frame["user_id"].unique()) == sorted(run_users["user_id"].astype(str))
    assert result.unknown_users == 0 and result.k == K
    assert (frame.groupby("user_id")["rank"].max() == K).all()
    # Scores never increase with rank.
    assert (frame.groupby("user_id")["score"].diff().dropna() <= 1e-6).all()


def test_failure_leaves_no_partial_file(version_dir, tmp_path):
    out = tmp_path / "recs.parquet"
    out.write_text("previous results")
    with pytest.raises(DataError, match=f"--k 50 exceeds the {K} results"):
        recommend_to_file(version_dir, out, ["1", "2"], k=50, batch_size=1, progress=False)
    assert out.read_text() == "previous results"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["recs.parquet"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [("", "empty.txt", "lists no user ids"), ("id\n1\n", "users.csv", "no user_id column")],
)
def test_bad_user_files(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_user_ids(path)


def test_output_must_be_parquet_or_csv(version_dir, tmp_path):
    with pytest.raises(DataError, match=r"\.parquet or \.csv"):
        recommend_to_file(version_dir, tmp_path / "recs.json", ["1"], progress=False)


def test_cli(version_dir, tmp_path, capsys):
    from twotower.cli import main

    out = tmp_path / "cli.csv"
    code = main(
        [
            "recommend",
            "--saved-model",
            str(version_dir),
            "--out",
            str(out),
            "--k",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "users/s" in capsys.readouterr().out
    assert pd.read_csv(out)["rank"].max() == 2
