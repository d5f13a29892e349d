"""benchmarks.report: results go to the source tree by default, whatever the working directory."""

import json
from pathlib import Path

import benchmarks
from benchmarks import report
from benchmarks.report import record

_SOURCE_TREE = Path(__file__).resolve().parents[2]


def test_default_paths_are_in_the_source_tree(results_paths):
    # The defaults, before the autouse fixture replaced them with tmp paths.
    assert results_paths.default_results_dir == _SOURCE_TREE / "benchmarks" / "results"
    assert results_paths.default_doc_path == _SOURCE_TREE / "docs" / "benchmarks.md"
    package = Path(benchmarks.__file__).resolve().parent
    assert results_paths.default_results_dir == package / "results"
    assert results_paths.default_results_dir.is_absolute()


def test_record_writes_to_the_module_paths_not_the_working_directory(
    results_paths, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = record("demo", {"value": 1}, "## Demo\n\nvalue 1\n")
    assert path == report.RESULTS_DIR / "demo.json" == results_paths.results_dir / "demo.json"
    assert json.loads(path.read_text())["value"] == 1
    assert "<!-- bench:demo:begin -->\n## Demo" in results_paths.doc_path.read_text()
    assert list(elsewhere.iterdir()) == []


def test_record_arguments_override_the_defaults(results_paths, tmp_path):
    path = record("demo", {}, "## Demo\n", results_dir=tmp_path / "r", doc_path=tmp_path / "d.md")
    assert path == tmp_path / "r" / "demo.json" and path.exists()
    assert "## Demo" in (tmp_path / "d.md").read_text()
    assert not results_paths.results_dir.exists() and not results_paths.doc_path.exists()
