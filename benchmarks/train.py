"""The training benchmark: `twotower train` and `twotower evaluate` on logs of growing size.

For each size the harness writes (or reuses) a synthetic log (`benchmarks.synthetic`; timed on
its own, not part of preprocessing), then runs the product exactly as a user does, through its CLI
in subprocesses:

    python -m twotower train --dataset-config LOG/dataset.yaml --out RUN --epochs 1 \\
        --no-refit --no-production-fit
    python -m twotower evaluate --run RUN --split test --json RUN/../evaluate.json \\
        [--eval-users 20000]  # logs of more than 200,000 users

(`--no-refit` and `--no-production-fit` are passed when `twotower train --help` lists them, so
the run is preprocessing plus one epoch of training; the exact command is recorded.) Each stage
records its wall time, exit code, peak RSS (the command's own `ru_maxrss` from `os.wait4`, taken
by a small measuring process the command is forked from: see `run_stage`) and, when it fails, the
tail of its stderr: a failed stage (an error, the kernel's OOM killer, a timeout) is a result, not
a crash of the benchmark. From the run's
`metrics.json` come `examples_per_second` and, when the trainer reports them, per-stage `timings`
(e.g. `{"preprocess": s, "train": s}`); from the evaluate JSON, recall@10 of every model.

Nothing here imports the trainer: internals may change freely as long as the CLI keeps its flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.synthetic import SyntheticLogSpec, cached_log, read_marker, write_synthetic_log

GB = 1e9  # peak RSS is reported in decimal GB (the stricter reading of "8 GB")
ML100K = "ml100k"
SIZES: dict[str, SyntheticLogSpec | None] = {
    ML100K: None,  # MovieLens 100K, the real thing
    "tiny": SyntheticLogSpec(rows=20_000, users=2_000, items=500, clusters=10),
    "2.5m": SyntheticLogSpec(rows=2_500_000, users=200_000, items=50_000, clusters=20),
    "25m": SyntheticLogSpec(rows=25_000_000, users=1_000_000, items=200_000, clusters=20),
    # The same rows and items over 100x more users: training cost per example should not
    # depend on the vocabulary size.
    "users-10k": SyntheticLogSpec(rows=5_000_000, users=10_000, items=50_000, clusters=20),
    "users-1m": SyntheticLogSpec(rows=5_000_000, users=1_000_000, items=50_000, clusters=20),
}


@dataclass(frozen=True)
class Variant:
    """Another model on one size's log: its row trains with `config` as `twotower train
    --config` (model and train sections), everything else as the size's own row."""

    log: str
    config: Mapping[str, Any]


def _tutorial_config() -> dict[str, Any]:
    """The TFRS basic-retrieval tutorial model and optimizer (`benchmarks.quality`)."""
    from benchmarks.quality import TUTORIAL_MODEL, TUTORIAL_TRAIN

    return {
        "model": dataclasses.asdict(TUTORIAL_MODEL),
        "train": dataclasses.asdict(TUTORIAL_TRAIN),
    }


VARIANTS: dict[str, Variant] = {
    f"{size}-tutorial": Variant(size, _tutorial_config()) for size in (ML100K, "2.5m")
}
CASES = (*SIZES, *VARIANTS)
DEFAULT_SIZES = (ML100K, "ml100k-tutorial", "2.5m", "2.5m-tutorial", "users-10k", "users-1m", "25m")
# Flags that make a run exactly preprocessing + the requested epochs, passed when train has them.
_ONE_FIT_FLAGS = ("--no-refit", "--no-production-fit")
_STDERR_TAIL_LINES = 25
_STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Target:
    """A goal of the issue, checked on the recorded result of one size."""

    size: str
    text: str
    metric: str  # peak_rss, preprocess_s, evaluate_ok, fit_s, examples_per_second, speed_ratio
    limit: float | None = None
    reference: str | None = None  # speed_ratio: the size whose examples/s is the denominator


TARGETS = (
    Target("25m", "train and evaluate peak RSS <= 8 GB", "peak_rss", 8 * GB),
    Target("25m", "preprocessing <= 60 s", "preprocess_s", 60.0),
    Target("25m", "preprocess, one epoch and evaluate complete", "evaluate_ok"),
    Target("2.5m", "preprocessing <= 10 s", "preprocess_s", 10.0),
    Target("2.5m", "evaluate completes", "evaluate_ok"),
    # Training speed (the training-speed issue).
    Target("2.5m", ">= 50,000 examples/s", "examples_per_second", 50_000),
    Target(ML100K, ">= 30,000 examples/s", "examples_per_second", 30_000),
    Target("25m", "one epoch <= 10 min", "fit_s", 600.0),
    Target(
        "users-1m",
        "examples/s >= 0.8x users-10k's",
        "speed_ratio",
        0.8,
        reference="users-10k",
    ),
)


@dataclass
class StageResult:
    """One subprocess of the benchmark.

    Attributes:
      status: `ok`, `failed` (non-zero exit or killed by a signal) or `timeout`.
      peak_rss_bytes: the child's peak resident set (max over it and its descendants).
      reason: why it failed, with the tail of its stderr; None when ok.
    """

    name: str
    command: list[str]
    status: str
    exit_code: int
    seconds: float
    peak_rss_bytes: int
    reason: str | None = None
    stderr_tail: str | None = None
    log: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "command": shlex.join(self.command),
            "status": self.status,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_rss_gb": round(self.peak_rss_bytes / GB, 3),
            "reason": self.reason,
            "stderr_tail": self.stderr_tail,
            "log": self.log,
        }


# Runs one stage: `python -I -S -c _MEASURE REPORT TIMEOUT COMMAND...`. A child's ru_maxrss
# starts from the RSS of the process it was forked from (Linux carries the pre-exec peak over), so
# the command is forked from this small interpreter (about 10 MB) rather than from the benchmark,
# whose own peak (e.g. after writing a 25M-row log) would otherwise be counted. It reaps the
# command with wait4, whose rusage is that child's (max over it and the descendants it waited
# for), kills the command's process group at TIMEOUT seconds (0: never) or when it is itself
# terminated, and writes {exit_code, seconds, maxrss_kb, timed_out} to REPORT.
_MEASURE = """
import json, os, signal, sys, time
report, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        os.execvp(argv[0], argv)
    except BaseException as error:
        os.write(2, ("cannot run %r: %s\\n" % (argv[0], error)).encode())
    os._exit(127)
try:
    os.setpgid(pid, pid)
except OSError:
    pass
expired = []
def kill(signum, frame):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    if signum == signal.SIGALRM:
        expired.append(True)
    else:
        os.waitpid(pid, 0)
        os._exit(128 + signum)
for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, kill)
if timeout > 0:
    signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, usage = os.wait4(pid, 0)
signal.setitimer(signal.ITIMER_REAL, 0)
seconds = time.perf_counter() - started
result = {"exit_code": os.waitstatus_to_exitcode(status), "seconds": seconds,
          "maxrss_kb": usage.ru_maxrss, "timed_out": bool(expired)}
with open(report + ".tmp", "w") as handle:
    json.dump(result, handle)
os.replace(report + ".tmp", report)
"""


def run_stage(
    name: str,
    command: Sequence[str],
    log_dir: Path,
    *,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> StageResult:
    """Runs `command` to completion and measures it; never raises for the command's failures.

    stdout and stderr go to `<log_dir>/<name>.stdout` and `.stderr` (so no pipe can fill up).
    The command runs under a small measuring process (`_MEASURE`) that reaps it with `os.wait4`:
    `seconds` is its wall time from fork to exit and `peak_rss_bytes` its `ru_maxrss`, the peak
    RSS of the command and the descendants it waited for (plus the ~10 MB of the measuring
    interpreter it was forked from, which Linux counts too).

    Args:
      timeout_s: the command's process group is killed (SIGKILL) after this many seconds.
      env: the command's environment; None inherits ours.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    report_path = log_dir / f"{name}.measure.json"
    report_path.unlink(missing_ok=True)
    command = [str(part) for part in command]
    measure = [sys.executable, "-I", "-S", "-c", _MEASURE, str(report_path), str(timeout_s or 0)]
    started = time.perf_counter()
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*measure, *command],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            start_new_session=True,  # Ctrl-C reaches us, and we stop the stage (below)
        )
        try:
            process.wait()
        except BaseException:  # e.g. KeyboardInterrupt: do not leave a training run behind
            process.terminate()  # the measuring process kills the command's group and exits
            process.wait()
            raise
    log = {"stdout": str(stdout_path), "stderr": str(stderr_path)}
    measured = _read_json(report_path)
    tail = _tail(stderr_path)
    if measured is None:  # the measuring process itself died
        reason = f"no measurement (measuring process exit code {process.returncode})"
        return StageResult(
            name,
            command,
            "failed",
            process.returncode,
            time.perf_counter() - started,
            0,
            reason=reason,
            stderr_tail=tail,
            log=log,
        )
    exit_code, timed_out = int(measured["exit_code"]), bool(measured["timed_out"])
    seconds, peak = float(measured["seconds"]), int(measured["maxrss_kb"]) * 1024
    if exit_code == 0 and not timed_out:
        return StageResult(name, command, "ok", 0, seconds, peak, log=log)
    if timed_out:
        reason = f"timed out after {timeout_s:g} s (killed)"
    elif exit_code < 0:
        signame = signal.Signals(-exit_code).name
        hint = " (out of memory?)" if -exit_code == signal.SIGKILL else ""
        reason = f"killed by {signame}{hint}"
    else:
        reason = f"exit code {exit_code}"
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    if last:
        reason += f": {last.strip()}"
    return StageResult(
        name,
        command,
        "timeout" if timed_out else "failed",
        exit_code,
        seconds,
        peak,
        reason=reason,
        stderr_tail=tail,
        log=log,
    )


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()[-_STDERR_TAIL_LINES:]
    return "\n".join(lines)[-_STDERR_TAIL_CHARS:]


def twotower_command(*args: str) -> list[str]:
    """The product's CLI, run by this interpreter (`python -m twotower`, the console script's
    entry point) so it is the same installation whatever PATH holds."""
    return [sys.executable, "-m", "twotower", *args]


def available_train_flags(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Those of `_ONE_FIT_FLAGS` that `twotower train --help` lists now."""
    help_text = subprocess.run(
        twotower_command("train", "--help"),
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        check=False,
    ).stdout
    return tuple(flag for flag in _ONE_FIT_FLAGS if flag in help_text.split())


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _prepare_log(
    name: str, spec: SyntheticLogSpec, workdir: Path, progress: bool
) -> dict[str, Any]:
    directory = workdir / "logs" / name
    reused = cached_log(spec, directory) is not None
    started = time.perf_counter()
    yaml_path = write_synthetic_log(spec, directory, progress=progress)
    seconds = time.perf_counter() - started
    marker = read_marker(directory) or {}
    # A reused log reports the seconds its writing took (kept in its marker).
    return {
        "directory": str(directory),
        "dataset_config": str(yaml_path),
        "reused": reused,
        "generate_seconds": marker.get("write_seconds") if reused else round(seconds, 3),
        "check_seconds": round(seconds, 3) if reused else None,
        "counts": {k: v for k, v in marker.items() if k != "spec"},
    }


def run_size(
    name: str,
    workdir: Path,
    *,
    data_dir_100k: Path | None = None,
    epochs: int = 1,
    train_flags: Sequence[str] = (),
    extra_train_args: Sequence[str] = (),
    stage_timeout_s: float | None = None,
    keep: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generates (or reuses) one size's log, trains on it and evaluates; the size's result.

    `name` is a size of `SIZES` or a `VARIANTS` row (another model on a size's log).
    """
    if name not in CASES:
        raise ValueError(f"unknown size {name!r}; choose from {', '.join(CASES)}")
    variant = VARIANTS.get(name)
    log_name = variant.log if variant else name
    spec = SIZES[log_name]
    workdir = Path(workdir)
    size_dir = workdir / "runs" / name
    run_dir = size_dir / "run"
    result: dict[str, Any] = {
        "size": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": "synthetic" if spec else "movielens-100k",
        "spec": spec.to_json() if spec else None,
        "epochs": epochs,
        "variant_of": log_name if variant else None,
    }
    if spec is None:
        data_args = ["--dataset", "movielens-100k"]
        if data_dir_100k is not None:
            data_args += ["--data-dir", str(Path(data_dir_100k).resolve())]
        result["log"] = None
    else:
        log = _prepare_log(log_name, spec, workdir, progress)
        result["log"] = log
        data_args = ["--dataset-config", log["dataset_config"]]
    if size_dir.exists():
        shutil.rmtree(size_dir)  # our own previous run of this size
    size_dir.mkdir(parents=True)
    env = _child_env()
    config_args: list[str] = []
    if variant is not None:
        config_path = size_dir / "config.json"
        config_path.write_text(json.dumps(variant.config, indent=2) + "\n")
        config_args = ["--config", str(config_path)]
    train_cmd = twotower_command(
        "train",
        *data_args,
        *config_args,
        "--out",
        str(run_dir),
        "--epochs",
        str(epochs),
        *train_flags,
        *extra_train_args,
    )
    stages: dict[str, Any] = {}
    result["stages"] = stages
    train = run_stage("train", train_cmd, size_dir, timeout_s=stage_timeout_s, env=env)
    stages["train"] = train.to_json()
    metrics = _read_json(run_dir / "metrics.json") if train.ok else None
    result["train_metrics"] = _train_metrics(metrics)
    if not train.ok:
        return _finish(result, f"train {train.status}: {train.reason}", run_dir, keep)
    if metrics is None:
        return _finish(result, f"train: no readable {run_dir / 'metrics.json'}", run_dir, keep)
    eval_json = size_dir / "evaluate.json"
    evaluate_cmd = twotower_command(
        "evaluate",
        "--run",
        str(run_dir),
        "--split",
        "test",
        "--json",
        str(eval_json),
        *_sample_args(spec),
    )
    evaluate = run_stage("evaluate", evaluate_cmd, size_dir, timeout_s=stage_timeout_s, env=env)
    stages["evaluate"] = evaluate.to_json()
    if not evaluate.ok:
        return _finish(result, f"evaluate {evaluate.status}: {evaluate.reason}", run_dir, keep)
    report = _read_json(eval_json)
    if report is None:
        return _finish(result, f"evaluate: no readable {eval_json}", run_dir, keep)
    result["recall_at_10"] = {
        model: values.get("recall@10")
        for model, values in report.items()
        if isinstance(values, dict) and "recall@10" in values
    }
    return _finish(result, None, run_dir, keep)


# Logs with more users than this are evaluated on a seeded sample of `EVAL_USERS` test users
# (`--eval-users`): ranking a million users over the whole catalog with every baseline (random
# scores, SVD tuned over five ranks on validation) would take hours on two cores.
SAMPLE_ABOVE_USERS = 200_000
EVAL_USERS = 20_000


def _sample_args(spec: SyntheticLogSpec | None) -> list[str]:
    if spec is None or spec.users <= SAMPLE_ABOVE_USERS:
        return []
    return ["--eval-users", str(EVAL_USERS)]


def _train_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    timings = metrics.get("timings")
    return {
        "examples_per_second": metrics.get("examples_per_second"),
        "examples_per_second_after_warmup": metrics.get("examples_per_second_after_warmup"),
        "warmup_seconds": metrics.get("warmup_seconds"),
        "train_seconds": metrics.get("train_seconds"),
        "timings": timings if isinstance(timings, dict) else None,
        "best_epoch": metrics.get("best_epoch"),
        "data": (metrics.get("data") or {}),
        "filters": metrics.get("filters"),
    }


def _finish(result: dict[str, Any], failure: str | None, run_dir: Path, keep: bool):
    result["status"] = "ok" if failure is None else "failed"
    result["reason"] = failure
    result["run_dir"] = str(run_dir) if keep and run_dir.exists() else None
    if not keep and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_train_benchmark(
    sizes: Sequence[str],
    workdir: Path,
    data_dir_100k: Path | None = None,
    epochs: int = 1,
    *,
    extra_train_args: Sequence[str] = (),
    stage_timeout_s: float | None = None,
    keep: bool = False,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Measures every size in `sizes` (see the module docstring); the benchmark's result.

    Args:
      workdir: logs go to `<workdir>/logs/<size>` (kept and reused), runs and stage logs to
        `<workdir>/runs/<size>` (the run directory is deleted afterwards unless `keep`).
      data_dir_100k: extracted MovieLens 100K for the `ml100k` size; None lets `twotower train`
        find it in its download cache (downloading it if needed).
      extra_train_args: appended to the `twotower train` command (e.g. `--batch-size 1024`).
      stage_timeout_s: a stage running longer is killed and recorded as `timeout`.
      log: called with a line of progress per stage.
    """
    unknown = [s for s in sizes if s not in CASES]
    if unknown:
        raise ValueError(f"unknown size(s) {unknown}; choose from {', '.join(CASES)}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    workdir = Path(workdir).expanduser().resolve()
    env = _child_env()
    flags = available_train_flags(env)
    results = []
    for name in sizes:
        log(f"[{name}] generating/reusing the log, then train and evaluate ...")
        entry = run_size(
            name,
            workdir,
            data_dir_100k=data_dir_100k,
            epochs=epochs,
            train_flags=flags,
            extra_train_args=extra_train_args,
            stage_timeout_s=stage_timeout_s,
            keep=keep,
            progress=progress,
        )
        log(f"[{name}] {summary_line(entry)}")
        results.append(entry)
    return {
        "epochs": epochs,
        "workdir": str(workdir),
        "train_flags": list(flags),
        "extra_train_args": list(extra_train_args),
        "sizes": results,
        "targets": check_targets(results),
    }


def merge_results(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """`current`, plus the sizes of `previous` that `current` did not measure (kept with their
    own `measured_at`); targets are re-checked over the merged sizes."""
    measured = {entry["size"] for entry in current["sizes"]}
    kept = [
        entry
        for entry in (previous or {}).get("sizes", [])
        if isinstance(entry, dict) and entry.get("size") in CASES and entry["size"] not in measured
    ]
    order = list(CASES)
    sizes = sorted([*current["sizes"], *kept], key=lambda entry: order.index(entry["size"]))
    return {**current, "sizes": sizes, "targets": check_targets(sizes)}


def _peak_rss(entry: dict[str, Any]) -> int | None:
    peaks = [stage.get("peak_rss_bytes") for stage in entry.get("stages", {}).values()]
    peaks = [p for p in peaks if isinstance(p, int)]
    return max(peaks) if peaks else None


def _timing(entry: dict[str, Any], stage: str) -> float | None:
    timings = (entry.get("train_metrics") or {}).get("timings") or {}
    value = timings.get(stage)
    return float(value) if isinstance(value, int | float) else None


def preprocess_seconds(entry: dict[str, Any]) -> float | None:
    """`timings.preprocess` of the run's metrics.json, when the trainer reports it."""
    return _timing(entry, "preprocess")


def examples_per_second(entry: dict[str, Any]) -> float | None:
    """The trainer's training throughput once warm: `examples_per_second_after_warmup` (the
    first execution, which traces and compiles the step, left out), else `examples_per_second`
    for trainers that do not report it."""
    metrics = entry.get("train_metrics") or {}
    value = metrics.get("examples_per_second_after_warmup", metrics.get("examples_per_second"))
    return float(value) if isinstance(value, int | float) else None


def _speed_ratio(entry: dict[str, Any], reference: dict[str, Any] | None) -> float | None:
    """examples/s of `entry` over that of `reference`, when both were measured."""
    if reference is None:
        return None
    numerator, denominator = examples_per_second(entry), examples_per_second(reference)
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


# Targets whose measured number must stay at or below their limit; those below must reach it.
_AT_MOST = ("preprocess_s", "fit_s")
_AT_LEAST = ("examples_per_second", "speed_ratio")


def check_targets(sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of `TARGETS`: `met`, `not met` or `not measured`, with the measured value."""
    by_size = {entry["size"]: entry for entry in sizes}
    checked = []
    for target in TARGETS:
        entry = by_size.get(target.size)
        value: Any = None
        verdict = "not measured"
        if entry is not None and target.metric == "evaluate_ok":
            value = entry.get("status")
            verdict = "met" if entry.get("status") == "ok" else "not met"
        elif entry is not None and target.metric == "peak_rss":
            value = _peak_rss(entry)
            complete = entry.get("status") == "ok"
            if value is not None and value > target.limit:
                verdict = "not met"
            elif value is not None and complete:
                verdict = "met"
            elif value is not None:
                verdict = "not met"  # a stage failed: its peak is not that of a full run
        elif entry is not None:
            value = _measured(target, entry, by_size)
            if value is not None:
                within = (
                    value <= target.limit if target.metric in _AT_MOST else value >= target.limit
                )
                verdict = "met" if within else "not met"
        checked.append(
            {
                "size": target.size,
                "target": target.text,
                "metric": target.metric,
                "value": value,
                "verdict": verdict,
            }
        )
    return checked


def _measured(
    target: Target, entry: dict[str, Any], by_size: Mapping[str, dict[str, Any]]
) -> float | None:
    """The number an `_AT_MOST` or `_AT_LEAST` target is checked on."""
    if target.metric in _AT_MOST:
        return _timing(entry, target.metric.removesuffix("_s"))
    if target.metric == "examples_per_second":
        return examples_per_second(entry)
    if target.metric == "speed_ratio":
        return _speed_ratio(entry, by_size.get(target.reference))
    raise ValueError(f"unknown target metric {target.metric!r}")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _counts(entry: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Rows, users and items of the log (the source data, before the label filter)."""
    if entry.get("spec"):
        spec = entry["spec"]
        return spec["rows"], spec["users"], spec["items"]
    data = (entry.get("train_metrics") or {}).get("data") or {}
    return data.get("interactions"), data.get("users"), data.get("items")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in result["sizes"]:
        stages = entry.get("stages", {})
        train, evaluate = stages.get("train", {}), stages.get("evaluate", {})
        metrics = entry.get("train_metrics") or {}
        log = entry.get("log") or {}
        recall = entry.get("recall_at_10") or {}
        generate = log.get("generate_seconds")
        rows.append(
            [
                entry["size"],
                *(_fmt(v) for v in _counts(entry)),
                f"{_fmt(generate)} (cached)" if log.get("reused") else _fmt(generate),
                _fmt(preprocess_seconds(entry)),
                _fmt(_timing(entry, "fit")),
                _fmt(train.get("seconds")),
                _fmt(metrics.get("examples_per_second"), 0),
                _fmt(metrics.get("examples_per_second_after_warmup"), 0),
                _fmt(metrics.get("warmup_seconds")),
                _fmt(evaluate.get("seconds")),
                _fmt(train.get("peak_rss_gb"), 2),
                _fmt(evaluate.get("peak_rss_gb"), 2),
                _fmt(recall.get("two_tower"), 4),
                _fmt(recall.get("popularity"), 4),
                entry.get("status", "—")
                if entry.get("status") == "ok"
                else f"failed: {entry.get('reason')}",
            ]
        )
    return rows


HEADERS = (
    "size",
    "rows",
    "users",
    "items",
    "generate s",
    "preprocess s",
    "fit s",
    "train cmd s",
    "examples/s",
    "examples/s after warm-up",
    "warm-up s",
    "evaluate s",
    "peak RSS train GB",
    "peak RSS evaluate GB",
    "recall@10 two_tower",
    "recall@10 popularity",
    "status",
)


def render_markdown(result: dict[str, Any]) -> str:
    """The `train` section of docs/benchmarks.md."""
    from benchmarks.report import markdown_table

    table = markdown_table(HEADERS, table_rows(result))
    targets = markdown_table(
        ("size", "target", "measured", "verdict"),
        [
            [t["size"], t["target"], _target_value(t), t["verdict"]]
            for t in result.get("targets", [])
        ],
    )
    commands = sorted(
        {
            stage["command"]
            for entry in result["sizes"]
            for stage in entry.get("stages", {}).values()
            if entry["size"] != "tiny" and stage.get("command")
        }
    )
    when = ", ".join(f"{e['size']} {e.get('measured_at', '?')}" for e in result["sizes"])
    lines = [
        "## Training at scale (`twotower bench train`)",
        "",
        "Synthetic logs with planted structure (`benchmarks/synthetic.py`: string ids, a year of "
        "epoch-second timestamps, `likes` with `positive_if: likes > 0` keeping about two "
        "thirds, users' `country`, items' `category` and `tags`; items in clusters, each user "
        "preferring one), plus MovieLens 100K. Each size runs `twotower train` (preprocessing "
        f"and {result.get('epochs', 1)} epoch(s)) and `twotower evaluate --split test` as "
        "subprocesses (logs of more than "
        f"{SAMPLE_ABOVE_USERS:,} users are evaluated on a seeded sample of {EVAL_USERS:,} test "
        "users, `--eval-users`). *generate s*: writing the log (not part of preprocessing; `(cached)`: "
        "an identical log written earlier was reused); *preprocess s* and *fit s*: `timings.preprocess` and "
        "`timings.fit` of the run's metrics.json, as the trainer defines them (— when it does "
        "not report them; all its timings are in the second table); *train cmd s*: wall time "
        "of the whole `twotower train` command (start-up, reading the tables, preprocessing, "
        "training, writing the run); "
        "*examples/s*: the trainer's `examples_per_second` (training steps of the first fit, "
        "validation ranking excluded); *after warm-up*: the same without the first execution "
        "of steps, which also traces and compiles the training step (*warm-up s*); the speed "
        "targets are checked on it. Peak RSS: the command's "
        "`ru_maxrss` (GB = 10^9 bytes). Recall@10 on the test split, two-tower vs popularity.",
        "",
        table.rstrip(),
        "",
        "Trainer timings (seconds, `timings` of metrics.json):",
        "",
        _timings_table(result).rstrip(),
        "",
        "Targets (2-core, 24 GB machine):",
        "",
        targets.rstrip(),
        "",
        "Measured: " + when + ".",
    ]
    if commands:
        lines += ["", "Commands:", "", "```", *commands, "```"]
    return "\n".join(lines) + "\n"


def _timings_table(result: dict[str, Any]) -> str:
    from benchmarks.report import markdown_table

    timings = {
        entry["size"]: (entry.get("train_metrics") or {}).get("timings") or {}
        for entry in result["sizes"]
    }
    stages = list(dict.fromkeys(stage for values in timings.values() for stage in values))
    if not stages:
        return "(none reported)\n"
    return markdown_table(
        ("size", *stages),
        [
            [size, *(_fmt(values.get(stage), 2) for stage in stages)]
            for size, values in timings.items()
        ],
    )


def _target_value(target: dict[str, Any]) -> str:
    value = target["value"]
    if value is None:
        return "—"
    metric = target.get("metric")
    if metric == "peak_rss" or "RSS" in target["target"]:  # results written before `metric`
        return f"{value / GB:.2f} GB"
    if metric == "speed_ratio":
        return f"{value:.3f}x"
    if metric == "examples_per_second":
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.1f} s"
    return str(value)


def summary_line(entry: dict[str, Any]) -> str:
    """One line for the terminal: status, stage seconds, peak RSS, recall@10."""
    if entry.get("status") != "ok":
        return f"failed: {entry.get('reason')}"
    stages = entry["stages"]
    recall = entry.get("recall_at_10") or {}
    rss = max(stage["peak_rss_bytes"] for stage in stages.values()) / GB
    return (
        f"ok: train {stages['train']['seconds']:.1f} s, evaluate "
        f"{stages['evaluate']['seconds']:.1f} s, peak RSS {rss:.2f} GB, recall@10 two_tower "
        f"{_fmt(recall.get('two_tower'), 4)} vs popularity {_fmt(recall.get('popularity'), 4)}"
    )


__all__ = [
    "DEFAULT_SIZES",
    "SIZES",
    "StageResult",
    "check_targets",
    "merge_results",
    "render_markdown",
    "run_stage",
    "run_train_benchmark",
]
