"""Ranks an `EvalSet` through an exported SavedModel's `serving_default`: the production path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from export import contract
from export.loading import load_saved_model
from tfrs_model.evaluation.protocol import EvalSet


def read_model_card(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE
    if not path.is_file():
        from tfrs_model.errors import ExportError

        raise ExportError(f"{path} is missing; was {version_dir} written by `twotower export`?")
    return json.loads(path.read_text())


class SavedModelRanker:
    """Calls `serving_default` for the evaluated users in batches; maps ids to catalog rows.

    The export's own exclusions (known items baked at export time) apply, exactly as for a
    production request.
    """

    name = "two_tower"

    def __init__(self, version_dir: Path, batch_size: int = 256) -> None:
        self.model = load_saved_model(version_dir)
        self.batch_size = batch_size

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        import tensorflow as tf

        serve = self.model.signatures[contract.SERVING_DEFAULT]
        catalog = pd.Index(eval_set.catalog.astype(str))
        parts = []
        for start in range(0, len(eval_set.user_ids), self.batch_size):
            users = eval_set.user_ids[start : start + self.batch_size].astype(str)
            item_ids = serve(user_id=tf.constant(users))[contract.ITEM_IDS].numpy()[:, :k]
            rows = catalog.get_indexer(item_ids.astype(str).ravel()).reshape(item_ids.shape)
            parts.append(rows)
        ranked = np.concatenate(parts, axis=0)
        if ranked.shape[1] < k:
            missing = np.full((len(ranked), k - ranked.shape[1]), -1, dtype=ranked.dtype)
            ranked = np.concatenate([ranked, missing], axis=1)
        return ranked
