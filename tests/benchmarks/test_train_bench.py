"""benchmarks.train and `twotower bench train`: the stage runner, targets, results, a tiny run."""

import json
import sys
import time

import pytest

from benchmarks import train as train_bench
from benchmarks.train import GB, check_targets, merge_results, render_markdown, run_stage
from tfrs_model.errors import ConfigError
from twotower import cli
from twotower.commands import bench_train

MB = 2**20


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stage_reports_exit_code_and_its_own_peak_rss(tmp_path):
    # 150 MiB written (not just reserved), so it is resident.
    allocate = "b = b'x' * (150 << 20); print(len(b))"
    result = run_stage("alloc", python(allocate), tmp_path)
    assert result.ok and result.exit_code == 0 and result.reason is None
    assert result.peak_rss_bytes >= 150 * MB
    assert (tmp_path / "alloc.stdout").read_text().strip() == str(150 << 20)
    # A small child afterwards reports its own peak, not the previous child's.
    small = run_stage("small", python("pass"), tmp_path)
    assert small.ok and small.peak_rss_bytes < 100 * MB
    payload = small.to_json()
    assert payload["command"].endswith("-c pass") and payload["status"] == "ok"


def test_failing_stage_is_a_result_with_its_stderr_tail(tmp_path):
    code = "import sys; print('loading ...', file=sys.stderr); sys.exit('boom: out of disk')"
    result = run_stage("fail", python(code), tmp_path)
    assert result.status == "failed" and result.exit_code == 1
    assert result.reason == "exit code 1: boom: out of disk"
    assert result.stderr_tail.splitlines() == ["loading ...", "boom: out of disk"]


def test_killed_and_timed_out_stages(tmp_path):
    killed = run_stage("killed", python("import os; os.kill(os.getpid(), 9)"), tmp_path)
    assert killed.status == "failed" and killed.exit_code == -9
    assert killed.reason.startswith("killed by SIGKILL (out of memory?)")
    started = time.perf_counter()
    slow = run_stage("slow", python("import time; time.sleep(60)"), tmp_path, timeout_s=0.5)
    assert time.perf_counter() - started < 10
    assert slow.status == "timeout" and slow.reason.startswith("timed out after 0.5 s")


def test_log_is_generated_once_then_reused(tmp_path):
    first = train_bench._prepare_log("tiny", train_bench.SIZES["tiny"], tmp_path, False)
    again = train_bench._prepare_log("tiny", train_bench.SIZES["tiny"], tmp_path, False)
    assert not first["reused"] and again["reused"]
    assert again["generate_seconds"] == first["counts"]["write_seconds"] > 0
    assert (
        again["dataset_config"]
        == first["dataset_config"]
        == str(tmp_path / "logs/tiny/dataset.yaml")
    )
    assert first["counts"]["rows"] == 20_000


def _entry(size, status="ok", rss=1.0, preprocess=None, speed=10.0, fit=None):
    stages = {"train": {"peak_rss_bytes": int(rss * GB), "seconds": 1.0, "peak_rss_gb": rss}}
    timings = {"preprocess": preprocess} if preprocess is not None else None
    if fit is not None:
        timings = {**(timings or {}), "fit": fit}
    return {
        "size": size,
        "status": status,
        "reason": None if status == "ok" else "train failed: exit code 1",
        "stages": stages,
        "train_metrics": {"timings": timings, "examples_per_second": speed},
        "spec": train_bench.SIZES[size].to_json() if train_bench.SIZES[size] else None,
    }


def test_targets_met_not_met_and_not_measured():
    verdicts = {
        (t["size"], t["target"]): t["verdict"]
        for t in check_targets([_entry("25m", rss=7.5, preprocess=61.0), _entry("2.5m", "failed")])
    }
    assert verdicts == {
        ("25m", "train and evaluate peak RSS <= 8 GB"): "met",
        ("25m", "preprocessing <= 60 s"): "not met",
        ("25m", "preprocess, one epoch and evaluate complete"): "met",
        ("2.5m", "preprocessing <= 10 s"): "not measured",  # no timings reported
        ("2.5m", "evaluate completes"): "not met",
        ("2.5m", ">= 50,000 examples/s"): "not met",  # 10 examples/s
        ("ml100k", ">= 30,000 examples/s"): "not measured",
        ("25m", "one epoch <= 10 min"): "not measured",  # no fit timing
        ("users-1m", "examples/s >= 0.8x users-10k's"): "not measured",
    }
    over = check_targets([_entry("25m", rss=8.5, preprocess=30.0)])
    assert [t["verdict"] for t in over[:2]] == ["not met", "met"]
    assert all(t["verdict"] == "not measured" for t in check_targets([]))


def test_speed_targets_compare_examples_per_second_and_epoch_time():
    verdicts = {
        t["target"]: (t["verdict"], t["value"])
        for t in check_targets(
            [
                _entry("users-10k", speed=50_000.0),
                _entry("users-1m", speed=41_000.0),
                _entry("25m", fit=599.0),
                _entry("ml100k", speed=29_999.0),
            ]
        )
    }
    assert verdicts["examples/s >= 0.8x users-10k's"] == ("met", 0.82)
    assert verdicts["one epoch <= 10 min"] == ("met", 599.0)
    assert verdicts[">= 30,000 examples/s"] == ("not met", 29_999.0)


def test_merge_keeps_earlier_sizes_not_measured_now():
    previous = {"sizes": [_entry("2.5m", preprocess=5.0, speed=60_000.0), _entry("25m", "failed")]}
    current = {
        "epochs": 1,
        "sizes": [_entry("25m", rss=7.0, preprocess=50.0, fit=300.0)],
        "targets": [],
    }
    merged = merge_results(previous, current)
    assert [e["size"] for e in merged["sizes"]] == ["2.5m", "25m"]
    assert merged["sizes"][1]["status"] == "ok"  # the new measurement wins
    measured = [t for t in merged["targets"] if t["verdict"] != "not measured"]
    assert len(measured) == 7
    assert all(t["verdict"] == "met" for t in measured)
    markdown = render_markdown(merged)
    assert "| 2.5m | 2,500,000 | 200,000 | 50,000 |" in markdown
    assert "| 25m | preprocessing <= 60 s | 50.0 s | met |" in markdown


def test_cli_parses_sizes_and_rejects_unknown_ones(tmp_path):
    parser = cli.build_parser()
    argv = ["bench", "train", "--sizes", "tiny,2.5m,tiny", "--workdir", str(tmp_path)]
    args = parser.parse_args([*argv, "--train-args", "--batch-size 1024", "--timeout", "60"])
    config = bench_train.build_config(args)
    assert config.sizes == ("tiny", "2.5m") and config.workdir == tmp_path
    assert config.extra_train_args == ("--batch-size", "1024") and config.stage_timeout_s == 60
    with pytest.raises(ConfigError, match="unknown"):
        bench_train.build_config(parser.parse_args(["bench", "train", "--sizes", "1b"]))


@pytest.mark.slow
def test_failed_training_is_recorded_not_raised(tmp_path):
    entry = train_bench.run_size(
        "ml100k", tmp_path, data_dir_100k=tmp_path / "missing", progress=False
    )
    assert entry["status"] == "failed" and entry["reason"].startswith("train failed: exit code 2")
    assert "evaluate" not in entry["stages"]


@pytest.mark.slow
def test_tiny_end_to_end_through_the_cli(tmp_path, results_paths):
    workdir = tmp_path / "work"
    real = results_paths.default_results_dir / "train.json"
    before = real.stat().st_mtime_ns if real.exists() else None
    assert cli.main(["bench", "train", "--sizes", "tiny", "--workdir", str(workdir)]) == 0
    result = json.loads((results_paths.results_dir / "train.json").read_text())
    assert (real.stat().st_mtime_ns if real.exists() else None) == before  # source tree untouched
    (entry,) = result["sizes"]
    assert entry["size"] == "tiny" and entry["status"] == "ok", entry.get("reason")
    train, evaluate = entry["stages"]["train"], entry["stages"]["evaluate"]
    assert "--epochs 1" in train["command"] and "--dataset-config" in train["command"]
    for flag in result["train_flags"]:
        assert flag in train["command"]
    assert evaluate["command"].endswith(
        "--split test --json " + str(workdir / "runs/tiny/evaluate.json")
    )
    for stage in (train, evaluate):
        assert stage["exit_code"] == 0 and stage["seconds"] > 0 and stage["peak_rss_bytes"] > 0
    assert entry["train_metrics"]["examples_per_second"] > 0
    recall = entry["recall_at_10"]
    assert recall["two_tower"] > recall["popularity"] > 0  # the planted structure is learnable
    assert entry["log"]["generate_seconds"] > 0 and not entry["log"]["reused"]
    assert entry["run_dir"] is None and not (workdir / "runs/tiny/run").exists()  # no --keep
    doc = results_paths.doc_path.read_text()
    assert "<!-- bench:train:begin -->" in doc and "| tiny | 20,000 | 2,000 | 500 |" in doc
