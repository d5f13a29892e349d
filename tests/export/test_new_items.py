"""New items without retraining: `twotower export --new-items / --remove-items` round trips.

The run is the export fixtures' synthetic run (100 items, MovieLens layout: genres,
title_tokens, year_bucket). Version 1 is the plain export, version 2 adds three items (copies of
trained items' features under new ids) and removes three trained items, version 3 adds one more
on top of version 2's edits. Brute force with k = the catalog size, so `serving_default` ranks
every item a user may get.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from export import contract
from export.catalog_edits import EDITS_FILE
from export.index import BRUTE_FORCE, IndexConfig
from export.loading import load_saved_model
from export.model_card import read_model_card
from export.savedmodel import ExportConfig, export_run
from export.verify import verify
from tfrs_model.errors import ExportError
from tfrs_model.run import PRODUCTION, Run
from twotower.cli import main

pytestmark = pytest.mark.integration

NEW = ["new-a", "new-b", "new-c"]
LATER = "new-d"
K = 100


def _new_items(run: Run, ids: list[str], rows: list[int]) -> pd.DataFrame:
    """Items `ids` with the features (and titles) of trained catalog rows `rows`."""
    items = run.split.data.items.iloc[rows].copy()
    items["item_id"] = ids
    items["title"] = [f"Brand new {i}" for i in ids]
    return items.reset_index(drop=True)


@pytest.fixture(scope="module")
def versions(run_dir: Path, run: Run, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Versions 1 (plain), 2 (+NEW -REMOVED through the CLI) and 3 (+LATER) of one base path."""
    work = tmp_path_factory.mktemp("new-items")
    base = work / "models"
    trained = run.split.data.items["item_id"].astype(str).tolist()
    removed = trained[:3]
    _new_items(run, NEW, [10, 40, 70]).to_parquet(work / "new.parquet")
    (work / "remove.txt").write_text("# withdrawn titles\n" + "\n".join(removed) + "\n")
    common = ["--run", str(run_dir), "--model-base-path", str(base), "--index", "brute-force"]
    assert main(["export", *common, "--k", str(K), "--no-verify"]) == 0
    assert (
        main(
            [
                "export",
                *common,
                "--k",
                str(K),
                "--new-items",
                str(work / "new.parquet"),
                "--remove-items",
                str(work / "remove.txt"),
            ]
        )
        == 0
    )
    later = _new_items(run, [LATER], [20])
    later["genres"] = later["genres"].map("|".join)  # CSV: multi-valued cells '|'-separated
    later["title_tokens"] = later["title_tokens"].map("|".join)
    later.to_csv(work / "later.csv", index=False)
    third = export_run(
        ExportConfig(
            run_dir=str(run_dir),
            model_base_path=str(base),
            index=IndexConfig(kind=BRUTE_FORCE, k=K),
            new_items=str(work / "later.csv"),
            verify=False,
        )
    )
    return {"base": base, "work": work, "removed": removed, "third": third}


@pytest.fixture(scope="module")
def v2(versions: dict):
    return load_saved_model(versions["base"] / "2")


def _ids(model, signature: str, **inputs) -> np.ndarray:
    outputs = model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return outputs[contract.ITEM_IDS].numpy().astype(str)


def _top3(model, user: str, allow: list[str], pair: str = "") -> np.ndarray:
    """`recommend_filtered` for one user, k 3: `[max k]` ids, "" past the answer."""
    return _ids(
        model,
        contract.RECOMMEND_FILTERED,
        user_id=np.array([user]),
        k=np.array([3], np.int32),
        allow=np.array([allow]),
        filters=np.array([[pair]]),
    )[0]


def test_the_edited_version_is_the_next_one_and_lists_its_catalog(versions: dict, run: Run):
    assert sorted(p.name for p in versions["base"].iterdir()) == ["1", "2", "3"]
    catalog = [
        row["item_id"]
        for row in json.loads(
            (versions["base"] / "2" / contract.ASSETS_EXTRA / contract.CATALOG_FILE).read_text()
        )
    ]
    assert len(catalog) == len(run.split.data.items) - 3 + 3
    assert set(NEW) <= set(catalog) and not set(versions["removed"]) & set(catalog)


def test_the_model_card_records_the_edits(versions: dict, run: Run):
    card = read_model_card(versions["base"] / "2")["catalog"]
    assert card["trained_items"] == len(run.split.data.items)
    assert card["base_version"] == 1  # the same run and weights, with no edits of its own
    assert card["added_in_this_version"] == NEW == card["added_item_ids"]
    assert card["removed_in_this_version"] == versions["removed"] == card["removed_item_ids"]
    third = read_model_card(versions["base"] / "3")["catalog"]
    assert third["base_version"] == 2
    assert third["added_in_this_version"] == [LATER] and third["removed_in_this_version"] == []
    assert third["added_item_ids"] == [*NEW, LATER]
    assert third["removed_item_ids"] == versions["removed"]
    assert versions["third"].catalog == third


def test_a_new_item_embeds_from_its_features_with_the_candidate_tower(v2, run: Run):
    from tfrs_model.features.examples import candidate_inputs, to_tensor_dict
    from tfrs_model.features.tables import FeatureTables

    model = run.load_model(PRODUCTION)
    features = run.features_of(PRODUCTION)
    items = _new_items(run, NEW, [10, 40, 70])
    data = run.split.data.__class__(
        run.split.data.name,
        run.split.data.interactions,
        run.split.data.users,
        items,
        run.split.data.user_features,
        run.split.data.item_features,
    )
    inputs = candidate_inputs(features, FeatureTables(data), np.array(NEW, dtype=object))
    expected = model.candidate_model(to_tensor_dict(inputs)).numpy()
    served = v2.signatures[contract.CANDIDATE_EMBEDDING](item_id=tf.constant(NEW))
    np.testing.assert_allclose(served[contract.EMBEDDING].numpy(), expected, atol=1e-5)
    # Not the id-only answer of an unknown item: the features count.
    unknown = v2.signatures[contract.CANDIDATE_EMBEDDING](item_id=tf.constant(["never-seen"]))
    assert not np.allclose(expected[0], unknown[contract.EMBEDDING].numpy()[0], atol=1e-4)


def test_new_items_are_recommended_filtered_and_titled(v2, run: Run):
    users = run.split.data.users["user_id"].astype(str).to_numpy()[:50]
    ranked = _ids(v2, contract.SERVING_DEFAULT, user_id=users)
    assert set(NEW) <= set(ranked.ravel())  # k = catalog: every unknown-to-them item is ranked
    only_new = _top3(v2, users[0], allow=NEW)
    assert set(only_new[:3]) == set(NEW) and set(only_new[3:]) == {""}
    genre = run.split.data.items.iloc[10]["genres"][0]
    assert "new-a" in _top3(v2, users[0], allow=NEW, pair=f"genres={genre}")[:3]
    titles = v2.signatures[contract.ITEM_TITLES](item_ids=tf.constant([NEW]))
    assert titles[contract.TITLES].numpy().astype(str).tolist() == [[f"Brand new {i}" for i in NEW]]


def test_removed_items_are_never_recommended_and_answer_as_unknown(v2, versions: dict, run: Run):
    removed = versions["removed"]
    users = run.split.data.users["user_id"].astype(str).to_numpy()
    ranked = _ids(v2, contract.SERVING_DEFAULT, user_id=users)
    assert not set(removed) & set(ranked.ravel())
    similar = _ids(v2, contract.SIMILAR_ITEMS, item_id=np.array([*removed, "never-seen"]))
    assert not set(removed) & set(similar.ravel())
    np.testing.assert_array_equal(similar[0], similar[-1])
    vectors = v2.signatures[contract.CANDIDATE_EMBEDDING](
        item_id=tf.constant([*removed, "never-seen"])
    )[contract.EMBEDDING].numpy()
    np.testing.assert_allclose(vectors[:-1], np.repeat(vectors[-1:], len(removed), 0), atol=1e-6)
    titles = v2.signatures[contract.ITEM_TITLES](item_ids=tf.constant([removed]))
    assert set(titles[contract.TITLES].numpy().astype(str).ravel()) == {""}
    # An allow-list of removed ids allows nothing.
    assert set(_top3(v2, users[0], allow=removed)) == {""}


def test_the_edited_version_passes_verification(versions: dict):
    report = verify(versions["base"] / "2")
    assert report["items_added"] == 3 and report["items_removed"] == 3
    assert (versions["base"] / "2" / contract.ASSETS_EXTRA / EDITS_FILE).is_file()


def _export(run_dir: Path, base: Path, **edits) -> None:
    export_run(
        ExportConfig(
            run_dir=str(run_dir),
            model_base_path=str(base),
            index=IndexConfig(kind=BRUTE_FORCE, k=K),
            verify=False,
            **edits,
        )
    )


def test_ids_already_in_the_catalog_are_refused_by_name(versions: dict, run_dir: Path, run: Run):
    path = versions["work"] / "again.parquet"
    _new_items(run, ["new-b", "new-z"], [1, 2]).to_parquet(path)
    with pytest.raises(ExportError, match=r"1 item id\(s\) in --new-items are already in the "):
        _export(run_dir, versions["base"], new_items=str(path))
    trained = _new_items(run, ["new-y"], [1])
    trained["item_id"] = run.split.data.items["item_id"].astype(str).iloc[50]
    trained.to_parquet(path)
    with pytest.raises(ExportError, match="already in the catalog: " + trained["item_id"][0]):
        _export(run_dir, versions["base"], new_items=str(path))
    removed = _new_items(run, [versions["removed"][0]], [1])
    removed.to_parquet(path)
    with pytest.raises(ExportError, match=r"were removed from the trained catalog.*--catalog-from"):
        _export(run_dir, versions["base"], new_items=str(path))
    assert sorted(p.name for p in versions["base"].iterdir()) == ["1", "2", "3"]


def test_unknown_ids_to_remove_are_refused_by_name(versions: dict, run_dir: Path):
    path = versions["work"] / "unknown.csv"
    pd.DataFrame({"item_id": [versions["removed"][0], "nope"]}).to_csv(path, index=False)
    with pytest.raises(ExportError, match=r"2 item id\(s\) in --remove-items are not in the "):
        _export(run_dir, versions["base"], remove_items=str(path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing-column", "lacks column\\(s\\) year_bucket; it needs the run's item columns"),
        (
            "list-in-scalar",
            "column 'year_bucket', row 0: expected one value, got a list \\['1990'\\]; year_bucket is single-valued",
        ),
        ("empty-id", "column 'item_id' is empty in row\\(s\\) 1"),
        ("repeated-id", "item id\\(s\\) given more than once: x1"),
        ("no-rows", "has no rows"),
        ("suffix", "unknown format '.json'; give a .csv or .parquet file"),
        ("absent", "no such file"),
    ],
)
def test_bad_new_item_files_are_refused_with_the_field_and_the_fix(
    edit: str, message: str, run: Run, run_dir: Path, tmp_path: Path, capsys
):
    items = _new_items(run, ["x1", "x2"], [1, 2])
    path = tmp_path / "items.parquet"
    if edit == "missing-column":
        items = items.drop(columns=["year_bucket"])
    elif edit == "list-in-scalar":
        items["year_bucket"] = [["1990"], ["1995"]]
    elif edit == "empty-id":
        items["item_id"] = ["x1", ""]
    elif edit == "repeated-id":
        items["item_id"] = ["x1", "x1"]
    elif edit == "no-rows":
        items = items.iloc[:0]
    elif edit == "suffix":
        path = tmp_path / "items.json"
    if edit == "suffix":
        path.write_text("{}")
    elif edit != "absent":
        items.to_parquet(path)
    base = tmp_path / "models"
    argv = ["export", "--run", str(run_dir), "--model-base-path", str(base), "--new-items"]
    assert main([*argv, str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("twotower export: error: ") and "Traceback" not in error
    assert re.search(message, error), error
    assert not base.exists() or not any(base.iterdir())  # nothing published, nothing staged


def test_the_command_reports_what_was_added_and_removed(versions: dict):
    from twotower.commands.export import catalog_line

    assert catalog_line(read_model_card(versions["base"] / "3")["catalog"]) == (
        "catalog: 101 items; from version 2's catalog: 1 added, 0 removed; relative to the 100 "
        "trained items: 4 added, 3 removed"
    )
