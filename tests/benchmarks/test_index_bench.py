"""Tests for benchmarks.index and `twotower bench index`: metrics, catalogs, a tiny run."""

import argparse
import json

import numpy as np
import pytest

from benchmarks.index import (
    exact_top_k,
    recall_at_k,
    render_grid_markdown,
    render_markdown,
    run_defaults_grid,
    run_index_benchmark,
    synthetic_catalog,
)
from benchmarks.report import record
from twotower.commands import bench_index


def test_recall_at_k_known_answers():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    # Row 0 finds 1 and 3 of {1, 2, 3}; row 1 finds 4, 5, 6 in another order: (2 + 3) / 6.
    approx = np.array([[3, 9, 1], [6, 5, 4]])
    assert recall_at_k(approx, exact, 3) == pytest.approx(5 / 6)
    # At k=1 only the first column counts: 3 vs 1 misses, 6 vs 4 misses.
    assert recall_at_k(approx, exact, 1) == 0.0
    assert recall_at_k(exact, exact, 3) == 1.0


def test_recall_at_k_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="rows"):
        recall_at_k(np.zeros((2, 3)), np.zeros((3, 3)), 3)
    with pytest.raises(ValueError, match="at least k"):
        recall_at_k(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_exact_top_k_hand_checked():
    candidates = np.array([[1, 0], [0, 1], [2, 0], [-1, 0]], np.float32)
    queries = np.array([[1, 0], [0, 1]], np.float32)
    # Query 0 scores 1, 0, 2, -1 -> rows 2, 0; query 1 scores 0, 1, 0, 0 -> row 1 first.
    top = exact_top_k(candidates, queries, 2, batch_size=1)
    assert top[0].tolist() == [2, 0] and top[1, 0] == 1


@pytest.mark.parametrize("distribution", ["gaussian", "clustered-normalized"])
def test_synthetic_catalog_shapes_and_norms(distribution):
    candidates, queries, description = synthetic_catalog(
        400, 8, 10, distribution=distribution, seed=1
    )
    assert candidates.shape == (400, 8) and queries.shape == (10, 8)
    assert candidates.dtype == queries.dtype == np.float32
    norms = np.linalg.norm(candidates, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == distribution.endswith("normalized")
    assert description["distribution"] == distribution
    again, _, _ = synthetic_catalog(400, 8, 10, distribution=distribution, seed=1)
    np.testing.assert_array_equal(candidates, again)
    with pytest.raises(ValueError):
        synthetic_catalog(10, 2, 1, distribution="uniform")


def test_tiny_index_benchmark_writes_json_and_markdown(tmp_path):
    result = run_index_benchmark(2_000, 16, num_queries=60, k=10, batch_size=32)
    scann, brute = result["indexes"]["scann"], result["indexes"]["brute-force"]
    assert brute["recall_at_k"] == pytest.approx(1.0)
    assert 0.0 <= scann["recall_at_k"] <= 1.0
    for measured in (scann, brute):
        assert measured["state_bytes"] > 2_000 * 16 * 4  # at least the float embeddings
        assert measured["latency_ms"]["p50"] > 0 and measured["throughput_qps"] > 0
    assert scann["parameters"]["num_leaves"] == 40  # 2000 // 50
    assert result["scann_speedup_p50"] > 0

    doc = tmp_path / "benchmarks.md"
    path = record("index", result, render_markdown(result), results_dir=tmp_path, doc_path=doc)
    saved = json.loads(path.read_text())
    assert path == tmp_path / "index.json"
    assert saved["benchmark"] == "index" and saved["dataset"]["num_items"] == 2_000
    assert "ScaNN speed-up over brute force" in doc.read_text()


def test_tiny_defaults_grid_renders():
    result = run_defaults_grid(
        sizes=(300,), dims=(8,), distributions=("clustered-normalized",), ks=(10,), num_queries=20
    )
    (cell,) = result["cells"]
    assert cell["num_items"] == 300 and cell["k"] == 10
    assert cell["recall_at_k"] >= 0.95  # 300 items: every leaf is searched
    assert "| clustered-normalized | 300 | 8 | 10 |" in render_grid_markdown(result)


def test_cli_registers_index_benchmark():
    parser = argparse.ArgumentParser()
    bench_index.register(parser.add_subparsers(dest="benchmark"))
    args = parser.parse_args(["index", "--items", "2000", "--dim", "16", "--grid-items", "1,2"])
    assert (args.items, args.dim, args.queries, args.k, args.seed) == (2000, 16, 1000, 10, 0)
    assert args.grid_items == (1, 2) and args.out_name is None
    assert args.handler is bench_index._run


def test_cli_runs_and_records_in_the_results_dir(results_paths, tmp_path, monkeypatch, capsys):
    # results_paths (tests/benchmarks/conftest.py) points the results at tmp_path/benchmarks/...
    monkeypatch.chdir(tmp_path)
    from twotower.cli import main

    code = main(["bench", "index", "--items", "1000", "--dim", "8", "--queries", "30"])
    assert code == 0
    assert json.loads((tmp_path / "benchmarks/results/index.json").read_text())["k"] == 10
    assert "<!-- bench:index:begin -->" in (tmp_path / "docs/benchmarks.md").read_text()
    assert f"wrote {results_paths.results_dir / 'index.json'}" in capsys.readouterr().out


def test_cli_rejects_an_out_name_that_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from twotower.cli import main

    assert main(["bench", "index", "--items", "100", "--out-name", "/tmp/x"]) == 2
    assert not (tmp_path / "docs").exists()
