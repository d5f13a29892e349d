"""Reads tables from PostgreSQL with a server-side cursor, in chunks, inside a READ ONLY
transaction.

The default queries fit a short-video platform:

    stream_viewer(user_id, post_id, likes, view_count, saved 'Y'/'N', created_at)
    users(id, country, supported_languages text[] or 'en,fr')
    post(post_id, user_id -> users.id (the owner), country, lang)

A post's effective country is its own, else its owner's, else `PostgresConfig.default_country`
(COALESCE over a LEFT JOIN on users). Every query is configurable in the dataset config.

The connection string is passed in by the caller (the CLI reads it from an environment variable
or a flag); it is never logged or put in an error message except through `redact`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from tfrs_model.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_DSN_ENV = "TWOTOWER_PG_DSN"
DEFAULT_COUNTRY_PARAMETER = "%(default_country)s"

DEFAULT_QUERIES = {
    "interactions": (
        "SELECT user_id, post_id AS item_id, created_at AS timestamp, likes, view_count, saved "
        "FROM stream_viewer"
    ),
    "users": "SELECT id AS user_id, country, supported_languages AS languages FROM users",
    "items": (
        "SELECT p.post_id AS item_id, p.user_id AS owner, "
        "COALESCE(NULLIF(p.country, ''), NULLIF(o.country, ''), "
        f"{DEFAULT_COUNTRY_PARAMETER}) AS country, p.lang "
        "FROM post p LEFT JOIN users o ON o.id = p.user_id"
    ),
}
"""Queries used for a table whose section sets no `query`; columns already carry schema names."""

DEFAULT_LABEL = "likes > 0 or saved == 'Y' or view_count >= 3"
"""The positive rule used with the default interactions query when the config sets none."""

# (name, multivalued) of the features the default users and items queries select.
DEFAULT_FEATURES = {
    "interactions": (),
    "users": (("country", False), ("languages", True)),
    "items": (("owner", False), ("country", False), ("lang", False)),
}


@dataclass(frozen=True)
class PostgresConfig:
    """How to reach PostgreSQL and read from it.

    Attributes:
      dsn_env: environment variable holding the connection string (read by the CLI only).
      itersize: rows fetched per round trip from the server-side cursor; also the chunk size
        converted to pandas at a time, which bounds the memory of raw rows.
      connect_timeout_s: seconds to wait for the server before failing.
      statement_timeout_s: server-side limit per query; 0 for none.
      default_country: effective country of a post when neither it nor its owner has one.
    """

    dsn_env: str = DEFAULT_DSN_ENV
    itersize: int = 10_000
    connect_timeout_s: int = 10
    statement_timeout_s: int = 0
    default_country: str = ""

    def __post_init__(self) -> None:
        if self.itersize < 1:
            raise DataError(f"postgres.itersize must be >= 1, got {self.itersize}")
        if self.connect_timeout_s < 1 or self.statement_timeout_s < 0:
            raise DataError("postgres.connect_timeout_s must be >= 1, statement_timeout_s >= 0")


_URL_PASSWORD = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|\S+)")


def _passwords(dsn: str) -> list[str]:
    found = [m.group("password") for m in _URL_PASSWORD.finditer(dsn)]
    found += [m.group("password").strip("'") for m in _KEYWORD_PASSWORD.finditer(dsn)]
    return [p for p in found if p]


def redact(dsn: str) -> str:
    """`dsn` with its password replaced by `***`, for messages and logs.

    Handles URLs (`postgresql://user:secret@host/db`) and key-value strings
    (`host=... password=secret`), including a `password=` URL query parameter.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***{m.group('tail')}", dsn)
    text = re.sub(r"([?&]password=)[^&\s]*", r"\1***", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


def _scrub(message: str, dsn: str) -> str:
    """`message` with every password of `dsn` (and `dsn` itself) redacted."""
    message = message.replace(dsn, redact(dsn))
    for password in _passwords(dsn):
        message = message.replace(password, "***")
    return " ".join(message.split())  # libpq's messages span lines; keep errors to one


def _connect(dsn: str, config: PostgresConfig):
    import psycopg

    try:
        connection = psycopg.connect(dsn, connect_timeout=config.connect_timeout_s)
    # `from None` below on purpose: psycopg's own messages may carry the password of the
    # connection string, so only the scrubbed text (`_scrub`, `redact`) may reach a log.
    except psycopg.OperationalError as error:
        detail = _scrub(str(error), dsn)
        if "password" in detail.lower() or "authentication" in detail.lower():
            fix = "check the user and password in the connection string"
        else:
            fix = "check that the server is running and the host, port and database are right"
        raise DataError(f"cannot connect to PostgreSQL at {redact(dsn)}: {detail}; {fix}") from None
    except psycopg.ProgrammingError as error:  # a malformed connection string
        raise DataError(
            f"bad PostgreSQL connection string {redact(dsn)}: {_scrub(str(error), dsn)}"
        ) from None
    connection.read_only = True
    return connection


def read_query_chunks(
    dsn: str,
    query: str,
    config: PostgresConfig,
    *,
    table: str,
    params: dict[str, object] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yields the rows of `query` as DataFrames of at most `config.itersize` rows.

    Rows come through a named (server-side) cursor in a READ ONLY transaction, so the client holds
    one chunk of raw rows at a time. The connection closes when the iterator is exhausted or
    closed.

    Args:
      dsn: a libpq connection string or URL; only its redacted form appears in messages.
      query: SQL; it may use `%(name)s` placeholders filled from `params`.
      table: the dataset table name (interactions, users, items), for messages.

    Raises:
      DataError: unreachable server, failed authentication, a missing table or column, or any
        other SQL error; the message names the table and carries the redacted DSN.
    """
    import psycopg

    connection = _connect(dsn, config)
    try:
        with connection.transaction():
            if config.statement_timeout_s:
                connection.execute(
                    f"SET LOCAL statement_timeout = {int(config.statement_timeout_s) * 1000}"
                )
            with connection.cursor(name=f"twotower_{table}") as cursor:
                cursor.itersize = config.itersize
                try:
                    cursor.execute(query, params or None)
                    names = [column.name for column in cursor.description or ()]
                    while True:
                        rows = cursor.fetchmany(config.itersize)
                        if not rows:
                            break
                        yield pd.DataFrame.from_records(rows, columns=names)
                except psycopg.errors.UndefinedTable as error:
                    raise DataError(
                        f"{table}: the query refers to a table that does not exist "
                        f"({_first_line(error)}) on {redact(dsn)}; create it or set "
                        f"{table}.query in the dataset config"
                    ) from None
                except psycopg.errors.UndefinedColumn as error:
                    raise DataError(
                        f"{table}: the query refers to a column that does not exist "
                        f"({_first_line(error)}) on {redact(dsn)}; fix {table}.query or the "
                        "table"
                    ) from None
                except psycopg.Error as error:
                    raise DataError(
                        f"{table}: query failed on {redact(dsn)}: {_scrub(_first_line(error), dsn)}"
                    ) from None
    finally:
        connection.close()


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def query_parameters(query: str, config: PostgresConfig) -> dict[str, object] | None:
    """The named parameters `query` uses, of those the config provides (`default_country`)."""
    if DEFAULT_COUNTRY_PARAMETER in query:
        return {"default_country": config.default_country or None}
    return None


def chunk_reader(dsn: str, config: PostgresConfig) -> Callable[[str, str], Iterator[pd.DataFrame]]:
    """`read(table, query)` for the tabular loader, bound to one DSN and config."""

    def read(table: str, query: str) -> Iterator[pd.DataFrame]:
        logger.info("reading %s from PostgreSQL %s", table, redact(dsn))
        return read_query_chunks(
            dsn, query, config, table=table, params=query_parameters(query, config)
        )

    return read
