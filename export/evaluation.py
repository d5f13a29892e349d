"""Scores an exported version through its `serving_default`: the production path, evaluated."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from export import contract
from export.loading import load_saved_model
from export.model_card import read_model_card
from export.savedmodel import ALL
from tfrs_model.config import DataConfig, EvaluationConfig, from_mapping, with_overrides
from tfrs_model.data import assign_splits, load_data
from tfrs_model.data.splits import TRAIN, VALIDATION
from tfrs_model.errors import ExportError
from tfrs_model.evaluation.blocks import user_blocks
from tfrs_model.evaluation.evaluate import EvaluationReport, evaluate_split
from tfrs_model.evaluation.protocol import EvalSet


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
        for rows in user_blocks(len(eval_set.user_ids), self.batch_size, self.name):
            users = eval_set.user_ids[rows].astype(str)
            item_ids = serve(user_id=tf.constant(users))[contract.ITEM_IDS].numpy()[:, :k]
            rows = catalog.get_indexer(item_ids.astype(str).ravel()).reshape(item_ids.shape)
            parts.append(rows)
        ranked = np.concatenate(parts, axis=0)
        if ranked.shape[1] < k:
            missing = np.full((len(ranked), k - ranked.shape[1]), -1, dtype=ranked.dtype)
            ranked = np.concatenate([ranked, missing], axis=1)
        return ranked


def trained_on(card: dict[str, Any]) -> tuple[str, ...]:
    """The splits the exported weights were fit on, from the model card.

    Cards written before runs kept production weights lack `trained_on`: their weights were the
    evaluation weights, fit on train (+ validation after a refit).
    """
    if "trained_on" in card:
        return tuple(card["trained_on"])
    refit = card["config"].get("train", {}).get("refit_on_validation", False)
    return (TRAIN, VALIDATION) if refit else (TRAIN,)


def refuse_leaky_export(card: dict[str, Any], split: str, version_dir: Path) -> None:
    """Raises unless the exported weights and baked history are both strictly before `split`.

    Raises:
      ExportError: the weights were fit on `split` (a production export, or a refit scored on
        validation) or `serving_default` bakes `split`'s interactions (`known_through: all`).
    """
    fit_on = trained_on(card)
    if split in fit_on:
        raise ExportError(
            f"{version_dir} holds {card.get('weights', 'evaluation')} weights trained on "
            f"{' + '.join(fit_on)}, so scoring them on {split} would leak. Export the evaluation "
            "weights for that (twotower export --run RUN --weights evaluation --known-through "
            "validation), or score the run itself (twotower evaluate --run RUN --split test)"
        )
    if card.get("known_through") == ALL:
        raise ExportError(
            f"{version_dir} was exported with --known-through all: its baked history includes "
            f"the {split} split, so evaluating it there would leak; re-export with "
            "--known-through validation"
        )


DataOverrides = dict[str, Any]  # DataConfig fields to replace (dataset, data_dir, ...)


def evaluate_saved_model(
    version_dir: Path,
    data_overrides: DataOverrides,
    split: str,
    *,
    cache_dir: Path,
    environ: Mapping[str, str] | None = None,
    with_baselines: bool = True,
    evaluation_overrides: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluates an exported version through `serving_default` on `split` of its training data.

    The data is reloaded from its source with the split configuration recorded in the model
    card (optionally pointed at another directory), so the split equals the run's. How many
    users are ranked and in how much memory is the run's `evaluation` section from the card,
    with `evaluation_overrides` (`EvaluationConfig` fields, e.g. `eval_users`) applied.

    Raises:
      ExportError: not an export, or its weights or its baked history have seen the evaluated
        split (`refuse_leaky_export`).
    """
    card = read_model_card(version_dir)
    refuse_leaky_export(card, split, version_dir)
    config = with_overrides(from_mapping(DataConfig, card["config"]["data"]), **data_overrides)
    evaluation = dataclasses.replace(
        from_mapping(EvaluationConfig, card["config"].get("evaluation", {})),
        **(evaluation_overrides or {}),
    )
    split_data = assign_splits(load_data(config, cache_dir, environ=environ), config)
    ranker = SavedModelRanker(version_dir)
    return evaluate_split(
        split_data, split, [ranker], with_baselines=with_baselines, evaluation=evaluation
    )
