"""TF Serving launcher: rendered config files parse back, argv, the server choice, and the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import stat
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.server import launcher
from serving.server.config import ServingConfig, VersionPolicy
from tfrs_model.errors import ConfigError
from twotower.commands import serve as serve_cli


def _config(tmp_path: Path, **overrides) -> ServingConfig:
    return ServingConfig(model_base_path=tmp_path / "models" / "twotower", **overrides)


def _parse_model_config(text: str) -> model_server_config_pb2.ModelConfig:
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = parsed.model_config_list.config
    return model


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy.latest(), "latest { num_versions: 1 }"),
        (VersionPolicy.latest(2), "latest { num_versions: 2 }"),
        (VersionPolicy.specific(3, 1), "specific { versions: 1 versions: 3 }"),
        (VersionPolicy.all(), "all { }"),
    ],
)
def test_model_config_parses_back_with_the_version_policy(tmp_path, policy, expected):
    config = _config(tmp_path, model_name="recs", version_policy=policy)

    model = _parse_model_config(launcher.render_model_config(config))

    assert model.name == "recs"
    assert model.base_path == str((tmp_path / "models" / "twotower").resolve())
    assert model.model_platform == "tensorflow"
    want = model_server_config_pb2.ModelConfig()
    text_format.Parse(f"model_version_policy {{ {expected} }}", want)
    assert model.model_version_policy == want.model_version_policy


def test_model_config_carries_the_version_labels(tmp_path):
    config = _config(tmp_path, version_labels={"stable": 1, "canary": 2})

    model = _parse_model_config(launcher.render_model_config(config))

    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def test_batching_parameters_parse_back(tmp_path):
    config = _config(tmp_path, max_batch_size=64, batch_timeout_micros=500, num_batch_threads=4)
    message = launcher.batching_parameters_class()

    parsed = text_format.Parse(launcher.render_batching_parameters(config), message())

    assert parsed.max_batch_size.value == 64
    assert parsed.batch_timeout_micros.value == 500
    assert parsed.num_batch_threads.value == 4
    assert parsed.max_enqueued_batches.value == 64
    # TF Serving's field numbers (session_bundle_config.proto), so the binary reads the same.
    assert message.DESCRIPTOR.fields_by_name["num_batch_threads"].number == 4


def test_monitoring_config_enables_prometheus_at_tf_serving_path(tmp_path):
    text = launcher.render_monitoring_config(_config(tmp_path))

    parsed = text_format.Parse(text, launcher.monitoring_config_class()())

    assert parsed.prometheus_config.enable
    assert parsed.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_argv_names_the_written_files_and_tf_serving_flags(tmp_path):
    config = _config(
        tmp_path, poll_interval_s=2.5, version_labels={"stable": 1}, enable_batching=True
    )
    files = launcher.write_model_server_files(config, tmp_path / "conf")

    argv = launcher.model_server_argv(config, files)

    assert argv == [
        "tensorflow_model_server",
        "--port=8500",
        "--rest_api_port=8501",
        "--rest_api_timeout_in_ms=30000",
        f"--model_config_file={tmp_path / 'conf' / 'models.config'}",
        "--file_system_poll_wait_seconds=3",
        "--enable_model_warmup=true",
        f"--monitoring_config_file={tmp_path / 'conf' / 'monitoring.config'}",
        "--grpc_max_threads=16",
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching=true",
        f"--batching_parameters_file={tmp_path / 'conf' / 'batching_parameters.config'}",
    ]
    for path in (files.model_config, files.monitoring_config, files.batching_parameters):
        assert path.is_file()


def test_argv_without_batching_or_rest(tmp_path):
    config = _config(tmp_path, rest_port=None, enable_batching=False)
    files = launcher.write_model_server_files(config, tmp_path / "conf")

    argv = launcher.model_server_argv(config, files)

    assert files.batching_parameters is None
    assert "--rest_api_port=0" in argv  # TF Serving's way of saying "no REST"
    assert not any(arg.startswith("--enable_batching") for arg in argv)


def test_argv_passes_thread_pool_sizes_only_when_set(tmp_path):
    files = launcher.write_model_server_files(_config(tmp_path), tmp_path / "conf")
    assert not any(
        "op_parallelism" in arg for arg in launcher.model_server_argv(_config(tmp_path), files)
    )

    config = _config(tmp_path, tensorflow_intra_op_parallelism=2, tensorflow_inter_op_parallelism=4)
    argv = launcher.model_server_argv(config, files)

    assert "--tensorflow_intra_op_parallelism=2" in argv
    assert "--tensorflow_inter_op_parallelism=4" in argv
    args = _parse(["--model-base-path", "m", "--tensorflow-intra-op-parallelism", "1"])
    assert serve_cli.serving_config(args).tensorflow_intra_op_parallelism == 1


def test_argv_refuses_port_zero(tmp_path):
    config = _config(tmp_path, grpc_port=0)
    files = launcher.write_model_server_files(config, tmp_path / "conf")

    with pytest.raises(ConfigError, match="cannot pick a free port"):
        launcher.model_server_argv(config, files)


def _fake_model_server(directory: Path, record: Path, exit_code: int) -> None:
    """A `tensorflow_model_server` that records its argv and its config files, then exits."""
    script = directory / launcher.MODEL_SERVER_BINARY
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "files = {a.split('=', 1)[0]: open(a.split('=', 1)[1]).read()\n"
        "         for a in sys.argv[1:] if a.split('=', 1)[0].endswith('_file')}\n"
        f"json.dump({{'argv': sys.argv[1:], 'files': files}}, open({str(record)!r}, 'w'))\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_serve_runs_tensorflow_model_server_when_it_is_on_path(tmp_path, monkeypatch, caplog):
    bin_dir, record = tmp_path / "bin", tmp_path / "record.json"
    bin_dir.mkdir()
    _fake_model_server(bin_dir, record, exit_code=3)
    monkeypatch.setenv("PATH", str(bin_dir))
    config = _config(tmp_path, grpc_port=9500, rest_port=9501)
    config.model_base_path.mkdir(parents=True)

    with caplog.at_level(logging.INFO, logger="serving.server.launcher"):
        status = launcher.serve(config)

    assert status == 3  # the server's own exit status
    assert "serving with tensorflow_model_server" in caplog.text
    run = json.loads(record.read_text())
    assert "--port=9500" in run["argv"]
    model = _parse_model_config(run["files"]["--model_config_file"])
    assert model.base_path == str(config.model_base_path.resolve())


@pytest.mark.parametrize("embedded", [True, False])
def test_serve_uses_the_embedded_server_when_asked_or_without_tf_serving(
    tmp_path, monkeypatch, caplog, embedded
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if embedded:
        _fake_model_server(bin_dir, tmp_path / "record.json", exit_code=0)
    monkeypatch.setenv("PATH", str(bin_dir))
    served = []
    monkeypatch.setattr(
        "serving.server.server.run_until_signal", lambda config: served.append(config) or 0
    )
    config = _config(tmp_path)

    with caplog.at_level(logging.INFO, logger="serving.server.launcher"):
        status = launcher.serve(config, embedded=embedded)

    assert (status, served) == (0, [config])
    reason = "--embedded" if embedded else "tensorflow_model_server is not on PATH"
    assert f"serving with the embedded server ({reason})" in caplog.text


# --- CLI -------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_cli_defaults_are_tf_serving_conventions():
    args = _parse(["--model-base-path", "models/twotower"])

    config = serve_cli.serving_config(args)

    # The embedded server runs one worker process per core unless --workers says otherwise.
    assert config == ServingConfig(
        model_base_path=Path("models/twotower"), workers=serve_cli.default_workers()
    )
    assert (config.grpc_port, config.rest_port, config.host) == (8500, 8501, "127.0.0.1")
    assert args.handler is serve_cli._serve


def test_cli_flags_become_the_config():
    args = _parse(
        [
            "--model-base-path", "m", "--model-name", "recs", "--port", "0",
            "--rest-api-port", "0", "--host", "0.0.0.0", "--embedded",
            "--version-policy", "specific:1,2", "--version-label", "stable=1",
            "--version-label", "canary=2", "--enable-batching", "--max-batch-size", "64",
        ]
    )  # fmt: skip

    config = serve_cli.serving_config(args)

    assert args.embedded
    assert config.model_name == "recs"
    assert (config.grpc_port, config.rest_port, config.host) == (0, 0, "0.0.0.0")
    assert config.version_policy == VersionPolicy.specific(1, 2)
    assert dict(config.version_labels) == {"stable": 1, "canary": 2}
    assert (config.enable_batching, config.max_batch_size) == (True, 64)
    assert (
        serve_cli.serving_config(_parse(["--model-base-path", "m", "--no-rest"])).rest_port is None
    )


def test_cli_rejects_a_malformed_label():
    args = _parse(["--model-base-path", "m", "--version-label", "stable"])

    with pytest.raises(ConfigError, match="LABEL=VERSION"):
        serve_cli.serving_config(args)


def test_cli_handler_calls_the_launcher_once(monkeypatch):
    calls = []
    monkeypatch.setattr(
        launcher, "serve", lambda config, embedded: calls.append((config, embedded)) or 0
    )
    args = _parse(["--model-base-path", "m", "--embedded"])

    assert args.handler(args) == 0
    workers = serve_cli.default_workers()
    assert calls == [(ServingConfig(model_base_path=Path("m"), workers=workers), True)]
