"""Fixtures of the core tests: synthetic data, a tiny model configuration, and one trained run
shared by every test that needs a model (training is the expensive part, so it happens once)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tfrs_model.data.schema import InteractionData, build_dataset
from tfrs_model.data.splits import SplitData
from tfrs_model.data.synthetic import make_synthetic

# Small enough to train in seconds on two cores, large enough that the planted clusters are
# learnable: 200 users x 20 interactions, 4 clusters of 25 items.
SYNTHETIC_SHAPE = {"num_users": 200, "num_items": 100, "interactions_per_user": 20, "seed": 0}


def _tiny_config(**train: object) -> RunConfig:
    """A RunConfig for tests: small embeddings, no MLP, a few epochs of large batches."""
    return RunConfig(
        data=DataConfig(history_length=10),
        model=ModelConfig(
            embedding_dim=32, id_embedding_dim=32, feature_embedding_dim=8, hidden_layers=()
        ),
        train=TrainConfig(
            **{
                "epochs": 5,
                "batch_size": 256,
                "learning_rate": 0.01,
                "early_stopping_patience": 2,
                **train,
            }
        ),
    )


def _split_data(rows: list[tuple], items: list[str] | None = None) -> SplitData:
    """A hand-labelled `SplitData` from (user, item, timestamp, split, positive) rows.

    `items` is the catalog (default: the items the rows use, sorted); ratings are absent.
    """
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split", "positive"])
    catalog = sorted(set(frame["item_id"])) if items is None else items
    data = build_dataset(
        "hand",
        frame[["user_id", "item_id", "timestamp"]],
        None,
        pd.DataFrame({"item_id": catalog}),
    )
    labelled = data.interactions.merge(
        frame[["user_id", "item_id", "timestamp", "split", "positive"]].astype(
            {"user_id": str, "item_id": str}
        ),
        on=["user_id", "item_id", "timestamp"],
    )
    return SplitData(interactions=labelled, data=data, reports=())


@pytest.fixture(scope="session")
def split_data():
    """`split_data(rows, items=None)`: a hand-labelled `SplitData` from
    (user, item, timestamp, split, positive) rows; `items` is the catalog (default: the items the
    rows use); there are no ratings."""
    return _split_data


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(**train_overrides)`: a fast RunConfig (see `_tiny_config`)."""
    return _tiny_config


def _tiny_retrieval_model(users, items, seed: int, **model: object):
    """A built id-only `TwoTowerModel` with 4-d embeddings over the given vocabularies."""
    import tensorflow as tf

    from tfrs_model.features.spec import CANDIDATE, ITEM_ID, QUERY, USER_ID, FeatureSet, FeatureSpec
    from tfrs_model.model import TwoTowerModel
    from tfrs_model.run import build_towers

    features = FeatureSet(
        (
            FeatureSpec(USER_ID, QUERY, tuple(users), 0, 4),
            FeatureSpec(ITEM_ID, CANDIDATE, tuple(items), 0, 4),
        )
    )
    config = ModelConfig(
        **{
            "embedding_dim": 4,
            "id_embedding_dim": 4,
            "hidden_layers": (),
            "use_user_features": False,
            "use_item_features": False,
            "use_history": False,
            "id_dropout": 0.0,
            **model,
        }
    )
    tf.keras.utils.set_random_seed(seed)
    built = TwoTowerModel(features, config)
    build_towers(built)
    return built


@pytest.fixture(scope="session")
def tiny_retrieval_model():
    """`tiny_retrieval_model(users, items, seed, **model_config)`: a small built id-only model."""
    return _tiny_retrieval_model


@pytest.fixture(scope="session")
def synthetic() -> InteractionData:
    return make_synthetic(**SYNTHETIC_SHAPE)


@dataclass(frozen=True)
class TrainedRun:
    """One `train()` call on the synthetic data, with the in-memory model it produced."""

    directory: Path
    config: RunConfig
    result: object
    model: object
    split: SplitData
    features: object


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic: InteractionData) -> TrainedRun:
    from tfrs_model import training

    captured = {}
    original_fit = training.fit

    def fit_and_keep(*args, **kwargs):
        fitted = original_fit(*args, **kwargs)
        captured["model"], captured["features"] = fitted.model, fitted.features
        return fitted

    config = _tiny_config()
    directory = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "fit", fit_and_keep)
        result = training.train(synthetic, config, directory)
    split, _ = training.prepare(synthetic, config)
    return TrainedRun(directory, config, result, captured["model"], split, captured["features"])
