"""Datasets declared in a YAML file: interactions, users and items from CSV, Parquet or PostgreSQL.

    name: short-video
    source: files                    # or postgres (then see the `postgres:` section)
    interactions:
      path: stream_viewer.parquet    # relative to the YAML file; .csv, .parquet or .pq
      columns: {user_id: user_id, item_id: post_id, timestamp: created_at}
      label: {positive_if: "likes > 0 or saved == 'Y' or view_count >= 3"}
      weight: {default: 1.0, rules: [{if: "saved == 'Y'", value: 3.0}]}
    users:
      path: users.csv
      columns: {user_id: id}
      features:
        - country
        - {name: languages, column: supported_languages, multivalued: true, separator: ","}
    items:
      path: post.csv
      columns: {item_id: post_id, title: caption}
      features: [owner, country, lang, {name: tags, multivalued: true, separator: "|"}]

`columns` maps schema names to source names (unmapped names are read as they are). Rules use the
source column names (see `tfrs_model.data.rules`).

Positives: interactions that fail `label.positive_if` are dropped (counted in a `FilterReport`),
so every remaining interaction is a positive. The rating column stays NaN unless `rating` is mapped,
in which case `DataConfig.min_positive_rating` applies on top of the label rule as for MovieLens.
Weights: the value of the first `weight.rules` entry a row satisfies, else `weight.default`.

Files (`source: files`) are read by DuckDB (`tfrs_model.data.columnar`): the rules run as SQL
over the whole file within the engine's memory limit, and the ids come back as categoricals, never
as a Python string per interaction. PostgreSQL tables are read in cursor fetches, and each chunk
is reduced to the mapped columns and the positives (rules evaluated by pandas) before the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tfrs_model.config import DataConfig
from tfrs_model.data import columnar
from tfrs_model.data.postgres import (
    DEFAULT_FEATURES,
    DEFAULT_LABEL,
    DEFAULT_QUERIES,
    PostgresConfig,
)
from tfrs_model.data.rules import Rule, WeightConfig, WeightRule, parse_rule
from tfrs_model.data.schema import FeatureColumn, FilterReport, InteractionData, build_dataset
from tfrs_model.errors import DataError
from tfrs_model.features.engine import EngineConfig, connect

logger = logging.getLogger(__name__)

TABLES = ("interactions", "users", "items")
_KEYS = {"interactions": "user_id", "users": "user_id", "items": "item_id"}
_SCHEMA_COLUMNS = {
    "interactions": ("user_id", "item_id", "timestamp", "rating"),
    "users": ("user_id",),
    "items": ("item_id", "title"),
}
_REQUIRED = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
    "items": ("item_id",),
}
_RESERVED_FEATURES = ("user_id", "item_id", "history", "exclude", "title")
_FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

Reader = Callable[[str, "TableConfig"], Iterator[pd.DataFrame]]


@dataclass(frozen=True)
class FeatureSource:
    """One feature column of the users or items table.

    Attributes:
      name: the feature's name in the model (and in serving requests).
      column: source column; defaults to `name`.
      multivalued: the column holds lists (PostgreSQL arrays, or strings split on `separator`).
      separator: splits strings of a multi-valued column.
      max_values: keep at most this many values per row; None derives it from the data.
    """

    name: str
    column: str
    multivalued: bool = False
    separator: str = ","
    max_values: int | None = None


@dataclass(frozen=True)
class TableConfig:
    """Where one table comes from and how its columns map to the schema.

    Attributes:
      table: interactions, users or items.
      path: a CSV or Parquet file (source `files`).
      query: SQL (source `postgres`); None uses the short-video default.
      columns: (schema name, source name) pairs; unmapped schema names read the same name.
      features: side features (users and items).
      label: positive rule (interactions); None keeps every row.
      weight: weight rules (interactions); None gives weight 1.
    """

    table: str
    path: Path | None = None
    query: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    features: tuple[FeatureSource, ...] = ()
    label: Rule | None = None
    weight: WeightConfig | None = None

    def source_column(self, name: str) -> str:
        return dict(self.columns).get(name, name)


@dataclass(frozen=True)
class TabularConfig:
    """A parsed dataset config (see the module docstring)."""

    name: str
    source: Literal["files", "postgres"]
    interactions: TableConfig
    users: TableConfig | None = None
    items: TableConfig | None = None
    postgres: PostgresConfig | None = None


# -- parsing ----------------------------------------------------------------------------------


def _check_keys(values: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(values, Mapping):
        raise DataError(f"{where} must be a mapping of {', '.join(allowed)}, got {values!r}")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(allowed)}")


def _feature(value: Any, where: str) -> FeatureSource:
    if isinstance(value, str):
        value = {"name": value}
    _check_keys(value, ("name", "column", "multivalued", "separator", "max_values"), where)
    if not isinstance(value.get("name"), str) or not value["name"]:
        raise DataError(f"{where}: every feature needs a `name`")
    name = value["name"]
    if name in _RESERVED_FEATURES:
        raise DataError(f"{where}: feature name {name!r} is reserved; rename it")
    max_values = value.get("max_values")
    if max_values is not None and (not isinstance(max_values, int) or max_values < 1):
        raise DataError(f"{where}.max_values must be a positive integer, got {max_values!r}")
    multivalued = bool(value.get("multivalued", "separator" in value or max_values is not None))
    return FeatureSource(
        name=name,
        column=str(value.get("column", name)),
        multivalued=multivalued,
        separator=str(value.get("separator", ",")),
        max_values=max_values,
    )


def _weight(value: Any, where: str) -> WeightConfig:
    _check_keys(value, ("default", "rules"), where)
    rules = []
    for number, entry in enumerate(value.get("rules") or []):
        _check_keys(entry, ("if", "value"), f"{where}.rules[{number}]")
        if "if" not in entry or "value" not in entry:
            raise DataError(f"{where}.rules[{number}] needs `if: RULE` and `value: NUMBER`")
        rules.append(WeightRule(parse_rule(entry["if"]), _number(entry["value"], where)))
    return WeightConfig(
        default=_number(value.get("default", 1.0), f"{where}.default"), rules=tuple(rules)
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise DataError(f"{where} must be a non-negative number, got {value!r}")
    return float(value)


def _table(table: str, values: Any, source: str, base_dir: Path) -> TableConfig:
    allowed = ("path", "query", "columns", "features")
    if table == "interactions":
        allowed = ("path", "query", "columns", "label", "weight")
    _check_keys(values, allowed, table)
    columns = values.get("columns") or {}
    _check_keys(columns, _SCHEMA_COLUMNS[table], f"{table}.columns")
    path = values.get("path")
    query = values.get("query")
    if source == "files":
        if query is not None:
            raise DataError(f"{table}.query needs `source: postgres`; files use `path`")
        if not path:
            raise DataError(f"{table}.path is required with `source: files` (a .csv or .parquet)")
        path = Path(path) if Path(path).is_absolute() else base_dir / path
        if path.suffix.lower() not in _FILE_FORMATS:
            raise DataError(
                f"{table}.path {str(path)!r}: unknown format; use .csv, .parquet or .pq"
            )
    elif path is not None:
        raise DataError(f"{table}.path needs `source: files`; PostgreSQL tables use `query`")
    default_query = source == "postgres" and query is None
    if "features" in values:
        features = tuple(
            _feature(v, f"{table}.features[{i}]") for i, v in enumerate(values["features"] or [])
        )
    elif default_query:
        features = tuple(FeatureSource(n, n, multivalued=m) for n, m in DEFAULT_FEATURES[table])
    else:
        features = ()
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise DataError(f"{table}.features: duplicate feature names in {names}")
    label = weight = None
    if table == "interactions":
        label_values = values.get("label")
        if label_values is not None:
            _check_keys(label_values, ("positive_if",), f"{table}.label")
            if "positive_if" not in label_values:
                raise DataError(f"{table}.label needs `positive_if: RULE`")
            label = parse_rule(label_values["positive_if"])
        elif default_query:
            label = parse_rule(DEFAULT_LABEL)
        if values.get("weight") is not None:
            weight = _weight(values["weight"], f"{table}.weight")
    return TableConfig(
        table=table,
        path=path,
        query=query if query is not None else (DEFAULT_QUERIES[table] if default_query else None),
        columns=tuple((str(k), str(v)) for k, v in columns.items()),
        features=features,
        label=label,
        weight=weight,
    )


def parse_config(values: Mapping[str, Any], base_dir: Path = Path(".")) -> TabularConfig:
    """A `TabularConfig` from the mapping a YAML dataset config holds.

    Args:
      base_dir: relative `path`s are resolved against it (the YAML file's directory).

    Raises:
      DataError: unknown keys, missing required entries, or a bad rule; the message names the
        field and the fix.
    """
    _check_keys(values, ("name", "source", *TABLES, "postgres"), "dataset config")
    source = values.get("source", "files")
    if source not in ("files", "postgres"):
        raise DataError(f"source must be 'files' or 'postgres', got {source!r}")
    if "interactions" not in values and source == "files":
        raise DataError("dataset config needs an `interactions:` table")
    postgres = None
    if source == "postgres":
        section = values.get("postgres") or {}
        names = tuple(f.name for f in fields(PostgresConfig))
        _check_keys(section, names, "postgres")
        postgres = PostgresConfig(**section)
    elif "postgres" in values:
        raise DataError("a `postgres:` section needs `source: postgres`")
    tables: dict[str, TableConfig | None] = {}
    for table in TABLES:
        section = values.get(table)
        if section is None and (table == "interactions" or source == "postgres"):
            section = {}
        tables[table] = None if section is None else _table(table, section, source, base_dir)
    return TabularConfig(
        name=str(values.get("name", "tabular")),
        source=source,
        interactions=tables["interactions"],
        users=tables["users"],
        items=tables["items"],
        postgres=postgres,
    )


def read_config(path: Path) -> TabularConfig:
    """Parses the YAML dataset config at `path`.

    Raises:
      DataError: unreadable file, invalid YAML, or an invalid config (see `parse_config`).
    """
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise DataError(f"cannot read dataset config {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise DataError(f"dataset config {path} is not valid YAML: {error}") from error
    return parse_config(values or {}, Path(path).resolve().parent)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    """What a reader hands to `_assemble`: positives, their filter reports, the side tables."""

    interactions: pd.DataFrame
    reports: tuple[FilterReport, ...]
    sides: dict[str, pd.DataFrame | None]


def _require(columns: list[str], config: TableConfig, names: list[str]) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        where = config.path or "the query"
        raise DataError(
            f"{config.table}: column(s) {missing} not found in {where}; it has "
            f"{columns}. Map the schema names to source columns under "
            f"{config.table}.columns, or fix the feature `column`s"
        )


def _interaction_columns(config: TableConfig) -> dict[str, str]:
    """Schema name -> source column of the interactions to read (rating only when mapped)."""
    names = ["user_id", "item_id", "timestamp"]
    if "rating" in dict(config.columns):
        names.append("rating")
    return {name: config.source_column(name) for name in names}


def _rule_columns(config: TableConfig) -> list[str]:
    columns = [*(config.label.columns if config.label else ())]
    for weight_rule in config.weight.rules if config.weight else ():
        columns += weight_rule.rule.columns
    return columns


def _side_columns(config: TableConfig) -> list[str]:
    """Schema names of a users or items table's own columns: its key, and the title if mapped."""
    key = _KEYS[config.table]
    return [key] + (
        ["title"] if config.table == "items" and "title" in dict(config.columns) else []
    )


def _label_report(config: TableConfig, read: int, negative: int, kept: int, where: str) -> list:
    """The label rule's filter report.

    Raises:
      DataError: nothing was read, or no row satisfies the label rule.
    """
    if read == 0:
        _concat([], "interactions", where)
    if config.label is None:
        return []
    if kept == 0:
        raise DataError(
            f"no interaction satisfies label.positive_if {config.label.text!r} "
            f"({read} read); loosen the rule"
        )
    step = f"drop non-positive interactions (label.positive_if: {config.label.text})"
    return [FilterReport(step, negative, kept)]


def _reduce_interactions(
    chunk: pd.DataFrame, config: TableConfig, counts: dict[str, int]
) -> pd.DataFrame:
    """Maps one chunk to schema columns and drops the rows the label rule rejects."""
    columns = _interaction_columns(config)
    _require(list(chunk.columns), config, [*columns.values(), *_rule_columns(config)])
    for name in columnar.ID_COLUMNS:
        empty = int(chunk[columns[name]].isna().sum())
        if empty:
            raise columnar.null_ids_error("interactions", name, columns[name], empty)
    out = pd.DataFrame({name: chunk[column].to_numpy() for name, column in columns.items()})
    if config.weight is not None:
        out["weight"] = config.weight.evaluate(chunk)
    counts["read"] += len(out)
    if config.label is not None:
        positive = config.label.evaluate(chunk)
        counts["negative"] += int((~positive).sum())
        out = out[positive]
    return out


def _reduce_side(chunk: pd.DataFrame, config: TableConfig) -> pd.DataFrame:
    names = _side_columns(config)
    _require(
        list(chunk.columns),
        config,
        [config.source_column(n) for n in names] + [f.column for f in config.features],
    )
    out = pd.DataFrame({n: chunk[config.source_column(n)].to_numpy() for n in names})
    key = names[0]
    empty = int(out[key].isna().sum())
    if empty:
        raise columnar.null_ids_error(config.table, key, config.source_column(key), empty)
    for feature in config.features:
        out[feature.name] = _feature_values(chunk[feature.column], feature, config.table)
    return out


def _feature_values(values: pd.Series, feature: FeatureSource, table: str) -> list | pd.Series:
    text = pd.api.types.is_string_dtype(values.dtype)
    if not feature.multivalued and text and not pd.api.types.is_object_dtype(values.dtype):
        # A text column (no lists possible): missing values become "" without a Python loop
        # over a million users.
        return values.fillna("").reset_index(drop=True)
    if not feature.multivalued:
        result = []
        for value in values:
            if isinstance(value, list | tuple | np.ndarray):
                raise DataError(
                    f"{table}.features: {feature.name} holds lists; declare it "
                    f"`{{name: {feature.name}, multivalued: true}}`"
                )
            result.append("" if _missing(value) else str(value))
        return result
    result = []
    for value in values:
        if isinstance(value, list | tuple | np.ndarray):
            parts = [str(v).strip() for v in value if not _missing(v)]
        elif _missing(value):
            parts = []
        else:
            parts = [p.strip() for p in str(value).split(feature.separator)]
        result.append(tuple(dict.fromkeys(p for p in parts if p)))
    return result


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _concat(chunks: list[pd.DataFrame], table: str, where: str) -> pd.DataFrame:
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise DataError(f"{table}: {where} returned no rows; check the path, table or query")
    return pd.concat(chunks, ignore_index=True)


def _limit_values(
    frame: pd.DataFrame, config: TableConfig
) -> tuple[tuple[FeatureColumn, ...], list[FilterReport]]:
    columns, reports = [], []
    for feature in config.features:
        if not feature.multivalued:
            columns.append(FeatureColumn(feature.name))
            continue
        lengths = frame[feature.name].map(len)
        limit = feature.max_values or max(1, int(lengths.max()) if len(lengths) else 1)
        longer = int((lengths > limit).sum())
        if longer:
            frame[feature.name] = frame[feature.name].map(lambda v, n=limit: v[:n])
            reports.append(
                FilterReport(
                    f"truncate {config.table}.{feature.name} to {limit} values", longer, len(frame)
                )
            )
        columns.append(FeatureColumn(feature.name, max_values=limit))
    return tuple(columns), reports


def _read_chunks(config: TabularConfig, read: Reader) -> _Tables:
    """Reads every table through `read` (PostgreSQL), reducing each chunk before the next."""
    counts = {"read": 0, "negative": 0}
    chunks = [
        _reduce_interactions(chunk, config.interactions, counts)
        for chunk in read("interactions", config.interactions)
    ]
    interactions = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    reports = _label_report(
        config.interactions, counts["read"], counts["negative"], len(interactions), "the query"
    )
    sides: dict[str, pd.DataFrame | None] = {}
    for table in ("users", "items"):
        table_config: TableConfig | None = getattr(config, table)
        sides[table] = None
        if table_config is not None:
            sides[table] = _concat(
                [_reduce_side(chunk, table_config) for chunk in read(table, table_config)],
                table,
                "the query",
            )
    return _Tables(interactions, tuple(reports), sides)


def _read_files(config: TabularConfig, engine: EngineConfig) -> _Tables:
    """Reads every table from its file with DuckDB (see `tfrs_model.data.columnar`)."""
    with connect(engine) as connection:
        # File order, as the pandas reader had it: the first of duplicate interactions is kept.
        connection.execute("SET preserve_insertion_order = true")
        table_config = config.interactions
        table = columnar.FileTable("interactions", table_config.path)
        types = columnar.column_types(connection, table)
        columns = _interaction_columns(table_config)
        _require(list(types), table_config, [*columns.values(), *_rule_columns(table_config)])
        result = columnar.read_interactions(
            connection, table, columns, types, table_config.label, table_config.weight
        )
        reports = _label_report(
            table_config, result.read, result.negative, len(result.frame), "the file"
        )
        sides: dict[str, pd.DataFrame | None] = {}
        for name in ("users", "items"):
            side: TableConfig | None = getattr(config, name)
            sides[name] = None if side is None else _read_side_file(connection, side)
    return _Tables(result.frame, tuple(reports), sides)


def _read_side_file(connection: Any, config: TableConfig) -> pd.DataFrame:
    table = columnar.FileTable(config.table, config.path)
    names = [config.source_column(n) for n in _side_columns(config)]
    names += [f.column for f in config.features]
    _require(list(columnar.column_types(connection, table)), config, names)
    frame = columnar.read_columns(connection, table, tuple(names))
    return _concat([_reduce_side(frame, config)], config.table, "the file")


def load_tables(
    config: TabularConfig,
    read: Reader | None = None,
    *,
    drop_duplicates: bool = False,
    engine: EngineConfig | None = None,
) -> InteractionData:
    """Reads the three tables and builds the dataset.

    Args:
      read: yields DataFrame chunks of a table (PostgreSQL); None reads the files with DuckDB.
      drop_duplicates: drop repeated (user, item, timestamp) interactions instead of failing.
      engine: memory limit and threads of DuckDB for files; None uses `EngineConfig()`.

    Raises:
      DataError: missing or unreadable files, missing columns, NULL ids, empty tables, bad rule
        columns, or anything `build_dataset` rejects.
    """
    if read is None:
        tables = _read_files(config, engine or EngineConfig())
    else:
        tables = _read_chunks(config, read)
    reports = list(tables.reports)
    feature_columns: dict[str, tuple[FeatureColumn, ...]] = {"users": (), "items": ()}
    for table in ("users", "items"):
        frame, table_config = tables.sides[table], getattr(config, table)
        if frame is not None:
            feature_columns[table], limited = _limit_values(frame, table_config)
            reports += limited
    data = build_dataset(
        config.name,
        tables.interactions,
        tables.sides["users"],
        tables.sides["items"],
        feature_columns["users"],
        feature_columns["items"],
        drop_duplicates=drop_duplicates,
    )
    for report in reports:
        logger.info("%s", report)
    return InteractionData(
        name=data.name,
        interactions=data.interactions,
        users=data.users,
        items=data.items,
        user_features=data.user_features,
        item_features=data.item_features,
        reports=(*reports, *data.reports),
    )


def load_tabular(
    path: Path,
    config: DataConfig | None = None,
    *,
    dsn: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> InteractionData:
    """Loads the dataset a YAML config declares (see the module docstring).

    Args:
      path: the YAML dataset config.
      config: `drop_duplicates` applies to repeated (user, item, timestamp) interactions;
        `preprocess_memory_gb` bounds the engine that reads files.
      dsn: PostgreSQL connection string (`source: postgres`); wins over `environ`.
      environ: where to look up `postgres.dsn_env` when `dsn` is None (the CLI passes
        `os.environ`; nothing below the CLI reads the process environment).

    Raises:
      DataError: see `parse_config` and `load_tables`; for PostgreSQL also connection and SQL
        errors, with the connection string redacted.
    """
    tabular = read_config(Path(path))
    read = None
    if tabular.source == "postgres":
        from tfrs_model.data.postgres import chunk_reader

        if dsn is None:
            dsn = (environ or {}).get(tabular.postgres.dsn_env)
        if not dsn:
            raise DataError(
                f"{path} reads from PostgreSQL: set ${tabular.postgres.dsn_env} to a connection "
                "string (postgresql://user:password@host:5432/db) or pass --dsn"
            )
        read_query = chunk_reader(dsn, tabular.postgres)

        def read(table: str, table_config: TableConfig) -> Iterator[pd.DataFrame]:
            return read_query(table, table_config.query)

    engine = EngineConfig(memory_limit_gb=config.preprocess_memory_gb) if config else None
    return load_tables(
        tabular,
        read,
        drop_duplicates=bool(config is not None and config.drop_duplicates),
        engine=engine,
    )
