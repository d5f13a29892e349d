"""Cold start: users and items that training never saw, served from their features alone.

A random share of users (or items) loses every train and validation interaction before training,
so their ids are out of vocabulary and no weight was fit on them; their test interactions stay.
- Cold users are ranked from a query of user features only (no id, no history): the two-tower
  against popularity, on the same users and the whole catalog.
- Cold items are ranked, for every test user with a positive among them, within the cold items
  only, from item features: the two-tower against popularity (which has no signal there: every
  cold item has zero known interactions, so its order is arbitrary) and random.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tfrs_model.data.splits import TEST, SplitData
from tfrs_model.evaluation.baselines import PopularityBaseline, RandomBaseline
from tfrs_model.evaluation.evaluate import evaluate_rankers
from tfrs_model.evaluation.protocol import EvalSet, build_eval_set, items_subset

ColdKind = Literal["users", "items"]
COLD_KS = (10, 50)


@dataclass(frozen=True)
class ColdStartResult:
    """Metrics per ranker on the cold users or items.

    Attributes:
      kind: `users` or `items`.
      held_out: how many users or items were made unseen.
      evaluated_users: test users scored (cold users; or users with a cold-item positive).
      candidates: catalog size ranked over.
      results: `{ranker: {"recall@10": ...}}`.
    """

    kind: ColdKind
    held_out: int
    evaluated_users: int
    candidates: int
    results: dict[str, dict[str, float]]


def hold_out(split: SplitData, kind: ColdKind, fraction: float, seed: int) -> tuple[SplitData, set]:
    """Removes all train and validation interactions of a random `fraction` of users or items.

    Only ids with a test positive are drawn, so every held-out id can be evaluated.

    Returns:
      The reduced split and the held-out ids.
    """
    column = "user_id" if kind == "users" else "item_id"
    frame = split.interactions
    eligible = np.sort(split.positives(TEST)[column].unique())
    count = max(1, round(fraction * len(eligible)))
    cold = set(np.random.default_rng(seed).choice(eligible, size=count, replace=False))
    removed = frame[column].isin(cold) & (frame["split"] != TEST)
    return dataclasses.replace(split, interactions=frame[~removed].reset_index(drop=True)), cold


def cold_eval_set(split: SplitData, kind: ColdKind, cold: set) -> EvalSet:
    """The test `EvalSet` restricted to the cold users, or to the cold items as the catalog."""
    full = build_eval_set(split, TEST)
    if kind == "users":
        keep = np.isin(full.user_ids, list(cold))
        return dataclasses.replace(
            full,
            user_ids=full.user_ids[keep],
            relevant=full.relevant[keep],
            excluded=full.excluded[keep],
            total_users=None,
        )
    # In a shuffled order: no cold item has a known interaction, so popularity ties on all of
    # them and would rank them in catalog order, which for ids assigned over time is a hint.
    in_catalog = np.random.default_rng(0).permutation(
        np.flatnonzero(np.isin(full.catalog, list(cold)))
    )
    # Cold items have no known interactions, so nothing of theirs is excluded.
    return items_subset(full, in_catalog, keep_exclusions=False)


def evaluate_cold_start(
    cold_split: SplitData, kind: ColdKind, cold: set, two_tower
) -> ColdStartResult:
    """Scores `two_tower` (trained on `cold_split`) and the baselines on the cold ids."""
    eval_set = cold_eval_set(cold_split, kind, cold)
    rankers = [two_tower, PopularityBaseline()]
    if kind == "items":
        rankers.append(RandomBaseline())
    return ColdStartResult(
        kind=kind,
        held_out=len(cold),
        evaluated_users=len(eval_set.user_ids),
        candidates=eval_set.num_items,
        results=evaluate_rankers(eval_set, rankers, COLD_KS),
    )
