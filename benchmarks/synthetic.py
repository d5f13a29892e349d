"""Synthetic interaction logs with planted structure, written as Parquet plus a dataset YAML.

The training benchmark (`benchmarks.train`) feeds these logs to `twotower train --dataset-config`,
so they use the project's tabular format (`docs/data-sources.md`) and look like the team's own
short-video logs: string ids, epoch-second timestamps, an engagement column and side features.

    <directory>/
      dataset.yaml           interactions, users and items tables; `positive_if: likes > 0`
      interactions.parquet   user_id ("u000123"), item_id ("i004567"), timestamp (int64), likes
      users.parquet          user_id, country (30 values)
      items.parquet          item_id, category ("c07", the item's cluster), tags ("c07-2|g13")
      synthetic.json         the marker: spec, generator version, counts and seconds, written last

Planted structure, which a personalised model can learn and popularity cannot:

- Items fall into `clusters` clusters (drawn uniformly); an item's `category` names its cluster
  and its first tag is one of four tags of that cluster (the other 0-2 tags are generic).
- Item popularity is Zipf-like (exponent `POPULARITY_EXPONENT`) over a random ranking inside
  each cluster, so every cluster has head items and the global head spans all clusters.
- Each user prefers one cluster (uniform). Their `country` is that cluster's country
  (`cluster % 30`) with probability `COUNTRY_HINT`, otherwise a random one.
- A share `PREFERENCE` of a user's interactions is drawn from their preferred cluster by
  in-cluster popularity; the rest from the whole catalog by popularity.
- `likes` is 0 with probability 1 - `LIKE_RATE[preferred]` (0.25 in the preferred cluster,
  0.55 elsewhere), else a geometric count >= 1; `likes > 0` keeps about two thirds of the rows,
  and more of the preferred-cluster ones.
- Users have a heavy-tailed (log-normal weighted) number of rows, at least `MIN_ROWS_PER_USER`
  each, summing exactly to `rows`; every user of the users table has rows.
- Timestamps spread over `START_TIME + [0, 365 days)`; a user's are strictly increasing, so no
  (user, item, timestamp) repeats. Items may repeat for a user at different times.

Memory is bounded: users are written in blocks of about `chunk_rows` rows (one Parquet row group
each), ids are taken from precomputed Arrow string arrays (no Python string per row). Everything is
written into a temporary sibling directory that is renamed onto `directory` when complete, marker
included, so a directory with a marker is always a complete log; `write_synthetic_log` reuses
one whose marker names the same spec (and chunk size and generator version).

The same spec always gives the same files (numpy's PCG64 seeded from `seed` and the block index).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
MARKER = "synthetic.json"
DATASET_YAML = "dataset.yaml"
CHUNK_ROWS = 1_000_000

MIN_ROWS_PER_USER = 3
PREFERENCE = 0.7  # share of a user's rows drawn from their preferred cluster
COUNTRY_HINT = 0.8  # probability that a user's country names their preferred cluster
POPULARITY_EXPONENT = 1.0
ACTIVITY_SIGMA = 1.0  # log-normal spread of the users' activity
LIKE_RATE = {True: 0.75, False: 0.45}  # P(likes > 0) in / outside the preferred cluster
START_TIME = 1_672_531_200  # 2023-01-01T00:00:00Z
SPAN_SECONDS = 365 * 86_400
COUNTRIES = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "PT", "BR", "MX", "AR", "CO", "CL",
    "CA", "AU", "NZ", "JP", "KR", "CN", "IN", "ID", "TH", "VN", "PH", "TR", "EG", "NG", "ZA",
)  # fmt: skip
GENERIC_TAGS = 50
TAGS_PER_CLUSTER = 4
TAG_SEPARATOR = "|"


@dataclass(frozen=True)
class SyntheticLogSpec:
    """Size and seed of a synthetic log.

    Attributes:
      rows: interactions (every one written, positives and not).
      users: users; each has at least `MIN_ROWS_PER_USER` rows, so rows >= 3 * users.
      items: catalog size; popular items are drawn more, so some tail items may have no rows.
      clusters: item clusters (and user preferences), 2 to `items`.
      seed: everything random derives from it.
    """

    rows: int
    users: int
    items: int
    clusters: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rows", "users", "items", "clusters", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SyntheticLogSpec.{name} must be an int, got {value!r}")
        if self.users < 1 or self.items < 1 or self.seed < 0:
            raise ValueError(f"need users >= 1, items >= 1 and seed >= 0, got {self}")
        if self.rows < MIN_ROWS_PER_USER * self.users:
            raise ValueError(
                f"rows={self.rows:,} is below {MIN_ROWS_PER_USER} per user for {self.users:,} users"
            )
        if not 2 <= self.clusters <= self.items:
            raise ValueError(f"clusters must be in [2, items={self.items}], got {self.clusters}")

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def user_ids(count: int) -> np.ndarray:
    """`u000000`, `u000001`, ...: zero-padded to at least 6 digits."""
    return _ids("u", count)


def item_ids(count: int) -> np.ndarray:
    """`i000000`, `i000001`, ...: zero-padded to at least 6 digits."""
    return _ids("i", count)


def _ids(prefix: str, count: int) -> np.ndarray:
    width = max(6, len(str(max(count - 1, 0))))
    return np.char.add(prefix, np.char.zfill(np.arange(count).astype(str), width))


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of a complete log in `directory`, or None (no log, or not one of ours)."""
    try:
        marker = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def cached_log(
    spec: SyntheticLogSpec, directory: Path, *, chunk_rows: int = CHUNK_ROWS
) -> Path | None:
    """The YAML of the complete log for `spec` in `directory`, if `write_synthetic_log` would
    reuse it; else None."""
    directory = Path(directory)
    return directory / DATASET_YAML if _reusable(read_marker(directory), spec, chunk_rows) else None


def _reusable(marker: dict[str, Any] | None, spec: SyntheticLogSpec, chunk_rows: int) -> bool:
    return (
        marker is not None
        and marker.get("spec") == spec.to_json()
        and marker.get("generator_version") == GENERATOR_VERSION
        and marker.get("chunk_rows") == chunk_rows
    )


def write_synthetic_log(
    spec: SyntheticLogSpec,
    directory: Path,
    *,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> Path:
    """Writes the log `spec` describes into `directory` (or reuses it) and returns its YAML.

    Args:
      directory: created atomically (written beside it, then renamed). An existing directory
        with a marker for the same spec is reused as is; one with another spec's marker is
        replaced; anything else there is refused.
      chunk_rows: rows per generated block (one Parquet row group); bounds memory.
      progress: show a tqdm bar (rows written, rate, ETA) on stderr.

    Raises:
      ValueError: `chunk_rows` < 1, or `directory` holds something that is not a synthetic log.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    directory = Path(directory)
    marker = read_marker(directory)
    if _reusable(marker, spec, chunk_rows):
        return directory / DATASET_YAML
    if directory.exists() and marker is None and any(directory.iterdir()):
        raise ValueError(
            f"{directory} exists and is not a synthetic log (no {MARKER}); choose another "
            "directory or remove it"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        started = time.perf_counter()
        counts = _write_tables(spec, staging, chunk_rows, progress)
        (staging / DATASET_YAML).write_text(_dataset_yaml(spec))
        marker = {
            "spec": spec.to_json(),
            "generator_version": GENERATOR_VERSION,
            "chunk_rows": chunk_rows,
            **counts,
            "write_seconds": round(time.perf_counter() - started, 3),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700
        _replace_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory / DATASET_YAML


def _replace_directory(staging: Path, directory: Path) -> None:
    """Renames `staging` onto `directory`; an old log there is moved aside and deleted."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
    os.replace(directory, old / "log")
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def _dataset_yaml(spec: SyntheticLogSpec) -> str:
    return (
        f"# Synthetic log written by benchmarks/synthetic.py: {spec}\n"
        f"name: synthetic-{spec.rows}-{spec.users}-{spec.items}\n"
        "source: files\n"
        "interactions:\n"
        "  path: interactions.parquet\n"
        "  columns: {user_id: user_id, item_id: item_id, timestamp: timestamp}\n"
        "  label:\n"
        '    positive_if: "likes > 0"\n'
        "users:\n"
        "  path: users.parquet\n"
        "  columns: {user_id: user_id}\n"
        "  features:\n"
        "    - country\n"
        "items:\n"
        "  path: items.parquet\n"
        "  columns: {item_id: item_id}\n"
        "  features:\n"
        "    - category\n"
        f'    - {{name: tags, separator: "{TAG_SEPARATOR}", max_values: 3}}\n'
    )


@dataclass(frozen=True)
class _Catalog:
    """Item clusters and popularity, and the samplers' cumulative distributions."""

    item_cluster: np.ndarray  # (items,) cluster of each item
    by_cluster: np.ndarray  # item indices sorted by (cluster, in-cluster popularity rank)
    cluster_cdf: np.ndarray  # cluster c's items occupy (c, c + 1]: c + in-cluster cdf
    global_cdf: np.ndarray  # (items,) cdf of popularity over the whole catalog


def _catalog(rng: np.random.Generator, spec: SyntheticLogSpec) -> _Catalog:
    item_cluster = rng.integers(spec.clusters, size=spec.items)
    # Every cluster gets at least one item: the first `clusters` items name them in turn.
    item_cluster[: spec.clusters] = np.arange(spec.clusters)
    order = np.lexsort((rng.random(spec.items), item_cluster))  # by cluster, random inside
    sizes = np.bincount(item_cluster, minlength=spec.clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(spec.items) - np.repeat(starts, sizes)  # in-cluster rank, sorted order
    weight = 1.0 / (rank + 1.0) ** POPULARITY_EXPONENT
    cluster_of_sorted = item_cluster[order]
    totals = np.bincount(cluster_of_sorted, weights=weight, minlength=spec.clusters)
    within = np.cumsum(weight) - np.repeat(np.cumsum(totals) - totals, sizes)
    cluster_cdf = cluster_of_sorted + within / totals[cluster_of_sorted]
    cluster_cdf[np.cumsum(sizes) - 1] = np.arange(spec.clusters) + 1.0  # exact upper ends
    popularity = np.empty(spec.items)
    popularity[order] = weight
    global_cdf = np.cumsum(popularity) / popularity.sum()
    global_cdf[-1] = 1.0
    return _Catalog(item_cluster, order, cluster_cdf, global_cdf)


def _rows_per_user(rng: np.random.Generator, spec: SyntheticLogSpec) -> np.ndarray:
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, size=spec.users)
    extra = rng.multinomial(spec.rows - MIN_ROWS_PER_USER * spec.users, activity / activity.sum())
    return extra + MIN_ROWS_PER_USER


def _write_tables(
    spec: SyntheticLogSpec, directory: Path, chunk_rows: int, progress: bool
) -> dict[str, Any]:
    from tqdm import tqdm

    root = np.random.SeedSequence(spec.seed)
    setup_seed, users_seed, blocks_seed = root.spawn(3)
    rng = np.random.default_rng(setup_seed)
    catalog = _catalog(rng, spec)
    user_cluster = rng.integers(spec.clusters, size=spec.users)
    counts = _rows_per_user(rng, spec)

    user_table = _users_table(np.random.default_rng(users_seed), spec, user_cluster)
    pq.write_table(user_table, directory / "users.parquet")
    del user_table
    pq.write_table(_items_table(rng, spec, catalog), directory / "items.parquet")

    users = pa.array(user_ids(spec.users))
    items = pa.array(item_ids(spec.items))
    # Blocks of whole users: a block ends with the user whose rows reach a multiple of chunk_rows.
    crossing = np.searchsorted(np.cumsum(counts), np.arange(chunk_rows, spec.rows, chunk_rows))
    bounds = np.unique(np.concatenate([[0], np.minimum(crossing + 1, spec.users), [spec.users]]))
    block_seeds = blocks_seed.spawn(len(bounds) - 1)
    item_seen = np.zeros(spec.items, dtype=bool)
    positives = 0
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("timestamp", pa.int64()),
            ("likes", pa.int32()),
        ]
    )
    bar = tqdm(
        total=spec.rows,
        unit="rows",
        unit_scale=True,
        desc=f"synthetic log {spec.rows:,} rows",
        disable=not progress,
        mininterval=1.0,
    )
    with bar, pq.ParquetWriter(directory / "interactions.parquet", schema) as writer:
        for (first, last), seed in zip(itertools.pairwise(bounds), block_seeds, strict=True):
            block = _interaction_block(
                np.random.default_rng(seed), first, last, counts, user_cluster, catalog
            )
            user_index, item_index, timestamp, likes = block
            item_seen[item_index] = True
            positives += int((likes > 0).sum())
            table = pa.table(
                [users.take(user_index), items.take(item_index), timestamp, likes], schema=schema
            )
            writer.write_table(table, row_group_size=max(len(user_index), 1))
            bar.update(len(user_index))
            del block, user_index, item_index, timestamp, likes, table
    return {
        "rows": spec.rows,
        "users_with_rows": spec.users,
        "items_with_rows": int(item_seen.sum()),
        "positive_rows": positives,
        "max_rows_per_user": int(counts.max()),
        "blocks": len(bounds) - 1,
    }


def _interaction_block(
    rng: np.random.Generator,
    first: int,
    last: int,
    counts: np.ndarray,
    user_cluster: np.ndarray,
    catalog: _Catalog,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of users [first, last): user and item indices, timestamps and likes."""
    block_counts = counts[first:last]
    size = int(block_counts.sum())
    user_index = np.repeat(np.arange(first, last, dtype=np.int32), block_counts)
    cluster = user_cluster[user_index]
    preferred = rng.random(size) < PREFERENCE
    draw = rng.random(size)
    item_index = np.empty(size, dtype=np.int64)
    in_cluster = np.searchsorted(
        catalog.cluster_cdf, cluster[preferred] + draw[preferred], side="right"
    )
    item_index[preferred] = catalog.by_cluster[in_cluster]
    item_index[~preferred] = np.searchsorted(catalog.global_cdf, draw[~preferred], side="right")
    # A popular draw outside the preferred share may still land in the preferred cluster.
    preferred = catalog.item_cluster[item_index] == cluster
    rate = np.where(preferred, LIKE_RATE[True], LIKE_RATE[False])
    likes = np.where(rng.random(size) < rate, rng.geometric(0.5, size=size), 0)

    # Strictly increasing seconds per user: sort each user's times, add the position in the user.
    times = rng.integers(0, SPAN_SECONDS, size=size)
    order = np.lexsort((times, user_index))
    starts = np.concatenate([[0], np.cumsum(block_counts)[:-1]])
    position = np.arange(size) - np.repeat(starts, block_counts)
    timestamp = START_TIME + times[order] + position
    return (
        user_index,  # already sorted: order only permutes rows within each user
        item_index[order].astype(np.int32),
        timestamp.astype(np.int64),
        likes[order].astype(np.int32),
    )


def _users_table(
    rng: np.random.Generator, spec: SyntheticLogSpec, user_cluster: np.ndarray
) -> pa.Table:
    countries = np.array(COUNTRIES)
    hinted = rng.random(spec.users) < COUNTRY_HINT
    country = np.where(
        hinted,
        user_cluster % len(COUNTRIES),
        rng.integers(len(COUNTRIES), size=spec.users),
    )
    return pa.table({"user_id": user_ids(spec.users), "country": countries[country]})


def _items_table(rng: np.random.Generator, spec: SyntheticLogSpec, catalog: _Catalog) -> pa.Table:
    cluster = catalog.item_cluster
    width = len(str(spec.clusters - 1))
    category = np.char.add("c", np.char.zfill(cluster.astype(str), width))
    own_tag = np.char.add(
        np.char.add(category, "-"), rng.integers(TAGS_PER_CLUSTER, size=spec.items).astype(str)
    )
    tags = own_tag
    for _ in range(2):  # 0 to 2 generic tags
        generic = np.char.add("g", rng.integers(GENERIC_TAGS, size=spec.items).astype(str))
        with_generic = np.char.add(np.char.add(tags, TAG_SEPARATOR), generic)
        tags = np.where(rng.random(spec.items) < 0.5, with_generic, tags)
    return pa.table({"item_id": item_ids(spec.items), "category": category, "tags": tags})


__all__ = ["SyntheticLogSpec", "cached_log", "read_marker", "write_synthetic_log"]
