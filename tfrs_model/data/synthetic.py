"""Synthetic interaction logs with planted structure, for tests and benchmarks.

The generator plants a structure that a personalised model can learn and popularity cannot:

- Items fall into `num_clusters` clusters (item `i` is in cluster `(i - 1) % num_clusters`), and
  an item's single genre names its cluster (`CLUSTER_GENRES[c]`).
- Each user prefers one cluster, drawn uniformly. Their occupation hints at it: it is
  `CLUSTER_OCCUPATIONS[c]` with probability `hint_accuracy`, otherwise a random other one.
- Item popularity is Zipf-like over a random permutation of the items, so the most popular items
  are spread over all clusters and are *not* what most users prefer.
- Each user has exactly `interactions_per_user` distinct items: `round(preference * n)` from their
  preferred cluster and the rest from the other clusters, each drawn without replacement with
  probability proportional to popularity, then shuffled into time order.
- Ratings: 4 or 5 for preferred-cluster items, 1 to 3 for the others, so with the default
  `min_positive_rating=4` the positives are exactly the preferred-cluster interactions.
- Timestamps: each user starts at a random time in the `start_time + [0, 180 days)` window and
  then interacts at strictly increasing seconds, so both temporal splits are well defined.

The result is an ordinary `InteractionData` with MovieLens' feature columns (`USER_FEATURES`,
`ITEM_FEATURES`), so everything downstream treats it like MovieLens, and `write_movielens` writes
it in any GroupLens layout for tests of the loaders and the CLI. The ground truth is kept in a
`cluster` column of the users table (preferred cluster) and of the items table (own cluster);
it is not a declared feature, so no model reads it.

The same arguments always give the same data (numpy's PCG64 seeded with `seed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tfrs_model.data import movielens
from tfrs_model.data.schema import InteractionData, build_dataset
from tfrs_model.errors import ConfigError

CLUSTER = "cluster"
"""Ground-truth column (int) of the users (preferred cluster) and items (own cluster) tables."""

# The 100K layout's genre list (u.genre), in GroupLens' order; clusters use all but "unknown".
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
CLUSTER_GENRES = MOVIELENS_GENRES[1:]
# ML-1M's occupation names minus "other", so every layout can encode them.
CLUSTER_OCCUPATIONS = movielens._ML1M_OCCUPATIONS[1:]
MAX_CLUSTERS = min(len(CLUSTER_GENRES), len(CLUSTER_OCCUPATIONS))

# ML-1M's age codes: the lower bounds of the age buckets every layout maps ages to.
_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
_DAY = 86_400
_START_WINDOW = 180 * _DAY
_MAX_GAP = _DAY  # seconds between a user's consecutive interactions: 1 to a day


def make_synthetic(
    num_users: int = 200,
    num_items: int = 100,
    interactions_per_user: int = 20,
    seed: int = 0,
    *,
    num_clusters: int = 4,
    preference: float = 0.8,
    hint_accuracy: float = 0.9,
    popularity_exponent: float = 1.0,
    start_time: int = 978_307_200,
    name: str = "synthetic",
) -> InteractionData:
    """A deterministic interaction log with planted cluster preferences (see the module doc).

    Args:
      num_users, num_items: table sizes; ids are "1".."num_users" and "1".."num_items".
      interactions_per_user: distinct items per user (each user has exactly this many rows).
      seed: everything random derives from it.
      num_clusters: item clusters, 2 to `MAX_CLUSTERS` (18).
      preference: share of each user's interactions drawn from their preferred cluster; capped
        by the cluster's size.
      hint_accuracy: probability that a user's occupation names their preferred cluster.
      popularity_exponent: Zipf exponent of item popularity (0: uniform).
      start_time: epoch seconds of the earliest possible interaction (default 2001-01-01).
      name: the dataset name recorded in the result.

    Returns:
      `InteractionData` with `num_users * interactions_per_user` interactions, every user and
      item table row (items nobody drew included), MovieLens' feature columns, and the
      `cluster` ground-truth column in both tables.

    Raises:
      ConfigError: a size or probability is out of range.
    """
    _check_arguments(
        num_users, num_items, interactions_per_user, num_clusters, preference, hint_accuracy
    )
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(num_items) % num_clusters
    popularity = 1.0 / (rng.permutation(num_items) + 1.0) ** popularity_exponent
    user_cluster = rng.integers(num_clusters, size=num_users)

    items_per_user = _draw_items(
        rng, user_cluster, item_cluster, popularity, interactions_per_user, preference
    )
    preferred = item_cluster[items_per_user] == user_cluster[:, None]
    shape = items_per_user.shape
    ratings = np.where(preferred, rng.integers(4, 6, size=shape), rng.integers(1, 4, size=shape))
    starts = start_time + rng.integers(_START_WINDOW, size=(num_users, 1))
    times = starts + np.cumsum(rng.integers(1, _MAX_GAP + 1, size=shape), axis=1)

    interactions = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, num_users + 1), shape[1]).astype(str),
            "item_id": (items_per_user.ravel() + 1).astype(str),
            "rating": ratings.ravel().astype(np.float64),
            "timestamp": times.ravel().astype(np.int64),
        }
    )
    return build_dataset(
        name,
        interactions,
        _users_table(rng, user_cluster, num_clusters, hint_accuracy),
        _items_table(rng, item_cluster),
        user_features=movielens.USER_FEATURES,
        item_features=movielens.ITEM_FEATURES,
    )


def _check_arguments(
    num_users: int,
    num_items: int,
    interactions_per_user: int,
    num_clusters: int,
    preference: float,
    hint_accuracy: float,
) -> None:
    if num_users < 1 or num_items < 1:
        raise ConfigError(f"need at least one user and item, got {num_users} and {num_items}")
    if not 2 <= num_clusters <= min(MAX_CLUSTERS, num_items):
        raise ConfigError(
            f"num_clusters must be in [2, {min(MAX_CLUSTERS, num_items)}] (at most one cluster "
            f"per item and per genre), got {num_clusters}"
        )
    if not 1 <= interactions_per_user <= num_items:
        raise ConfigError(
            f"interactions_per_user must be in [1, num_items={num_items}] (items are distinct "
            f"per user), got {interactions_per_user}"
        )
    for label, value in (("preference", preference), ("hint_accuracy", hint_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{label} must be in [0, 1], got {value}")


def _draw_items(
    rng: np.random.Generator,
    user_cluster: np.ndarray,
    item_cluster: np.ndarray,
    popularity: np.ndarray,
    count: int,
    preference: float,
) -> np.ndarray:
    """`[users, count]` distinct 0-based item indices per user, in time order.

    Sampling without replacement proportional to popularity is the Gumbel top-k trick: the k
    largest `log(popularity) + Gumbel noise` keys. Users are processed in chunks to bound memory.
    """
    num_items = len(item_cluster)
    cluster_sizes = np.bincount(item_cluster, minlength=user_cluster.max() + 1)
    log_popularity = np.log(popularity)
    chunk = max(1, 2**22 // num_items)
    out = np.empty((len(user_cluster), count), dtype=np.int64)
    slot = np.arange(count)[None, :]
    for start in range(0, len(user_cluster), chunk):
        clusters = user_cluster[start : start + chunk]
        keys = log_popularity + rng.gumbel(size=(len(clusters), num_items))
        in_cluster = item_cluster[None, :] == clusters[:, None]
        # How many preferred items each user gets: the target share, capped by the cluster's
        # size and raised when the other clusters hold too few items to fill the rest.
        quota = np.minimum(round(preference * count), cluster_sizes[clusters])
        quota = np.maximum(quota, count - (num_items - cluster_sizes[clusters]))[:, None]
        preferred = _top(np.where(in_cluster, keys, -np.inf), count)
        others = _top(np.where(in_cluster, -np.inf, keys), count)
        chosen = np.where(
            slot < quota,
            preferred,
            np.take_along_axis(others, np.maximum(slot - quota, 0), axis=1),
        )
        # A random time order: sort each row by uniform keys.
        order = np.argsort(rng.random(chosen.shape), axis=1)
        out[start : start + chunk] = np.take_along_axis(chosen, order, axis=1)
    return out


def _top(keys: np.ndarray, count: int) -> np.ndarray:
    """`[rows, count]` column indices of each row's largest keys, largest first."""
    if count < keys.shape[1]:
        part = np.argpartition(-keys, count - 1, axis=1)[:, :count]
    else:
        part = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _users_table(
    rng: np.random.Generator, user_cluster: np.ndarray, num_clusters: int, hint_accuracy: float
) -> pd.DataFrame:
    num_users = len(user_cluster)
    hinted = rng.random(num_users) < hint_accuracy
    # A wrong hint is uniformly one of the other clusters' occupations.
    wrong = (user_cluster + rng.integers(1, num_clusters, size=num_users)) % num_clusters
    occupations = np.asarray(CLUSTER_OCCUPATIONS)[np.where(hinted, user_cluster, wrong)]
    ages = rng.choice(_AGE_CODES, size=num_users)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, num_users + 1).astype(str),
            "gender": rng.choice(["F", "M"], size=num_users),
            "age_bucket": movielens._age_bucket(pd.Series(ages)).to_numpy(),
            "occupation": occupations,
            "zip_prefix": rng.integers(10, 100, size=num_users).astype(str),
            CLUSTER: user_cluster,
        }
    )


def _items_table(rng: np.random.Generator, item_cluster: np.ndarray) -> pd.DataFrame:
    ids = np.arange(1, len(item_cluster) + 1)
    years = rng.integers(1950, 2010, size=len(ids))
    return pd.DataFrame(
        {
            "item_id": ids.astype(str),
            "title": [f"Item {i} ({year})" for i, year in zip(ids, years, strict=True)],
            "genres": [(CLUSTER_GENRES[c],) for c in item_cluster],
            "title_tokens": [("item", str(i)) for i in ids],
            "year_bucket": (years // 5 * 5).astype(str),
            CLUSTER: item_cluster,
        }
    )


Layout = Literal["100k", "1m", "csv"]
DATASET_FOR_LAYOUT = {"100k": "movielens-100k", "1m": "movielens-1m", "csv": "movielens-20m"}
"""A dataset name whose expected layout each `write_movielens` layout satisfies."""


def write_movielens(data: InteractionData, directory: Path, layout: Layout = "100k") -> Path:
    """Writes `data` as the files of a GroupLens MovieLens layout, for the loaders and the CLI.

    Args:
      data: integer ids and ratings; the users and items tables need MovieLens' feature
        columns (as `make_synthetic` produces). The csv layout has no users file.
      directory: created if missing; existing files of the layout are overwritten.
      layout: `100k` (u.data, u.item, u.user, u.genre), `1m` (ratings.dat, movies.dat,
        users.dat) or `csv` (ratings.csv, movies.csv); load it back with
        `load_movielens(DATASET_FOR_LAYOUT[layout], directory)`.

    Returns:
      `directory`.

    Raises:
      ValueError: unknown layout, non-integer ids or ratings, or an occupation ML-1M cannot code.
    """
    if layout not in DATASET_FOR_LAYOUT:
        raise ValueError(f"unknown layout {layout!r}; use one of {sorted(DATASET_FOR_LAYOUT)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ratings = _integer_columns(data.interactions, ("user_id", "item_id", "rating", "timestamp"))
    items, users = data.items, data.users
    if layout == "100k":
        genres = [*MOVIELENS_GENRES]
        genres += sorted({g for row in items["genres"] for g in row} - set(genres))
        _write_lines(directory / "u.genre", [f"{g}|{i}" for i, g in enumerate(genres)])
        ratings.to_csv(directory / "u.data", sep="\t", header=False, index=False)
        _write_lines(
            directory / "u.item",
            [
                f"{item}|{title}|01-Jan-2000||http://example.invalid/{item}|"
                + "|".join("1" if g in row else "0" for g in genres)
                for item, title, row in zip(
                    items["item_id"], items["title"], items["genres"], strict=True
                )
            ],
        )
        _write_lines(
            directory / "u.user",
            [f"{u}|{a}|{g}|{o}|{z}" for u, a, g, o, z in _user_rows(users, occupation_codes=False)],
        )
    elif layout == "1m":
        _write_lines(directory / "ratings.dat", ["::".join(map(str, r)) for r in ratings.values])
        _write_lines(
            directory / "movies.dat",
            [
                f"{item}::{title}::{'|'.join(row)}"
                for item, title, row in zip(
                    items["item_id"], items["title"], items["genres"], strict=True
                )
            ],
        )
        _write_lines(
            directory / "users.dat",
            [
                f"{u}::{g}::{a}::{o}::{z}"
                for u, a, g, o, z in _user_rows(users, occupation_codes=True)
            ],
        )
    else:
        ratings.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(
            directory / "ratings.csv", index=False
        )
        pd.DataFrame(
            {
                "movieId": items["item_id"],
                "title": items["title"],
                "genres": items["genres"].map(lambda g: "|".join(g) or "(no genres listed)"),
            }
        ).to_csv(directory / "movies.csv", index=False)
    return directory


def _write_lines(path: Path, lines: list[str]) -> None:
    # GroupLens' 100K and 1M files are latin-1; the parsers read them so.
    path.write_text("".join(f"{line}\n" for line in lines), encoding="latin-1")


def _integer_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = {}
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            raise ValueError(f"MovieLens layouts need integer {column} values")
        out[column] = values.astype(np.int64)
    return pd.DataFrame(out)


def _user_rows(users: pd.DataFrame, *, occupation_codes: bool):
    """(user, age, gender, occupation, zip) per user, ages as their bucket's ML-1M code."""
    code_of_bucket = dict(zip(movielens._AGE_LABELS, _AGE_CODES, strict=True))
    ages = users["age_bucket"].map(code_of_bucket)
    occupations = users["occupation"]
    if occupation_codes:
        known = {name: i for i, name in enumerate(movielens._ML1M_OCCUPATIONS)}
        unknown = sorted(set(occupations) - set(known))
        if unknown:
            raise ValueError(f"occupation(s) {unknown} have no ML-1M code")
        occupations = occupations.map(known)
    return zip(
        users["user_id"],
        ages,
        users["gender"],
        occupations,
        users["zip_prefix"] + "000",
        strict=True,
    )
