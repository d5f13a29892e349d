"""Runs TensorFlow Serving for a `ServingConfig`, or the embedded server when it is not installed.

The render functions are pure: they turn a config into TF Serving's text-proto config files
(`--model_config_file`, `--batching_parameters_file`, `--monitoring_config_file`) and into the
`tensorflow_model_server` argv. `serve(config)` is what `twotower serve` calls: it writes the
files to a temporary directory and runs `tensorflow_model_server` when it is on PATH, and starts
the embedded server (`serving.server.server`) otherwise or when asked to.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.server.config import ServingConfig
from serving.server.monitoring import PROMETHEUS_PATH
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

MODEL_SERVER_BINARY = "tensorflow_model_server"
MODEL_CONFIG_FILE = "models.config"
BATCHING_PARAMETERS_FILE = "batching_parameters.config"
MONITORING_CONFIG_FILE = "monitoring.config"


@dataclass(frozen=True)
class ModelServerFiles:
    """Paths of the config files written for one `tensorflow_model_server` run."""

    model_config: Path
    monitoring_config: Path
    batching_parameters: Path | None


def render_model_config(config: ServingConfig) -> str:
    """The `--model_config_file` text: a ModelServerConfig with one model.

    The base path is made absolute (TF Serving may run elsewhere); the version policy and the
    version labels are those of `config`.
    """
    model = model_server_config_pb2.ModelConfig(
        name=config.model_name,
        base_path=str(config.model_base_path.resolve()),
        model_platform="tensorflow",
    )
    policy = config.version_policy
    if policy.kind == "latest":
        model.model_version_policy.latest.num_versions = policy.num_versions
    elif policy.kind == "specific":
        model.model_version_policy.specific.versions.extend(policy.versions)
    else:
        model.model_version_policy.all.SetInParent()
    for label, version in sorted(config.version_labels.items()):
        model.version_labels[label] = version
    server_config = model_server_config_pb2.ModelServerConfig()
    server_config.model_config_list.config.append(model)
    return text_format.MessageToString(server_config)


def render_batching_parameters(config: ServingConfig) -> str:
    """The `--batching_parameters_file` text: a BatchingParameters from the batching fields."""
    parameters = batching_parameters_class()()
    parameters.max_batch_size.value = config.max_batch_size
    parameters.batch_timeout_micros.value = config.batch_timeout_micros
    parameters.num_batch_threads.value = config.num_batch_threads
    parameters.max_enqueued_batches.value = config.max_enqueued_batches
    return text_format.MessageToString(parameters)


def render_monitoring_config(config: ServingConfig) -> str:
    """The `--monitoring_config_file` text: Prometheus on at /monitoring/prometheus/metrics."""
    monitoring = monitoring_config_class()()
    monitoring.prometheus_config.enable = True
    monitoring.prometheus_config.path = PROMETHEUS_PATH
    return text_format.MessageToString(monitoring)


def write_model_server_files(config: ServingConfig, directory: Path) -> ModelServerFiles:
    """Writes the rendered config files into `directory`; batching's only when it is on."""
    directory.mkdir(parents=True, exist_ok=True)
    files = ModelServerFiles(
        model_config=directory / MODEL_CONFIG_FILE,
        monitoring_config=directory / MONITORING_CONFIG_FILE,
        batching_parameters=directory / BATCHING_PARAMETERS_FILE
        if config.enable_batching
        else None,
    )
    files.model_config.write_text(render_model_config(config))
    files.monitoring_config.write_text(render_monitoring_config(config))
    if files.batching_parameters is not None:
        files.batching_parameters.write_text(render_batching_parameters(config))
    return files


def model_server_argv(
    config: ServingConfig, files: ModelServerFiles, binary: str = MODEL_SERVER_BINARY
) -> list[str]:
    """The `tensorflow_model_server` command line for `config` and its written files.

    Raises:
      ConfigError: a port is 0 (TF Serving cannot pick a free port; --rest_api_port=0 would
        disable REST instead).
    """
    if config.grpc_port == 0 or config.rest_port == 0:
        raise ConfigError(
            "tensorflow_model_server cannot pick a free port: give --port and --rest-api-port "
            "numbers, or use --embedded"
        )
    argv = [
        binary,
        f"--port={config.grpc_port}",
        # TF Serving's 0 disables REST, which is what rest_port=None means.
        f"--rest_api_port={config.rest_port or 0}",
        f"--rest_api_timeout_in_ms={math.ceil(config.rest_timeout_s * 1000)}",
        f"--model_config_file={files.model_config}",
        # TF Serving polls in whole seconds; 0 would mean "poll once", so round up to 1.
        f"--file_system_poll_wait_seconds={max(1, math.ceil(config.poll_interval_s))}",
        f"--enable_model_warmup={str(config.enable_warmup).lower()}",
        f"--monitoring_config_file={files.monitoring_config}",
        f"--grpc_max_threads={config.grpc_max_workers}",
    ]
    for flag in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        if getattr(config, flag):  # 0: TF Serving's own default, TensorFlow's choice
            argv.append(f"--{flag}={getattr(config, flag)}")
    if config.version_labels:
        # Labels are read with the config, before any version is AVAILABLE; without this flag
        # TF Serving refuses a label that points at a version still loading.
        argv.append("--allow_version_labels_for_unavailable_models=true")
    if files.batching_parameters is not None:
        argv += [
            "--enable_batching=true",
            f"--batching_parameters_file={files.batching_parameters}",
        ]
    return argv


def find_model_server() -> str | None:
    """The path of `tensorflow_model_server` on PATH, or None."""
    return shutil.which(MODEL_SERVER_BINARY)


def serve(config: ServingConfig, embedded: bool = False) -> int:
    """Serves `config` until SIGTERM or SIGINT; returns the exit status.

    Runs `tensorflow_model_server` when it is on PATH and `embedded` is False; otherwise the
    embedded server, in `config.workers` processes sharing the ports when that is above 1
    (`serving.server.supervisor`). Logs which one it chose.

    Raises:
      ConfigError: the config cannot be served (ports, model_base_path).
    """
    binary = None if embedded else find_model_server()
    if binary is None:
        logger.info(
            "serving with the embedded server (%s)",
            "--embedded" if embedded else f"{MODEL_SERVER_BINARY} is not on PATH",
        )
        if config.workers > 1:
            from serving.server.supervisor import run_workers

            return run_workers(config)
        from serving.server.server import run_until_signal  # imports TensorFlow: only here

        return run_until_signal(config)
    if config.workers > 1:
        logger.warning("--workers %d applies to the embedded server only", config.workers)
    logger.info("serving with %s (%s)", MODEL_SERVER_BINARY, binary)
    return run_model_server(config, binary)


def run_model_server(config: ServingConfig, binary: str) -> int:
    """Writes the config files to a temporary directory and runs `binary` until it exits.

    SIGTERM and SIGINT are passed on to it, so it drains as it would on its own. Returns its
    exit status.
    """
    if config.host not in ("0.0.0.0", "::"):
        logger.warning(
            "%s listens on all interfaces; --host %s only applies to the embedded server",
            MODEL_SERVER_BINARY,
            config.host,
        )
    if not config.model_base_path.is_dir():
        raise ConfigError(f"model_base_path {config.model_base_path} is not a directory")
    with tempfile.TemporaryDirectory(prefix="tf-serving-") as directory:
        files = write_model_server_files(config, Path(directory))
        argv = model_server_argv(config, files, binary)
        logger.info("running %s", " ".join(argv))
        process = subprocess.Popen(argv)
        forward = lambda signum, _frame: process.send_signal(signum)  # noqa: E731
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def batching_parameters_class() -> type[Any]:
    """`tensorflow.serving.BatchingParameters`; see `_tf_serving_message`."""
    return _tf_serving_message("BatchingParameters")


def monitoring_config_class() -> type[Any]:
    """`tensorflow.serving.MonitoringConfig`; see `_tf_serving_message`."""
    return _tf_serving_message("MonitoringConfig")


@functools.cache
def _tf_serving_message(name: str) -> type[Any]:
    """A message class for one of TF Serving's config protos missing from tensorflow-serving-api.

    The pip package ships model_server_config.proto but not session_bundle_config.proto
    (BatchingParameters) or monitoring_config.proto. Their fields are declared here with TF
    Serving's names and numbers, in a private descriptor pool so they can never clash with an
    installed definition, and rendered with the same text_format as the shipped protos.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(_config_file_descriptor().SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))


def _config_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED

    def message(
        name: str, *fields: tuple[str, int, int, int, str]
    ) -> descriptor_pb2.DescriptorProto:
        return descriptor_pb2.DescriptorProto(
            name=name,
            field=[
                field(name=f, number=n, label=label, type=kind, type_name=type_name or None)
                for f, n, label, kind, type_name in fields
            ],
        )

    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message_type = field.TYPE_MESSAGE
    return descriptor_pb2.FileDescriptorProto(
        name="twotower/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
        message_type=[
            # tensorflow_serving/servables/tensorflow/session_bundle_config.proto
            message(
                "BatchingParameters",
                ("max_batch_size", 1, optional, message_type, int64_value),
                ("batch_timeout_micros", 2, optional, message_type, int64_value),
                ("max_enqueued_batches", 3, optional, message_type, int64_value),
                ("num_batch_threads", 4, optional, message_type, int64_value),
                ("thread_pool_name", 5, optional, message_type, string_value),
                ("allowed_batch_sizes", 6, repeated, field.TYPE_INT64, ""),
                ("pad_variable_length_inputs", 7, optional, field.TYPE_BOOL, ""),
            ),
            # tensorflow_serving/config/monitoring_config.proto
            message(
                "PrometheusConfig",
                ("enable", 1, optional, field.TYPE_BOOL, ""),
                ("path", 2, optional, field.TYPE_STRING, ""),
            ),
            message(
                "MonitoringConfig",
                (
                    "prometheus_config",
                    1,
                    optional,
                    message_type,
                    ".tensorflow.serving.PrometheusConfig",
                ),
            ),
        ],
    )
