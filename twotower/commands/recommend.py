"""`twotower recommend`: top-k recommendations for many users from an export, to a file."""

from __future__ import annotations

import argparse
from pathlib import Path

ALL_USERS = "all"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recommend", help="write top-k recommendations for many users to Parquet or CSV"
    )
    parser.add_argument(
        "--saved-model", required=True, help="an exported version, e.g. models/twotower/1"
    )
    parser.add_argument(
        "--users",
        default=ALL_USERS,
        help="'all' (every user baked into the export, the default), a text file with one "
        "user id per line, or a .csv/.parquet with a user_id column",
    )
    parser.add_argument("--k", type=int, help="results per user (default: the export's k)")
    parser.add_argument("--out", required=True, help="output file: .parquet or .csv")
    parser.add_argument("--batch-size", type=int, default=1024, help="users per call")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from export.batch import read_user_ids, recommend_to_file

    users = None if args.users == ALL_USERS else read_user_ids(Path(args.users))
    result = recommend_to_file(
        Path(args.saved_model),
        Path(args.out),
        users,
        k=args.k,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    print(
        f"{result.rows} recommendations for {result.users} users (k={result.k}) -> {result.path} "
        f"({result.users_per_second:,.0f} users/s)"
    )
    return 0
