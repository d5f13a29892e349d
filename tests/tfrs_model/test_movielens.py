"""The MovieLens parsers on tiny files written by the tests, in each GroupLens layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tfrs_model.config import DataConfig
from tfrs_model.data.movielens import detect_format, load_movielens
from tfrs_model.data.sources import load_data
from tfrs_model.data.synthetic import DATASET_FOR_LAYOUT, make_synthetic, write_movielens
from tfrs_model.errors import DataError

# u.genre lists the genre columns of u.item, in order. Three genres keep the fixtures short.
U_GENRE = "unknown|0\nAction|1\nComedy|2\n\n"
# "Café" is written in latin-1, as GroupLens does (é is the single byte 0xE9).
U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x/1|0|0|1\n"
    "2|Heat (1995)|01-Jan-1995||http://x/2|0|1|1\n"
    "3|Café Society (1999)|01-Jan-1999||http://x/3|1|0|0\n"
)
U_USER = "1|24|M|technician|85711\n2|17|F|student|T8H1N\n"
U_DATA = "1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t3\t4\t881250951\n"


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_bytes(text.encode("latin-1"))
    return directory


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "ml-100k",
        {"u.genre": U_GENRE, "u.item": U_ITEM, "u.user": U_USER, "u.data": U_DATA},
    )


def test_100k_layout_by_hand(ml100k: Path):
    data = load_movielens("movielens-100k", ml100k)
    assert data.interactions[["user_id", "item_id", "rating", "timestamp"]].values.tolist() == [
        ["1", "1", 5.0, 881250949],
        ["1", "2", 3.0, 881250950],
        ["2", "3", 4.0, 881250951],
    ]
    items = data.items.set_index("item_id")
    # Genre flags map to u.genre's names; Heat is Action and Comedy in this fixture.
    assert items["genres"].to_dict() == {
        "1": ("Comedy",),
        "2": ("Action", "Comedy"),
        "3": ("unknown",),
    }
    # Decoded from latin-1.
    assert items.loc["3", "title"] == "Café Society (1999)"
    # The year becomes a 5-year bucket: 1995 -> 1995, 1999 -> 1995.
    assert items["year_bucket"].to_dict() == {"1": "1995", "2": "1995", "3": "1995"}
    users = data.users.set_index("user_id")
    # Age 24 is in 18-24, age 17 under 18; the zip prefix is its first two characters.
    assert users.loc["1"].to_dict() == {
        "gender": "M",
        "age_bucket": "18-24",
        "occupation": "technician",
        "zip_prefix": "85",
    }
    assert users.loc["2", "age_bucket"] == "under-18"
    assert users.loc["2", "zip_prefix"] == "T8"
    assert [f.name for f in data.user_features] == [
        "gender",
        "age_bucket",
        "occupation",
        "zip_prefix",
    ]


def test_title_tokens_are_lowercase_words_without_the_year(ml100k: Path):
    items = load_movielens("movielens-100k", ml100k).items.set_index("item_id")
    assert items.loc["1", "title_tokens"] == ("toy", "story")
    assert items.loc["2", "title_tokens"] == ("heat",)


def test_1m_layout_by_hand(tmp_path: Path):
    directory = _write(
        tmp_path / "ml-1m",
        {
            "ratings.dat": "1::10::5::978300760\n2::10::3::978302109\n",
            "movies.dat": "10::GoldenEye (1995)::Action|Adventure|Thriller\n",
            # Age code 25 is 25-34; occupation code 12 is "programmer" in the ML-1M README.
            "users.dat": "1::F::1::10::48067\n2::M::25::12::70072\n",
        },
    )
    data = load_movielens("movielens-1m", directory)
    assert data.interactions["rating"].tolist() == [5.0, 3.0]
    assert data.items.set_index("item_id").loc["10", "genres"] == (
        "Action",
        "Adventure",
        "Thriller",
    )
    users = data.users.set_index("user_id")
    assert users.loc["1", "age_bucket"] == "under-18"
    assert users.loc["1", "occupation"] == "K-12 student"  # code 10
    assert users.loc["2", "age_bucket"] == "25-34"
    assert users.loc["2", "occupation"] == "programmer"


def test_1m_layout_without_users_file_has_no_user_features(tmp_path: Path):
    directory = _write(
        tmp_path / "ml-1m",
        {"ratings.dat": "1::10::5::978300760\n", "movies.dat": "10::X (1995)::Drama\n"},
    )
    data = load_movielens("movielens-1m", directory)
    assert data.user_features == ()
    assert data.users["user_id"].tolist() == ["1"]


def test_csv_layout_by_hand(tmp_path: Path):
    directory = _write(
        tmp_path / "ml-latest-small",
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n1,3,4.0,964981247\n",
            # A quoted title with a comma, and a movie without genres.
            "movies.csv": (
                "movieId,title,genres\n"
                '1,"American President, The (1995)",Comedy|Drama|Romance\n'
                "3,Grumpier Old Men (1995),(no genres listed)\n"
            ),
        },
    )
    data = load_movielens("movielens-latest-small", directory)
    # Sorted by time: movie 3 (964981247) before movie 1.
    assert data.interactions[["item_id", "rating"]].values.tolist() == [["3", 4.0], ["1", 4.5]]
    items = data.items.set_index("item_id")
    assert items.loc["1", "title"] == "American President, The (1995)"
    assert items.loc["1", "genres"] == ("Comedy", "Drama", "Romance")
    assert items.loc["3", "genres"] == ()
    assert data.user_features == ()


@pytest.mark.parametrize("layout", ["100k", "1m", "csv"])
def test_synthetic_data_round_trips_through_every_layout(tmp_path: Path, layout: str):
    original = make_synthetic(num_users=30, num_items=24, interactions_per_user=6, seed=3)
    directory = write_movielens(original, tmp_path / layout, layout)
    loaded = load_movielens(DATASET_FOR_LAYOUT[layout], directory)
    # Ids are categoricals over each side table, whose row order depends on the layout (the CSV
    # family has no users file): compare the id values.
    ids = {"user_id": str, "item_id": str}
    pd.testing.assert_frame_equal(
        loaded.interactions.astype(ids), original.interactions.astype(ids)
    )
    item_columns = ["item_id", "title", "genres", "title_tokens", "year_bucket"]
    pd.testing.assert_frame_equal(
        loaded.items[item_columns].sort_values("item_id").reset_index(drop=True),
        original.items[item_columns].sort_values("item_id").reset_index(drop=True),
    )
    if layout != "csv":  # the CSV family has no users file
        user_columns = ["user_id", "gender", "age_bucket", "occupation", "zip_prefix"]
        pd.testing.assert_frame_equal(
            loaded.users[user_columns].sort_values("user_id").reset_index(drop=True),
            original.users[user_columns].sort_values("user_id").reset_index(drop=True),
        )


# ---- bad inputs: one DataError each, saying what is wrong and how to fix it -----------------


def test_unknown_dataset(ml100k: Path):
    with pytest.raises(DataError, match="unknown dataset 'movielens-7m'; known: movielens-100k"):
        load_movielens("movielens-7m", ml100k)
    with pytest.raises(DataError, match=r"unknown dataset 'netflix'.*--dataset-config"):
        load_data(DataConfig(dataset="netflix", data_dir=str(ml100k)), ml100k)


def test_missing_data_dir(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        load_movielens("movielens-100k", tmp_path / "nowhere")


def test_directory_without_movielens_files_lists_what_each_layout_needs(tmp_path: Path):
    with pytest.raises(DataError, match=r"100k: u.data, u.item, u.user.*pass the extracted"):
        detect_format(tmp_path)


def test_layout_that_does_not_match_the_dataset(ml100k: Path):
    with pytest.raises(DataError, match="looks like the MovieLens 100k layout but --dataset"):
        load_movielens("movielens-1m", ml100k)


def test_misnamed_csv_columns(tmp_path: Path):
    directory = _write(
        tmp_path / "ml",
        {
            "ratings.csv": "user,movie,rating,timestamp\n1,1,4.0,964982703\n",
            "movies.csv": "movieId,title,genres\n1,X (1995),Drama\n",
        },
    )
    with pytest.raises(DataError, match=r"ratings.csv has columns \['user', 'movie'.*expected"):
        load_movielens("movielens-latest-small", directory)


def test_empty_ratings_file(ml100k: Path):
    (ml100k / "u.data").write_text("")
    with pytest.raises(DataError, match="no interactions: the source is empty"):
        load_movielens("movielens-100k", ml100k)


def test_unparseable_rating(ml100k: Path):
    (ml100k / "u.data").write_text("1\t1\tfive\t881250949\n")
    with pytest.raises(DataError, match=r"rating: 1 value\(s\) are not numbers \(e.g. 'five'\)"):
        load_movielens("movielens-100k", ml100k)


def test_unparseable_timestamp(ml100k: Path):
    (ml100k / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t5\tsoon\n")
    with pytest.raises(DataError, match=r"1 value\(s\) are not epoch seconds.*\(e.g. 'soon'\)"):
        load_movielens("movielens-100k", ml100k)


def test_duplicate_rows_and_drop_duplicates(ml100k: Path):
    (ml100k / "u.data").write_text(U_DATA + "1\t1\t5\t881250949\n")
    with pytest.raises(DataError, match=r"1 duplicate.*pass --drop-duplicates"):
        load_movielens("movielens-100k", ml100k)
    data = load_movielens("movielens-100k", ml100k, drop_duplicates=True)
    assert len(data.interactions) == 3
    assert [(r.step, r.removed) for r in data.reports] == [("drop duplicate interactions", 1)]
