"""The embedded server on a real brute-force export: gRPC Predict through `TwoTowerClient` equals
the SavedModel called in this process, and `twotower query` prints the catalog's titles.

The export is the one `tests/fixtures/exports.py` builds (a tiny model trained on synthetic
data, under the session's `export_root`); its on-disk idempotent builder is reused, so a session
that runs the export tests too trains and exports once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from fixtures.exports import exported_version

from export import contract
from export.index import BRUTE_FORCE
from export.loading import load_saved_model
from serving.client import ClientConfig, TwoTowerClient
from serving.server.config import ServingConfig
from serving.server.server import EmbeddedServer
from twotower.cli import main

pytestmark = pytest.mark.integration

USERS = ["1", "17", "200", "__nobody__"]  # known users and a cold-start one
ITEMS = ["1", "42", "100", "__no_such_item__"]


@pytest.fixture(scope="module")
def version_dir(export_root: Path) -> Path:
    return exported_version(export_root, BRUTE_FORCE)


@pytest.fixture(scope="module")
def in_process(version_dir: Path):
    return load_saved_model(version_dir)


@pytest.fixture(scope="module")
def server(version_dir: Path) -> Iterator[EmbeddedServer]:
    config = ServingConfig(model_base_path=version_dir.parent, grpc_port=0, rest_port=0)
    running = EmbeddedServer(config)
    running.start()  # loads version 1 and replays its warm-up requests first
    yield running
    running.stop(1.0)


@pytest.fixture
def target(server: EmbeddedServer) -> str:
    return f"127.0.0.1:{server.ports.grpc}"


def _call(model, signature: str, **inputs: list[str]) -> dict[str, np.ndarray]:
    outputs = model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {key: value.numpy() for key, value in outputs.items()}


@pytest.mark.parametrize(
    ("signature", "key", "ids"),
    [
        (contract.SERVING_DEFAULT, contract.USER_ID, USERS),
        (contract.SIMILAR_ITEMS, contract.ITEM_ID, ITEMS),
    ],
)
def test_grpc_predict_equals_the_in_process_saved_model(in_process, target, signature, key, ids):
    expected = _call(in_process, signature, **{key: ids})
    with TwoTowerClient(ClientConfig(target=target, timeout_s=30.0)) as client:
        served = client.predict({key: ids}, signature)
    assert served.keys() == {contract.ITEM_IDS, contract.SCORES}
    np.testing.assert_array_equal(served[contract.ITEM_IDS], expected[contract.ITEM_IDS])
    np.testing.assert_array_equal(served[contract.SCORES], expected[contract.SCORES])
    assert served[contract.ITEM_IDS].shape == (len(ids), 100)


def test_client_similar_items_with_titles(in_process, target, version_dir):
    titles = _catalog_titles(version_dir)
    expected = _call(in_process, contract.SIMILAR_ITEMS, item_id=["42"])
    top = expected[contract.ITEM_IDS][0, :3].astype(str)
    with TwoTowerClient(ClientConfig(target=target, timeout_s=30.0)) as client:
        [ranked] = client.similar_items(["42"], k=3, with_titles=True)
    assert [r.item_id for r in ranked] == top.tolist()
    assert [r.title for r in ranked] == [titles[item] for item in top]
    assert "42" not in [r.item_id for r in ranked]


def test_query_cli_prints_titles(in_process, target, version_dir, capsys):
    titles = _catalog_titles(version_dir)
    expected = _call(in_process, contract.SERVING_DEFAULT, user_id=["17"])
    top = expected[contract.ITEM_IDS][0, :3].astype(str)
    scores = expected[contract.SCORES][0, :3]

    assert main(["query", "--target", target, "--user-id", "17", "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0] == "model twotower, version 1, signature serving_default"
    assert lines[2] == "user 17"
    assert lines[3].split() == ["rank", "item_id", "score", "title"]
    for rank, (line, item, score) in enumerate(zip(lines[4:], top, scores, strict=True), 1):
        assert line.split(maxsplit=3) == [str(rank), item, f"{score:.4f}", titles[item]]
    assert len(lines) == 7


def _catalog_titles(version_dir: Path) -> dict[str, str]:
    rows = json.loads((version_dir / contract.ASSETS_EXTRA / contract.CATALOG_FILE).read_text())
    return {row["item_id"]: row["title"] for row in rows}
