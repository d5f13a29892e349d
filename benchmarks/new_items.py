"""How well items added without retraining rank: `twotower bench quality --new-items`.

The newest slice of the catalog (the `fraction` of items whose first interaction came last) is
hidden from training: its items leave the items table and every interaction of theirs leaves
the log. The rest is trained as a run (evaluation weights), then exported through the real
`twotower export --new-items` path with the hidden items' rows (title and features), so they
are embedded by the candidate tower from their features alone.

Scored: the run's test users (each user's test period starts at their first test interaction
of the reduced log) with a positive on a new item from then on, ranked within the new items
only through the export's `recommend_filtered` (allow-list = the new items): the production
path. Beside it, popularity (no signal: every new item has zero known interactions, so it ranks
them in the eval set's seeded random order) and random,
as the cold-start table does, and for reference the same model ranking an equal number of
trained items, drawn among those with test positives, through the same signature.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tfrs_model.data.schema import InteractionData
from tfrs_model.data.splits import TEST, SplitData, assign_splits
from tfrs_model.evaluation.baselines import PopularityBaseline, RandomBaseline
from tfrs_model.evaluation.blocks import user_blocks
from tfrs_model.evaluation.cold_start import COLD_KS
from tfrs_model.evaluation.evaluate import evaluate_rankers
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set, items_subset

DEFAULT_FRACTION = 0.1
MODEL = "two_tower (export --new-items)"
TRAINED_REFERENCE = "two_tower, trained items"


@dataclass(frozen=True)
class NewItemsResult:
    """Metrics per ranker on the new items, and the reference on as many trained items.

    Attributes:
      hidden: items hidden from training and added through the export.
      evaluated_users: test users with a positive on a new item.
      results: `{ranker: {"recall@10": ...}}` ranked within the new items.
      reference_users, reference: the model ranking `hidden` trained items the same way.
      export: the model card's `catalog` section of the export.
    """

    hidden: int
    evaluated_users: int
    results: dict[str, dict[str, float]]
    reference_users: int
    reference: dict[str, dict[str, float]]
    export: dict


def hide_newest(data: InteractionData, fraction: float) -> tuple[InteractionData, pd.DataFrame]:
    """`data` without the `fraction` of items first seen last, and those items' rows.

    Returns:
      The reduced data (items table and log without them; categorical ids re-coded over the
      reduced tables) and the hidden items' rows of the items table.
    """
    frame = data.interactions
    first_seen = frame.groupby("item_id", observed=True)["timestamp"].min()
    count = max(1, round(fraction * len(first_seen)))
    # Stable on ties, so the same items are hidden on every run.
    hidden = first_seen.sort_values(kind="stable").index[-count:].astype(str)
    items = data.items[~data.items["item_id"].astype(str).isin(hidden)].reset_index(drop=True)
    kept = frame[~frame["item_id"].astype(str).isin(hidden)].reset_index(drop=True)
    if isinstance(kept["item_id"].dtype, pd.CategoricalDtype):
        kept["item_id"] = kept["item_id"].cat.set_categories(items["item_id"].astype(str))
    reduced = dataclasses.replace(data, interactions=kept, items=items)
    return reduced, data.items[data.items["item_id"].astype(str).isin(hidden)]


class AllowListRanker:
    """Ranks each user's top k within the eval set's catalog through `recommend_filtered`, its
    allow-list the catalog: what a client asking the export for "only these items" gets."""

    def __init__(self, model, name: str, batch_size: int = 128) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size

    def rank(self, eval_set: EvalSet, k: int) -> np.ndarray:
        """`[U, k]` rows of `eval_set.catalog` (-1 where the export returned fewer)."""
        import tensorflow as tf

        from export import contract

        signature = self.model.signatures[contract.RECOMMEND_FILTERED]
        catalog = pd.Index(eval_set.catalog.astype(str))
        parts = []
        for rows in user_blocks(len(eval_set.user_ids), self.batch_size, self.name):
            users = eval_set.user_ids[rows].astype(str)
            batch = len(users)
            answer = signature(
                user_id=tf.constant(users),
                k=tf.fill([batch], k),
                allow=tf.constant(np.tile(catalog.to_numpy(dtype=str), (batch, 1))),
                filters=tf.fill([batch, 1], ""),
            )
            ids = answer[contract.ITEM_IDS].numpy()[:, :k].astype(str)
            parts.append(catalog.get_indexer(ids.ravel()).reshape(ids.shape))
        return np.concatenate(parts, axis=0)


def _test_starts(split: SplitData) -> pd.Series:
    """Per user of the reduced run, the time their test period starts."""
    test = split.interactions[split.interactions["split"] == TEST]
    return test.groupby(test["user_id"].astype(str))["timestamp"].min()


def new_items_eval_set(
    run_split: SplitData, full: SplitData, hidden: np.ndarray, seed: int
) -> EvalSet:
    """Users with a positive on a hidden item from their test start on, ranked over `hidden`.

    The catalog is `hidden` in a seeded random order: popularity ranks new items (all without
    interactions) by their order, and in MovieLens the id order is not neutral (the newest
    items with the lowest ids are 1997's most watched releases), which gave popularity
    recall@10 0.47 from ids alone.
    """
    hidden = np.asarray(hidden, dtype=object)[np.random.default_rng(seed).permutation(len(hidden))]
    starts = _test_starts(run_split)
    frame = full.interactions
    users = frame["user_id"].astype(str)
    positive = frame[frame["positive"] & frame["item_id"].astype(str).isin(hidden)]
    start = users[positive.index].map(starts)
    positive = positive[start.notna().to_numpy() & (positive["timestamp"] >= start).to_numpy()]
    user_ids = np.sort(positive["user_id"].astype(str).unique()).astype(object)
    rows = pd.Index(user_ids).get_indexer(positive["user_id"].astype(str))
    columns = pd.Index(hidden).get_indexer(positive["item_id"].astype(str))
    shape = (len(user_ids), len(hidden))
    relevant = sp.csr_matrix((np.ones(len(rows), bool), (rows, columns)), shape=shape)
    return EvalSet(
        split=TEST,
        user_ids=user_ids,
        catalog=np.asarray(hidden, dtype=object),
        relevant=relevant.astype(bool),
        # New items have no known interactions, so nothing of theirs is excluded.
        excluded=sp.csr_matrix(shape, dtype=bool),
        known=run_split.known_before(TEST),
    )


def trained_reference_set(run_split: SplitData, size: int, seed: int) -> EvalSet:
    """The run's test set restricted to `size` trained items drawn among those with a test
    positive, and to the users with a positive among them."""
    full = build_eval_set(run_split, TEST)
    with_positive = np.flatnonzero(np.asarray(full.relevant.sum(axis=0)).ravel() > 0)
    chosen = np.sort(np.random.default_rng(seed).choice(with_positive, size, replace=False))
    return items_subset(full, chosen)


def run_new_items_benchmark(
    data: InteractionData,
    data_config: DataConfig,
    workdir: Path,
    fraction: float = DEFAULT_FRACTION,
    epochs: int | None = None,
    index_kind: str = "brute-force",
    seed: int = 0,
) -> NewItemsResult:
    """Hides the newest items, trains without them, adds them by export, and scores them."""
    from benchmarks.quality import export_for_test
    from export.loading import load_saved_model
    from tfrs_model.run import Run
    from tfrs_model.training import train

    reduced, hidden_rows = hide_newest(data, fraction)
    train_config = TrainConfig(tensorboard=False, production_fit=False)
    if epochs is not None:
        train_config = dataclasses.replace(train_config, epochs=epochs)
    config = RunConfig(data=data_config, model=ModelConfig(), train=train_config)
    run_dir = workdir / "run"
    train(reduced, config, run_dir)
    new_items = workdir / "new_items.parquet"
    hidden_rows.to_parquet(new_items, index=False)
    exported = export_for_test(run_dir, workdir / "models", index_kind, new_items=str(new_items))
    ranker = AllowListRanker(load_saved_model(exported.path), MODEL)
    run_split = Run.open(run_dir).split
    hidden = hidden_rows["item_id"].astype(str).to_numpy(dtype=object)
    eval_set = new_items_eval_set(run_split, assign_splits(data, data_config), hidden, seed)
    results = evaluate_rankers(eval_set, [ranker, PopularityBaseline(), RandomBaseline()], COLD_KS)
    reference_set = trained_reference_set(run_split, len(hidden), seed)
    ranker.name = TRAINED_REFERENCE
    reference = evaluate_rankers(reference_set, [ranker, PopularityBaseline()], COLD_KS)
    return NewItemsResult(
        hidden=len(hidden),
        evaluated_users=eval_set.num_users,
        results=results,
        reference_users=reference_set.num_users,
        reference=reference,
        export=exported.catalog,
    )


def new_items_markdown(result: NewItemsResult) -> str:
    """The table: each ranker's recall@10, ndcg@10 and recall@50 on the new items, then the
    reference rows on as many trained items."""
    lines = [
        "| items ranked | users scored | model | recall@10 | ndcg@10 | recall@50 |",
        "|---|---|---|---|---|---|",
    ]
    sections = (
        (f"{result.hidden} new (added by export)", result.evaluated_users, result.results),
        (f"{result.hidden} trained (reference)", result.reference_users, result.reference),
    )
    for items, users, rows in sections:
        for name, metrics in rows.items():
            lines.append(
                f"| {items} | {users} | {name} | {metrics['recall@10']:.4f} | "
                f"{metrics['ndcg@10']:.4f} | {metrics['recall@50']:.4f} |"
            )
    return "\n".join(lines) + "\n"
