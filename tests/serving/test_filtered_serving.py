"""Filtered recommendations of a real export served by the embedded server, over gRPC and REST on
loopback: the answers equal the SavedModel's in this process, and unknown features, malformed
pairs and k out of range are INVALID_ARGUMENT (400 on REST) with a message naming the mistake.

The export is the brute-force one `tests/fixtures/exports.py` builds (items with the synthetic
catalog's `genres`, `title_tokens` and `year_bucket`; the exported maximum k is 100).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from fixtures.exports import exported_version

from export import contract
from export.index import BRUTE_FORCE
from export.loading import load_saved_model
from serving.client import ClientConfig, ServingError, TwoTowerClient
from serving.server.config import ServingConfig
from serving.server.server import EmbeddedServer
from twotower.cli import main

pytestmark = pytest.mark.integration

USERS = ["1", "17", "__nobody__"]
KNOWN = "known features: genres, title_tokens, year_bucket"


@pytest.fixture(scope="module")
def version_dir(export_root: Path) -> Path:
    return exported_version(export_root, BRUTE_FORCE)


@pytest.fixture(scope="module")
def server(version_dir: Path) -> Iterator[EmbeddedServer]:
    config = ServingConfig(model_base_path=version_dir.parent, grpc_port=0, rest_port=0)
    running = EmbeddedServer(config)
    running.start()
    yield running
    running.stop(1.0)


@pytest.fixture(scope="module")
def client(server: EmbeddedServer) -> Iterator[TwoTowerClient]:
    with TwoTowerClient(ClientConfig(target=f"127.0.0.1:{server.ports.grpc}")) as running:
        yield running


@pytest.fixture(scope="module")
def genre_items(run) -> dict[str, set[str]]:
    """Genre -> the ids of the items that have it."""
    items = run.split.data.items
    out: dict[str, set[str]] = {}
    for item_id, genres in zip(items["item_id"].astype(str), items["genres"], strict=True):
        for genre in genres:
            out.setdefault(genre, set()).add(item_id)
    return out


def test_client_filters_equal_the_in_process_saved_model(client, version_dir, genre_items):
    first, second = sorted(genre_items)[:2]
    lists = client.recommend(USERS, k=7, filters={"genres": [first, second]})

    model = load_saved_model(version_dir)
    outputs = model.signatures[contract.RECOMMEND_FILTERED](
        user_id=tf.constant(USERS),
        k=tf.constant([7] * len(USERS), tf.int32),
        allow=tf.constant([[""]] * len(USERS)),
        filters=tf.constant([[f"genres={first}", f"genres={second}"]] * len(USERS)),
    )
    expected = outputs[contract.ITEM_IDS].numpy().astype(str)
    for ranked, row in zip(lists, expected, strict=True):
        assert [r.item_id for r in ranked] == [item for item in row if item]
        assert len(ranked) == 7
        assert {r.item_id for r in ranked} <= genre_items[first] | genre_items[second]


def test_client_allow_list_and_context_signature(client, genre_items):
    genre = sorted(genre_items)[0]
    allowed = [*sorted(genre_items[genre])[:5], "__not_in_the_catalog__"]
    lists = client.recommend_with_context(["__nobody__"], k=3, allow=allowed, exclude=[allowed[:1]])

    assert len(lists[0]) == 3
    assert {r.item_id for r in lists[0]} <= set(allowed[1:5])


@pytest.mark.parametrize(
    ("filters", "k", "message"),
    [
        (["colour=red"], 5, f"unknown feature in pair colour=red ({KNOWN})"),
        (["genres"], 5, "malformed pair genres (write feature=value"),
        (["=Action"], 5, "malformed pair =Action"),
        ([""], 101, "k must be between 1 and the exported maximum of 100 in every row; got 101"),
    ],
)
def test_grpc_answers_invalid_argument_naming_the_mistake(client, filters, k, message):
    inputs = {
        contract.USER_ID: np.array([b"1"], dtype=object),
        contract.K: np.array([k], dtype=np.int32),
        contract.ALLOW: np.array([[b""]], dtype=object),
        contract.FILTERS: np.array([[f.encode() for f in filters]], dtype=object),
    }
    with pytest.raises(ServingError) as error:
        client.predict(inputs, contract.RECOMMEND_FILTERED)

    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details


def _rest(server: EmbeddedServer, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.ports.rest}/v1/models/{contract.DEFAULT_MODEL_NAME}:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _rest_row(filters: list[str], k: int = 3) -> dict:
    return {
        "signature_name": contract.RECOMMEND_FILTERED,
        "instances": [{"user_id": "1", "k": k, "allow": [""], "filters": filters}],
    }


def test_rest_answers_k_items_per_row_padded_to_the_maximum(server, genre_items):
    genre = sorted(genre_items)[0]
    status, body = _rest(server, _rest_row([f"genres={genre}"], k=4))

    assert status == 200
    prediction = body["predictions"][0]
    ids = prediction[contract.ITEM_IDS]
    assert len(ids) == 100 and ids[4:] == [""] * 96
    assert set(ids[:4]) <= genre_items[genre]
    assert prediction[contract.SCORES][4:] == [float("-inf")] * 96


@pytest.mark.parametrize(
    ("filters", "k", "message"),
    [
        (["colour=red"], 3, f"unknown feature in pair colour=red ({KNOWN})"),
        (["genres:Action"], 3, "malformed pair genres:Action"),
        ([""], 0, "got 0"),
        ([""], 2**40, "expects int32 values in [-2147483648, 2147483647], got 1099511627776"),
    ],
)
def test_rest_answers_400_naming_the_mistake(server, filters, k, message):
    status, body = _rest(server, _rest_row(filters, k))

    assert status == 400
    assert message in body["error"]


def test_query_cli_filters_and_allows(server, genre_items, capsys):
    genre = sorted(genre_items)[0]
    allowed = sorted(genre_items[genre])[:3]
    target = ["--target", f"127.0.0.1:{server.ports.grpc}"]
    allow = [f"--allow={item}" for item in allowed]
    filters = ["--filter", f"genres={genre},Nothing"]
    code = main(["query", *target, "--user-id", "1", "--k", "2", *filters, *allow, "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["signature"] == contract.RECOMMEND_FILTERED
    recommended = [r["item_id"] for r in result["results"][0]["recommendations"]]
    assert len(recommended) == 2 and set(recommended) <= set(allowed)
