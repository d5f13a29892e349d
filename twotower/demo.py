"""The end-to-end demo: train, evaluate, export, serve, query over gRPC, stop cleanly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from export import contract

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Paths and knobs of `twotower demo`.

    Attributes:
      data_dir: extracted MovieLens 100K; None downloads it into `cache_dir`.
      run_dir: reused when it already holds a finished run (delete it or pass `retrain`).
      model_base_path: a new version is exported under it on every demo.
      users: the users queried over gRPC (plus one unknown user, answered from cold start).
    """

    data_dir: str | None
    run_dir: Path
    model_base_path: Path
    cache_dir: Path
    index: str = "scann"
    users: tuple[str, ...] = ("196", "186", "22")
    k: int = 10
    retrain: bool = False
    epochs: int | None = None
    extra_users: tuple[str, ...] = field(default=("new-user-without-history",))


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _train_if_needed(config: DemoConfig) -> None:
    from tfrs_model.config import DataConfig, RunConfig, TrainConfig, with_overrides
    from tfrs_model.data import load_data
    from tfrs_model.run import Run
    from tfrs_model.training import train

    if config.run_dir.exists() and not config.retrain:
        Run.open(config.run_dir)  # fails clearly if it is not a finished run
        print(f"reusing the run in {config.run_dir} (pass --retrain to train again)")
        return
    run_config = RunConfig(
        data=DataConfig(dataset="movielens-100k", data_dir=config.data_dir),
        train=with_overrides(TrainConfig(), epochs=config.epochs),
    )
    result = train(
        load_data(run_config.data, config.cache_dir), run_config, config.run_dir, overwrite=True
    )
    print(
        f"best epoch {result.best_epoch}: validation recall@10 "
        f"{result.validation.get('recall_at_10', 0):.4f} in {result.seconds:.0f}s"
    )


def run_demo(config: DemoConfig) -> int:
    """Runs every step, printing what it does; returns the exit code."""
    from export.index import IndexConfig
    from export.savedmodel import ExportConfig, export_run
    from serving.client import ClientConfig
    from serving.server.config import ServingConfig
    from serving.server.server import EmbeddedServer
    from tfrs_model.evaluation.evaluate import markdown_report
    from tfrs_model.evaluation.service import evaluate_run_dir
    from twotower.commands.query import QueryRequest, format_table, run_query

    _banner("1/5 train on MovieLens 100K")
    _train_if_needed(config)

    _banner("2/5 evaluate on the test split (model vs baselines)")
    print(markdown_report(evaluate_run_dir(config.run_dir, "test")))

    _banner(f"3/5 export the production model with a {config.index} index")
    exported = export_run(
        ExportConfig(
            run_dir=str(config.run_dir),
            model_base_path=str(config.model_base_path),
            index=IndexConfig(kind=config.index),
        )
    )
    print(
        f"version {exported.version} at {exported.path}: {exported.weights} weights (trained on "
        f"{' + '.join(exported.trained_on)}), history known through {exported.known_through}; "
        f"verification {exported.verification}"
    )

    _banner("4/5 serve over gRPC (embedded TF-Serving-compatible server)")
    server = EmbeddedServer(
        ServingConfig(model_base_path=config.model_base_path, grpc_port=0, rest_port=0)
    )
    ports = server.start()
    target = f"127.0.0.1:{ports.grpc}"
    print(f"serving {contract.DEFAULT_MODEL_NAME} on {target} (REST on port {ports.rest})")
    try:
        _banner("5/5 query over gRPC")
        request = QueryRequest(ids=config.users + config.extra_users, k=config.k)
        print(format_table(run_query(ClientConfig(target=target), request)))
    finally:
        server.stop(grace=5.0)
        print("server stopped")
    return 0
