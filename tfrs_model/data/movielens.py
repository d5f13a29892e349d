"""Parsers for the MovieLens file formats, producing the normalized `InteractionData`.

Formats (GroupLens' own layouts):
- 100K: `u.data` (tab: user, item, rating, timestamp), `u.item` (`|`, latin-1, 19 genre flags),
  `u.user` (`|`: user, age, gender, occupation, zip), `u.genre`.
- 1M: `ratings.dat`, `movies.dat`, `users.dat`, `::`-separated, latin-1.
- CSV family (latest-small, 20M, 25M, 32M): `ratings.csv`, `movies.csv` (genres `|`-joined).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfrs_model.data.schema import FeatureColumn, InteractionData, build_dataset
from tfrs_model.errors import DataError

MAX_GENRES = 6
MAX_TITLE_TOKENS = 8

# ML-1M's age codes are the lower bounds of these buckets; 100K ages are mapped onto the same.
_AGE_BOUNDS = (0, 18, 25, 35, 45, 50, 56)
_AGE_LABELS = ("under-18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
# ML-1M encodes occupations as integers; the README lists their names.
_ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")

USER_FEATURES = (
    FeatureColumn("gender"),
    FeatureColumn("age_bucket"),
    FeatureColumn("occupation"),
    FeatureColumn("zip_prefix"),
)
ITEM_FEATURES = (
    FeatureColumn("genres", MAX_GENRES),
    FeatureColumn("title_tokens", MAX_TITLE_TOKENS),
    FeatureColumn("year_bucket"),
)


@dataclass(frozen=True)
class MovieLensFormat:
    """One GroupLens layout: the files that identify it and the function that parses it."""

    name: str
    marker_files: tuple[str, ...]


FORMAT_100K = MovieLensFormat("100k", ("u.data", "u.item", "u.user"))
FORMAT_1M = MovieLensFormat("1m", ("ratings.dat", "movies.dat"))
FORMAT_CSV = MovieLensFormat("csv", ("ratings.csv", "movies.csv"))

DATASET_FORMATS = {
    "movielens-100k": FORMAT_100K,
    "movielens-1m": FORMAT_1M,
    "movielens-latest-small": FORMAT_CSV,
    "movielens-20m": FORMAT_CSV,
    "movielens-25m": FORMAT_CSV,
    "movielens-32m": FORMAT_CSV,
}


def _age_bucket(ages: pd.Series) -> pd.Series:
    index = np.searchsorted(_AGE_BOUNDS, ages.to_numpy(), side="right") - 1
    return pd.Series(np.asarray(_AGE_LABELS)[np.clip(index, 0, len(_AGE_LABELS) - 1)])


def _title_features(titles: pd.Series) -> pd.DataFrame:
    """Year bucket (5-year bins) and lower-cased title tokens, the year removed."""
    years = pd.to_numeric(titles.str.extract(_YEAR, expand=False), errors="coerce")
    bucket = (years // 5 * 5).map(lambda year: "" if pd.isna(year) else str(int(year)))
    bare = titles.str.replace(_YEAR, "", regex=True).str.lower()
    tokens = bare.str.split(_TOKEN_SPLIT).map(
        lambda parts: tuple(p for p in parts if p)[:MAX_TITLE_TOKENS]
    )
    return pd.DataFrame({"year_bucket": bucket.to_numpy(), "title_tokens": tokens.to_numpy()})


def _items_frame(item_ids: pd.Series, titles: pd.Series, genres: pd.Series) -> pd.DataFrame:
    titles = titles.fillna("").astype(str)
    derived = _title_features(titles)
    return pd.DataFrame(
        {
            "item_id": item_ids.astype(str).to_numpy(),
            "title": titles.to_numpy(),
            "genres": genres.map(lambda g: tuple(g)[:MAX_GENRES]).to_numpy(),
            "year_bucket": derived["year_bucket"].to_numpy(),
            "title_tokens": derived["title_tokens"].to_numpy(),
        }
    )


def _read(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
        raise DataError(
            f"cannot parse {path}: {error}; is it an unmodified GroupLens file?"
        ) from error


def _parse_100k(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = _read(
        directory / "u.data", sep="\t", header=None,
        names=["user_id", "item_id", "rating", "timestamp"],
    )  # fmt: skip
    genre_names = _read(directory / "u.genre", sep="|", header=None, encoding="latin-1")[0]
    columns = ["item_id", "title", "release", "video_release", "url", *genre_names]
    raw_items = _read(directory / "u.item", sep="|", header=None, names=columns, encoding="latin-1")
    flags = raw_items[list(genre_names)].to_numpy(dtype=bool)
    genres = pd.Series([tuple(genre_names[row]) for row in flags])
    items = _items_frame(raw_items["item_id"], raw_items["title"], genres)
    raw_users = _read(
        directory / "u.user", sep="|", header=None,
        names=["user_id", "age", "gender", "occupation", "zip"], dtype={"zip": str},
    )  # fmt: skip
    users = pd.DataFrame(
        {
            "user_id": raw_users["user_id"].astype(str),
            "gender": raw_users["gender"].astype(str),
            "age_bucket": _age_bucket(raw_users["age"]),
            "occupation": raw_users["occupation"].astype(str),
            "zip_prefix": raw_users["zip"].astype(str).str[:2],
        }
    )
    return ratings, users, items


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    return _read(path, sep="::", engine="python", header=None, names=names, encoding="latin-1")


def _parse_1m(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    ratings = _read_dat(directory / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    movies = _read_dat(directory / "movies.dat", ["item_id", "title", "genres"])
    items = _items_frame(movies["item_id"], movies["title"], movies["genres"].str.split("|"))
    users = None
    if (directory / "users.dat").exists():
        raw = _read_dat(directory / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        occupation = raw["occupation"].astype(int).clip(0, len(_ML1M_OCCUPATIONS) - 1)
        users = pd.DataFrame(
            {
                "user_id": raw["user_id"].astype(str),
                "gender": raw["gender"].astype(str),
                "age_bucket": _age_bucket(raw["age"]),
                "occupation": np.asarray(_ML1M_OCCUPATIONS)[occupation],
                "zip_prefix": raw["zip"].astype(str).str[:2],
            }
        )
    return ratings, users, items


def _parse_csv(directory: Path) -> tuple[pd.DataFrame, None, pd.DataFrame]:
    ratings = _read(directory / "ratings.csv")
    expected = {"userId", "movieId", "rating", "timestamp"}
    if not expected <= set(ratings.columns):
        raise DataError(
            f"{directory / 'ratings.csv'} has columns {list(ratings.columns)}; expected "
            f"{sorted(expected)} (GroupLens' CSV layout)"
        )
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    movies = _read(directory / "movies.csv")
    genres = (
        movies["genres"]
        .fillna("")
        .str.split("|")
        .map(lambda g: tuple(x for x in g if x and x != "(no genres listed)"))
    )
    items = _items_frame(movies["movieId"], movies["title"], genres)
    return ratings, None, items


_PARSERS = {"100k": _parse_100k, "1m": _parse_1m, "csv": _parse_csv}


def detect_format(directory: Path) -> MovieLensFormat:
    """The layout whose marker files are all present in `directory`.

    Raises:
      DataError: no known layout matches; the message lists what each layout needs.
    """
    for fmt in (FORMAT_100K, FORMAT_1M, FORMAT_CSV):
        if all((directory / name).is_file() for name in fmt.marker_files):
            return fmt
    needs = "; ".join(
        f"{f.name}: {', '.join(f.marker_files)}" for f in (FORMAT_100K, FORMAT_1M, FORMAT_CSV)
    )
    raise DataError(
        f"{directory} holds no MovieLens files I recognise (needs one of: {needs}); pass the "
        "extracted directory itself (e.g. --data-dir path/to/ml-100k)"
    )


def load_movielens(
    dataset: str, directory: Path, *, drop_duplicates: bool = False
) -> InteractionData:
    """Parses an extracted MovieLens directory into the normalized schema.

    Args:
      dataset: one of `DATASET_FORMATS`; its expected layout must match the files found.
      directory: the extracted archive directory (e.g. `ml-100k/`).

    Raises:
      DataError: unknown dataset, missing directory or files, or unparseable content.
    """
    if dataset not in DATASET_FORMATS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_FORMATS)}")
    if not directory.is_dir():
        raise DataError(f"--data-dir {directory} does not exist or is not a directory")
    found = detect_format(directory)
    expected = DATASET_FORMATS[dataset]
    if found != expected:
        raise DataError(
            f"{directory} looks like the MovieLens {found.name} layout but --dataset {dataset} "
            f"expects {expected.name} ({', '.join(expected.marker_files)}); fix --dataset or --data-dir"
        )
    ratings, users, items = _PARSERS[found.name](directory)
    return build_dataset(
        dataset,
        ratings,
        users,
        items,
        user_features=USER_FEATURES if users is not None else (),
        item_features=ITEM_FEATURES,
        drop_duplicates=drop_duplicates,
    )
