"""Catalog edits without retraining: items added from their features, trained items removed.

A version's catalog is the run's trained catalog (its items table) with its edits applied:
trained items removed, then items added (embedded by the candidate tower from their features;
their ids are out of vocabulary). Edits accumulate from version to version of one run and
weights: an export starts from the edits of the latest such version under the base path, so a
second `--new-items` keeps the first one's items. Each version stores its edits in
`assets.extra/catalog_edits.json`, which is where the next export reads them.

Rules (each broken one is an `ExportError` naming the ids): an added id must not be in the
catalog already (refused, not updated: remove it in one export and add it in the next to
change it; a removed trained item cannot come back as a new one); a removed id must be in the
catalog; no id may be both added and removed in one export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from export import contract
from export.item_files import ITEM_ID, quoted
from tfrs_model.data.schema import FeatureColumn
from tfrs_model.errors import ExportError

EDITS_FILE = "catalog_edits.json"


@dataclass(frozen=True)
class CatalogEdits:
    """A version's changes to the trained catalog.

    Attributes:
      added: `[A rows]` in the items-table layout (`item_id`, `title`, feature columns), ids
        outside the trained catalog, in the order they were added.
      removed: `[R]` trained item ids no longer in the catalog, sorted.
    """

    added: pd.DataFrame
    removed: np.ndarray

    @classmethod
    def none(cls, columns: list[str]) -> CatalogEdits:
        return cls(pd.DataFrame({name: [] for name in columns}, dtype=object), np.array([], object))


@dataclass(frozen=True)
class EditedCatalog:
    """The catalog a version serves, and how it came to be.

    Attributes:
      items: the items table in export row order: the trained items left, then the added ones.
      edits: every edit relative to the trained catalog (what the version stores).
      added_now, removed_now: `[n]` ids this export added and removed.
      base_version: the version whose edits this export started from; None for the trained
        catalog.
      trained_items: the size of the trained catalog.
    """

    items: pd.DataFrame
    edits: CatalogEdits
    added_now: np.ndarray
    removed_now: np.ndarray
    base_version: int | None
    trained_items: int

    def describe(self) -> dict:
        """The model card's `catalog` section."""
        return {
            "items": len(self.items),
            "trained_items": self.trained_items,
            "base_version": self.base_version,
            "added_in_this_version": self.added_now.tolist(),
            "removed_in_this_version": self.removed_now.tolist(),
            # Relative to the trained catalog, over every version of this run's edits.
            "added_item_ids": self.edits.added[ITEM_ID].astype(str).tolist(),
            "removed_item_ids": self.edits.removed.tolist(),
        }


def _refuse(ids: np.ndarray, problem: str, fix: str) -> None:
    if len(ids):
        raise ExportError(f"{len(ids)} item id(s) {problem}: {quoted(list(ids))}; {fix}")


def apply_edits(
    trained: pd.DataFrame,
    previous: CatalogEdits,
    new_items: pd.DataFrame | None,
    remove_ids: np.ndarray | None,
    base_version: int | None = None,
) -> EditedCatalog:
    """The catalog after `previous` edits, then `remove_ids`, then `new_items`.

    Args:
      trained: the run's items table (`[N rows]`, `item_id` first).
      previous: the edits the latest version of this run and weights holds.
      new_items: `[n rows]` from `item_files.read_new_items`, or None.
      remove_ids: `[m]` ids from `item_files.read_item_ids`, or None.
      base_version: the version `previous` came from, for the record.

    Raises:
      ExportError: an added id is already in the catalog or was removed from the trained one, a
        removed id is not in the catalog, or an id is both added and removed.
    """
    new_items = new_items if new_items is not None else previous.added.iloc[:0]
    remove_ids = remove_ids if remove_ids is not None else np.array([], object)
    trained_ids = pd.Index(trained[ITEM_ID].astype(str))
    added_before = pd.Index(previous.added[ITEM_ID].astype(str))
    current = trained_ids.difference(pd.Index(previous.removed)).append(added_before)
    new_ids = pd.Index(new_items[ITEM_ID].astype(str))
    _refuse(
        new_ids.intersection(pd.Index(remove_ids)).to_numpy(),
        "are both in --new-items and --remove-items",
        "an item is either added or removed in one export",
    )
    _refuse(
        new_ids.intersection(current).to_numpy(),
        "in --new-items are already in the catalog",
        "drop them from the file (to change an item, remove it in one export and add it in the "
        "next)",
    )
    _refuse(
        new_ids.intersection(pd.Index(previous.removed)).to_numpy(),
        "in --new-items were removed from the trained catalog",
        "a trained item cannot come back as a new one; export with --catalog-from trained to "
        "start again from the trained catalog",
    )
    _refuse(
        pd.Index(remove_ids).difference(current, sort=False).to_numpy(),
        "in --remove-items are not in the catalog",
        "check the ids (an item removed by an earlier version is gone already)",
    )
    removed_trained = np.union1d(
        previous.removed, pd.Index(remove_ids).intersection(trained_ids).to_numpy()
    ).astype(object)
    kept_added = previous.added[~previous.added[ITEM_ID].astype(str).isin(remove_ids)]
    added = pd.concat([kept_added, new_items[list(previous.added.columns)]], ignore_index=True)
    items = pd.concat(
        [trained[~trained_ids.isin(removed_trained)], added.reindex(columns=trained.columns)],
        ignore_index=True,
    )
    return EditedCatalog(
        items=items,
        edits=CatalogEdits(added=added, removed=removed_trained),
        added_now=new_ids.to_numpy(dtype=object),
        removed_now=np.asarray(remove_ids, dtype=object),
        base_version=base_version,
        trained_items=len(trained),
    )


def write_edits(extra_dir: Path, edits: CatalogEdits) -> None:
    """Stores `edits` in a version's `assets.extra/` (multi-valued cells as JSON lists)."""
    added = [
        {key: list(value) if isinstance(value, tuple) else value for key, value in row.items()}
        for row in edits.added.to_dict("records")
    ]
    payload = {"added": added, "removed": edits.removed.tolist()}
    (Path(extra_dir) / EDITS_FILE).write_text(json.dumps(payload) + "\n")


def read_edits(version_dir: Path, columns: tuple[FeatureColumn, ...]) -> CatalogEdits:
    """The edits a version stored; none for versions written before edits existed.

    Args:
      columns: the run's item feature columns (multi-valued ones come back as tuples).
    """
    names = [ITEM_ID, "title", *(column.name for column in columns)]
    path = Path(version_dir) / contract.ASSETS_EXTRA / EDITS_FILE
    if not path.is_file():
        return CatalogEdits.none(names)
    payload = json.loads(path.read_text())
    added = pd.DataFrame(payload["added"], columns=names, dtype=object)
    for column in columns:
        if column.multivalued:
            added[column.name] = added[column.name].map(tuple)
    return CatalogEdits(added=added, removed=np.array(payload["removed"], dtype=object))


def latest_edited_version(
    base: Path, versions: list[int], run_dir: Path, weights: str
) -> int | None:
    """The highest of `versions` under `base` exported from `run_dir` with `weights`, if any."""
    for version in sorted(versions, reverse=True):
        card_path = base / str(version) / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        same_run = card.get("run_dir") == str(Path(run_dir).resolve())
        if same_run and card.get("weights") == weights:
            return version
    return None
