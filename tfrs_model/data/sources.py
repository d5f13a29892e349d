"""Resolves a `DataConfig` to an `InteractionData`: MovieLens from a directory or the download
cache, or a tabular dataset described by a config file."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from tfrs_model.config import DataConfig
from tfrs_model.data.download import fetch_movielens
from tfrs_model.data.movielens import DATASET_FORMATS, load_movielens
from tfrs_model.data.schema import InteractionData
from tfrs_model.errors import DataError

TABULAR = "tabular"


def load_data(
    config: DataConfig, cache_dir: Path, *, environ: Mapping[str, str] | None = None
) -> InteractionData:
    """Loads the interactions a run trains on.

    Args:
      config: `dataset` names a MovieLens variant, or `tabular` with `dataset_config` set.
      cache_dir: where MovieLens archives are downloaded when `data_dir` is not given.
      environ: where a tabular config's `postgres.dsn_env` is looked up (the CLI passes
        `os.environ`); None means no PostgreSQL connection string is available.

    Raises:
      DataError: unknown dataset, unreadable files, or a failed download.
    """
    if config.dataset == TABULAR or config.dataset_config:
        if not config.dataset_config:
            raise DataError("dataset 'tabular' needs --dataset-config FILE (a YAML dataset config)")
        try:
            tabular = importlib.import_module("tfrs_model.data.tabular")
        except ModuleNotFoundError as error:
            raise DataError("tabular datasets are not available in this build") from error
        return tabular.load_tabular(Path(config.dataset_config), config, environ=environ)
    if config.dataset not in DATASET_FORMATS:
        raise DataError(
            f"unknown dataset {config.dataset!r}; use one of {', '.join(DATASET_FORMATS)}, or "
            "--dataset-config FILE for your own interaction logs"
        )
    if config.data_dir:
        directory = Path(config.data_dir)
    else:
        directory = fetch_movielens(config.dataset, cache_dir)
    return load_movielens(config.dataset, directory, drop_duplicates=config.drop_duplicates)
