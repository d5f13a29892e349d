"""The model card and item catalog written to `assets.extra/` beside the SavedModel."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from export import contract
from tfrs_model.errors import ExportError
from tfrs_model.run import Run

_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "numpy", "twotower")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the project checkout this code runs from, if it is one."""
    directory = start or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def model_card(
    run: Run,
    *,
    version: int,
    index: dict[str, Any],
    k: int,
    weights: str,
    known_through: str,
    signatures: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Everything a reader needs to trust and reproduce an exported version.

    `weights` and `trained_on` say which model was exported and which splits of the run's data it
    was fit on; `known_through` which interactions `serving_default` bakes as history and
    exclusions. Evaluation refuses to score a version on a split either of them covers.
    """
    return {
        "model": "twotower",
        "version": version,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_dir": str(run.directory.resolve()),
        "config": run.config.to_dict(),
        "k": k,
        "index": index,
        "weights": weights,
        "trained_on": list(run.trained_on(weights)),
        "known_through": known_through,
        "data": run.metrics.get("data", {}),
        "filters": run.metrics.get("filters", []),
        "evaluation": {
            "validation": run.metrics.get("validation", {}),
            "best_epoch": run.metrics.get("best_epoch"),
        },
        "signatures": signatures,
        "packages": package_versions(),
        "git_commit": git_commit(),
    }


def read_model_card(version_dir: Path) -> dict[str, Any]:
    """The model card of an exported version (written by `model_card` at export).

    Raises:
      ExportError: the version has no model card, so it was not written by `twotower export`.
    """
    path = Path(version_dir) / contract.ASSETS_EXTRA / contract.MODEL_CARD_FILE
    if not path.is_file():
        raise ExportError(f"{path} is missing; was {version_dir} written by `twotower export`?")
    return json.loads(path.read_text())
