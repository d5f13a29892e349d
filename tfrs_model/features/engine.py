"""The out-of-core columnar engine (DuckDB): one configured connection, errors that name the fix.

DuckDB runs the preprocessing queries over the whole log (histories, shards) within a memory
limit and spills to a temporary directory beyond it, so a log larger than memory is processed
instead of failing. A query's progress (DuckDB's own estimate, in percent) is shown with its
rate and ETA: a bar on a terminal, a log line every 30 s elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from tfrs_model.errors import ConfigError, DataError
from tfrs_model.meter import Meter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How the preprocessing engine may use the machine.

    Attributes:
      memory_limit_gb: DuckDB's memory limit; larger intermediate results spill to disk.
      threads: worker threads; None uses every core.
      temp_directory: where spilled data goes; None uses a fresh directory under the system's
        temporary directory, removed afterwards.
    """

    memory_limit_gb: float = 4.0
    threads: int | None = None
    temp_directory: str | None = None

    def __post_init__(self) -> None:
        if self.memory_limit_gb <= 0:
            raise ConfigError(f"memory_limit_gb must be > 0, got {self.memory_limit_gb}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or None for all cores), got {self.threads}")


@contextlib.contextmanager
def connect(config: EngineConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with the limits of `config`, closed afterwards."""
    with contextlib.ExitStack() as stack:
        spill = config.temp_directory or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="twotower-duckdb-")
        )
        connection = duckdb.connect(":memory:")
        stack.callback(connection.close)
        connection.execute(f"SET memory_limit = '{config.memory_limit_gb * 1024:.0f}MB'")
        connection.execute(f"SET temp_directory = '{spill}'")
        connection.execute("SET preserve_insertion_order = false")
        connection.execute(f"SET threads = {config.threads or os.cpu_count() or 1}")
        # Progress is tracked for `run` to report, never printed by DuckDB itself.
        connection.execute("SET enable_progress_bar = true")
        connection.execute("SET enable_progress_bar_print = false")
        yield connection


def run(connection: duckdb.DuckDBPyConnection, sql: str, what: str, config: EngineConfig):
    """Runs `sql`; an engine out of memory becomes a DataError naming the limit and the flag.

    Raises:
      DataError: DuckDB ran out of memory (even with spilling) or failed on the data.
    """
    try:
        with query_progress(connection, what):
            return connection.execute(sql)
    except duckdb.OutOfMemoryException as error:
        raise DataError(
            f"{what}: the preprocessing engine ran out of memory within its limit of "
            f"{config.memory_limit_gb:g} GB; raise it (--memory-limit-gb) or free disk for "
            "spilling"
        ) from error
    except duckdb.Error as error:
        raise DataError(f"{what} failed in the preprocessing engine: {error}") from error


@contextlib.contextmanager
def query_progress(
    connection: duckdb.DuckDBPyConnection,
    what: str,
    poll_s: float = 0.5,
    log_every_s: float = 30.0,
) -> Iterator[None]:
    """Reports the progress of the query that runs inside the block, polled from a thread
    (DuckDB answers `query_progress` while a query runs on the same connection)."""
    done = threading.Event()

    def poll() -> None:
        with Meter(100, "%", what, logger=logger, log_every_s=log_every_s) as meter:
            while not done.wait(poll_s):
                percent = connection.query_progress()
                if percent >= 0:
                    meter.update_to(int(percent))

    watcher = threading.Thread(target=poll, name="engine-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
