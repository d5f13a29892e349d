"""Every benchmark test records into its own tmp_path, never into the source tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import report


@dataclass(frozen=True)
class ResultsPaths:
    """Where `benchmarks.report.record` writes during a test, and the defaults it replaced."""

    results_dir: Path
    doc_path: Path
    default_results_dir: Path
    default_doc_path: Path


@pytest.fixture(autouse=True)
def results_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultsPaths:
    paths = ResultsPaths(
        results_dir=tmp_path / "benchmarks" / "results",
        doc_path=tmp_path / "docs" / "benchmarks.md",
        default_results_dir=report.RESULTS_DIR,
        default_doc_path=report.DOC_PATH,
    )
    monkeypatch.setattr(report, "RESULTS_DIR", paths.results_dir)
    monkeypatch.setattr(report, "DOC_PATH", paths.doc_path)
    return paths
