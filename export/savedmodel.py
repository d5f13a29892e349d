"""Exports a training run as a new version directory under `model_base_path`.

The version is built in a hidden temporary sibling (`.<N>.tmp-*`, which TF Serving and the
embedded server ignore), verified in a fresh process, and only then renamed to `<N>`: a server
polling the base path never sees a half-written or unverified version.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tensorflow as tf

from export import contract
from export.catalog_edits import (
    CatalogEdits,
    EditedCatalog,
    apply_edits,
    latest_edited_version,
    read_edits,
    write_edits,
)
from export.index import IndexConfig, build_index, resolved_parameters
from export.item_files import ITEM_ID, TITLE, read_item_ids, read_new_items
from export.item_filters import item_feature_codes
from export.model_card import model_card
from export.signatures import BakedUsers, ServingModule
from export.specs import signature_specs
from export.warmup import WarmupRequest, write_warmup_file
from tfrs_model.data.splits import TEST, SplitData
from tfrs_model.errors import ExportError
from tfrs_model.evaluation.protocol import catalog_codes, codes_to_csr
from tfrs_model.evaluation.two_tower import embed
from tfrs_model.features.examples import candidate_inputs, query_inputs
from tfrs_model.features.history import latest_rows
from tfrs_model.features.spec import HISTORY, FeatureSet
from tfrs_model.features.tables import FeatureTables
from tfrs_model.run import PRODUCTION, WEIGHTS, Run

logger = logging.getLogger(__name__)

SAVE_OPTIONS_NAMESPACES = ["Scann"]
# What `serving_default` knows of each user: interactions before the test split, or all of them.
VALIDATION, ALL = "validation", "all"
KNOWN_THROUGH = (VALIDATION, ALL)
# Where a version's catalog starts: the edits of the latest version of the same run and weights,
# or the run's trained catalog.
LATEST, TRAINED = "latest", "trained"
CATALOG_FROM = (LATEST, TRAINED)


@dataclass(frozen=True)
class ExportConfig:
    """What to export and where.

    Attributes:
      run_dir: a finished `twotower train` run.
      model_base_path: TF Serving's base path; versions are its integer subdirectories.
      version: None picks the next integer after the highest existing version.
      index: retrieval index kind and parameters.
      weights: `production` (the default) exports the model fit on every interaction;
        `evaluation` exports the run's evaluation weights (fit on train, or train + validation),
        the only export `evaluate --saved-model` may score on test.
      known_through: history and exclusions baked for `serving_default`: `all` uses every
        interaction in the run's data (production), `validation` only those before the test
        split (so the export can be evaluated on test). None picks `all` for production weights
        and `validation` for evaluation weights.
      force: replace an existing version directory.
      verify: load and check the SavedModel in a fresh process before publishing it.
      new_items: a CSV or Parquet file of items to add, embedded from their features
        (`export.item_files`); None adds nothing.
      remove_items: a text, CSV or Parquet file of item ids to remove; None removes nothing.
      catalog_from: `latest` (default) applies the edits on top of those of the latest version
        under `model_base_path` exported from the same run and weights; `trained` on top of
        the run's trained catalog (`export.catalog_edits`).
    """

    run_dir: str
    model_base_path: str
    version: int | None = None
    index: IndexConfig = field(default_factory=IndexConfig)
    weights: Literal["production", "evaluation"] = PRODUCTION
    known_through: Literal["validation", "all"] | None = None
    force: bool = False
    verify: bool = True
    new_items: str | None = None
    remove_items: str | None = None
    catalog_from: Literal["latest", "trained"] = LATEST

    def __post_init__(self) -> None:
        if self.catalog_from not in CATALOG_FROM:
            raise ExportError(
                f"--catalog-from must be one of {CATALOG_FROM}, got {self.catalog_from!r}"
            )
        if self.weights not in WEIGHTS:
            raise ExportError(f"--weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.known_through not in (None, *KNOWN_THROUGH):
            raise ExportError(
                f"--known-through must be one of {KNOWN_THROUGH}, got {self.known_through!r}"
            )

    @property
    def resolved_known_through(self) -> str:
        if self.known_through is not None:
            return self.known_through
        return ALL if self.weights == PRODUCTION else VALIDATION


@dataclass(frozen=True)
class ExportResult:
    """A published version: where it is, what it holds, and what the verification found."""

    version: int
    path: Path
    verification: dict[str, Any]
    weights: str = PRODUCTION
    trained_on: tuple[str, ...] = ()
    known_through: str = ALL
    catalog: dict[str, Any] = field(default_factory=dict)


def existing_versions(base: Path) -> list[int]:
    """Integer-named subdirectories of `base`, ascending."""
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base: Path) -> int:
    versions = existing_versions(base)
    return versions[-1] + 1 if versions else 1


def _known_interactions(split: SplitData, known_through: str) -> pd.DataFrame:
    return split.interactions if known_through == ALL else split.known_before(TEST)


def _distinct(values: pd.Series) -> np.ndarray:
    """The distinct values of `values`; a categorical's in-use categories, without a value per
    row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        used = np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)) > 0
        return values.cat.categories[used].to_numpy()
    return pd.unique(values.to_numpy())


def baked_user_ids(split: SplitData) -> np.ndarray:
    """`[U]` object: every user of the users table or the interactions, sorted."""
    users = np.concatenate(
        [split.data.users["user_id"].to_numpy(), _distinct(split.interactions["user_id"])]
    )
    return np.unique(users.astype(object))


def bake_users(
    split: SplitData,
    features: FeatureSet,
    tables: FeatureTables,
    catalog: pd.Index,
    known_through: str,
) -> BakedUsers:
    """The context `serving_default` looks up: features, history and known items per user.

    History and exclusions come from one coding of the known interactions into (user position,
    item row) int32 columns: the exclusions as a CSR matrix, the history as an `[U, H]` int32
    matrix, both without a Python object per user or interaction.
    """
    known = _known_interactions(split, known_through)
    user_ids = baked_user_ids(split)
    # Known items outside the catalog cannot be excluded, but stay in the history as before.
    outside = pd.Index(_distinct(known["item_id"])).difference(catalog)
    history_items = catalog.append(outside) if len(outside) else catalog
    user_rows, item_rows = catalog_codes(known, user_ids, history_items)
    in_catalog = np.where(item_rows < len(catalog), item_rows, -1)
    excluded = codes_to_csr(user_rows, in_catalog, (len(user_ids), len(catalog)))
    history = None
    if HISTORY in features.names("query"):
        length = features.get(HISTORY).max_values
        history = latest_rows(user_rows, item_rows, len(user_ids), length)
    inputs = query_inputs(features, tables, user_ids, None)
    inputs.pop("user_id")
    return BakedUsers(
        user_ids=user_ids,
        features=inputs,
        history=history,
        history_items=history_items.to_numpy(dtype=object),
        excluded=excluded,
    )


def warmup_requests(
    module: ServingModule, users: BakedUsers, catalog: np.ndarray
) -> list[WarmupRequest]:
    """A few requests per signature (known and unknown ids), replayed by servers at load."""
    sample_users = np.array([*users.user_ids[:3].astype(str), "__cold_start_user__"], dtype=object)
    sample_items = np.array([*catalog[:3].astype(str), "__unknown_item__"], dtype=object)
    context = {}
    for name, spec in module.context_specs().items():
        if name == "user_id":
            context[name] = sample_users.astype(bytes)
        elif name == HISTORY:
            context[name] = np.tile(sample_items[:3], (len(sample_users), 1)).astype(bytes)
        elif spec.shape.rank == 2:
            context[name] = np.full((len(sample_users), 1), b"")
        else:
            context[name] = np.full(len(sample_users), b"")
    exclude = {contract.EXCLUDE: np.tile(sample_items[:1], (len(sample_users), 1)).astype(bytes)}
    filtered = filtered_warmup_inputs(module, sample_items)
    by_signature = {
        contract.SERVING_DEFAULT: {contract.USER_ID: sample_users.astype(bytes)},
        contract.RECOMMEND: {**context, **exclude},
        contract.SIMILAR_ITEMS: {contract.ITEM_ID: sample_items.astype(bytes)},
        contract.QUERY_EMBEDDING: context,
        contract.CANDIDATE_EMBEDDING: {contract.ITEM_ID: sample_items.astype(bytes)},
        contract.ITEM_TITLES: {contract.ITEM_IDS: sample_items[None, :].astype(bytes)},
        contract.RECOMMEND_FILTERED: {contract.USER_ID: sample_users.astype(bytes), **filtered},
        contract.RECOMMEND_FILTERED_CONTEXT: {**context, **exclude, **filtered},
    }
    return [
        WarmupRequest(contract.DEFAULT_MODEL_NAME, name, inputs)
        for name, inputs in by_signature.items()
    ]


def filtered_warmup_inputs(
    module: ServingModule, sample_items: np.ndarray
) -> dict[str, np.ndarray]:
    """K, ALLOW and FILTERS of 4 rows: a filter on an item feature (when the catalog has one), an
    allow-list, both, and neither; k 1, the maximum, 2 and the maximum."""
    pair = module.item_filters.example
    allow = sample_items[:2].astype(bytes)
    none = np.array([b"", b""], dtype=object)
    return {
        contract.K: np.array([1, module.k, min(2, module.k), module.k], dtype=np.int32),
        contract.ALLOW: np.stack([none, allow, allow, none]),
        contract.FILTERS: np.array([[pair], [""], [pair], [""]], dtype=object).astype(bytes),
    }


def edited_catalog(run: Run, config: ExportConfig, version: int) -> EditedCatalog:
    """The catalog version `version` serves: the trained one with the config's edits applied.

    Raises:
      ExportError: an edit file is bad, or an edit breaks a rule of `export.catalog_edits`.
    """
    columns = run.split.data.item_features
    base = Path(config.model_base_path)
    earlier = [v for v in existing_versions(base) if v != version]
    from_version = (
        latest_edited_version(base, earlier, run.directory, config.weights)
        if config.catalog_from == LATEST
        else None
    )
    previous = (
        read_edits(base / str(from_version), columns)
        if from_version is not None
        else CatalogEdits.none([ITEM_ID, TITLE, *(column.name for column in columns)])
    )
    new_items = read_new_items(Path(config.new_items), columns) if config.new_items else None
    remove = read_item_ids(Path(config.remove_items)) if config.remove_items else None
    return apply_edits(run.split.data.items, previous, new_items, remove, from_version)


def build_module(
    run: Run, config: ExportConfig, catalog: EditedCatalog
) -> tuple[ServingModule, BakedUsers, np.ndarray, dict]:
    """The `ServingModule` of a run, with its index built over the whole (edited) catalog.

    Added items are embedded by the candidate tower from their features; their ids are out of
    the vocabulary, so the id part of their embedding is the OOV bucket id dropout trained.
    """
    model = run.load_model(config.weights)
    features = run.features_of(config.weights)
    data = dataclasses.replace(run.split.data, items=catalog.items)
    tables = FeatureTables(data)
    catalog_ids = catalog.items[ITEM_ID].astype(str).to_numpy(dtype=object)
    embeddings = embed(model.candidate_model, candidate_inputs(features, tables, catalog_ids))
    k = min(config.index.k, len(catalog_ids))
    index = build_index(
        config.index, tf.constant(embeddings), tf.range(len(catalog_ids), dtype=tf.int32)
    )
    users = bake_users(
        run.split, features, tables, pd.Index(catalog_ids), config.resolved_known_through
    )
    module = ServingModule(
        query_model=model.query_model,
        candidate_model=model.candidate_model,
        index=index,
        features=features,
        catalog_ids=catalog_ids,
        catalog_titles=catalog.items[TITLE].astype(str).to_numpy(dtype=object),
        candidate_embeddings=embeddings,
        users=users,
        k=k,
        item_features=item_feature_codes(tables.item_features(catalog_ids)),
        withdrawn_ids=catalog.edits.removed,
    )
    parameters = {
        "kind": config.index.kind,
        "k": k,
        **resolved_parameters(config.index, len(catalog_ids)),
    }
    return module, users, catalog_ids, parameters


def _write_version(
    run: Run, config: ExportConfig, staging: Path, version: int, catalog: EditedCatalog
) -> None:
    module, users, catalog_ids, index_parameters = build_module(run, config, catalog)
    signatures = module.signatures()
    requests = warmup_requests(module, users, catalog_ids)
    for request in requests:  # traces every signature and calls the index once before saving
        signatures[request.signature_name](**{k: tf.constant(v) for k, v in request.inputs.items()})
    tf.saved_model.save(
        module,
        str(staging),
        signatures=signatures,
        options=tf.saved_model.SaveOptions(namespace_whitelist=SAVE_OPTIONS_NAMESPACES),
    )
    extra = staging / contract.ASSETS_EXTRA
    extra.mkdir()
    write_warmup_file(extra / contract.WARMUP_FILE, requests)
    card = model_card(
        run,
        version=version,
        index=index_parameters,
        k=module.k,
        weights=config.weights,
        known_through=config.resolved_known_through,
        signatures={name: signature_specs(fn).to_json() for name, fn in signatures.items()},
    )
    card["filters"] = {
        "features": module.item_filters.describe(),
        "max_k": module.k,
        "search": asdict(module.filtered_search),
    }
    card["catalog"] = catalog.describe()
    card["export"] = {
        **asdict(config),
        "known_through": config.resolved_known_through,
        "index": asdict(config.index),
    }
    (extra / contract.MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    write_edits(extra, catalog.edits)
    titles = catalog.items[TITLE].astype(str).to_numpy()
    catalog_rows = [{"item_id": i, "title": t} for i, t in zip(catalog_ids, titles, strict=True)]
    (extra / contract.CATALOG_FILE).write_text(json.dumps(catalog_rows) + "\n")


def verify_in_subprocess(version_dir: Path, timeout: float = 600.0) -> dict[str, Any]:
    """Runs `export.verify` on `version_dir` in a fresh Python process.

    Raises:
      ExportError: the SavedModel failed a check; the message carries the verifier's report.
    """
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "export.verify", str(version_dir), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    report_line = next(
        (line for line in reversed(result.stdout.splitlines()) if line.startswith("{")), None
    )
    if result.returncode != 0 or report_line is None:
        detail = (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        raise ExportError(f"verification of {version_dir} failed:\n{detail}")
    return json.loads(report_line)


def export_run(config: ExportConfig) -> ExportResult:
    """Writes, verifies and publishes one version. See the module docstring.

    Raises:
      RunDirError: `run_dir` is not a run.
      ExportError: the version exists (without `force`), or writing or verification failed;
        nothing is left under `model_base_path` then.
    """
    run = Run.open(Path(config.run_dir))
    run.trained_on(config.weights)  # a run without production weights fails here, before work
    base = Path(config.model_base_path)
    version = config.version if config.version is not None else next_version(base)
    if version < 1:
        raise ExportError(f"--version must be a positive integer, got {version}")
    final = base / str(version)
    if final.exists() and not config.force:
        raise ExportError(f"{final} already exists; pass --force to replace it or omit --version")
    # Before any work: a bad edit file or a refused id fails here, with nothing written.
    catalog = edited_catalog(run, config, version)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    try:
        try:
            _write_version(run, config, staging / "model", version, catalog)
        except OSError as error:
            # Was uncaught: a full disk or a permission error reached `twotower export` as a
            # traceback, although a failed write is documented to raise ExportError.
            raise ExportError(
                f"writing version {version} under {base} failed: {error}; nothing was published"
            ) from error
        staged = staging / "model"
        report = verify_in_subprocess(staged) if config.verify else {"skipped": True}
        if final.exists():
            shutil.rmtree(final)
        os.rename(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported version %d to %s", version, final)
    return ExportResult(
        version=version,
        path=final,
        verification=report,
        weights=config.weights,
        trained_on=run.trained_on(config.weights),
        known_through=config.resolved_known_through,
        catalog=catalog.describe(),
    )
