"""Distribution strategies and the roles of a training cluster's tasks.

- `default`: one process, its devices as TensorFlow places them.
- `mirrored`: every local device holds a replica of the model (synchronous).
- `multi-worker`: `MultiWorkerMirroredStrategy`; every worker in TF_CONFIG trains a full replica
  on its own example shards, gradients all-reduced each step.
- `parameter-server`: `ParameterServerStrategy`; the variables live on the `ps` tasks, embedding
  tables split across them by `MinSizePartitioner` (for tables too large for one machine), the
  `worker` tasks run training steps asynchronously, and the `chief` (the coordinator) schedules
  them, ranks validation and writes the run. Workers and parameter servers only serve: the same
  `twotower train --strategy parameter-server` command, run in a `worker` or `ps` task, starts
  that task's server and blocks (`serve_cluster_task`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

import tensorflow as tf

from tfrs_model.config import STRATEGIES
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

PARAMETER_SERVER = "parameter-server"
SERVER_ROLES = ("worker", "ps")


def task_type(environ: Mapping[str, str] | None = None) -> str | None:
    """This process's task type in TF_CONFIG (`chief`, `worker`, `ps`, ...), None without one.

    Raises:
      ConfigError: TF_CONFIG is set but is not JSON with a `task.type`.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        return None
    try:
        task = json.loads(raw).get("task") or {}
    except (ValueError, AttributeError) as error:
        raise ConfigError(
            f"TF_CONFIG is not a JSON object with cluster and task ({error}); see "
            "https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable"
        ) from error
    return task.get("type")


def make_strategy(name: str, min_shard_bytes: int = 1 << 20) -> tf.distribute.Strategy:
    """The strategy `name` (one of `STRATEGIES`); cluster strategies read TF_CONFIG.

    `min_shard_bytes`: under `parameter-server`, variables are split across the servers in
    pieces of at least this size (dense layers stay whole, large embedding tables are split).

    Raises:
      ConfigError: an unknown name, or `parameter-server` without ps and worker tasks.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == PARAMETER_SERVER:
        return _parameter_server_strategy(min_shard_bytes)
    if name == "default":
        return tf.distribute.get_strategy()
    raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")


def _parameter_server_strategy(min_shard_bytes: int) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    servers = len(cluster.get("ps", []))
    if not servers or not cluster.get("worker"):
        raise ConfigError(
            "--strategy parameter-server needs TF_CONFIG with `ps` and `worker` tasks (and this "
            f"process as the `chief`); its cluster has {sorted(cluster) or 'no tasks'}"
        )
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=servers
    )
    logger.info(
        "parameter servers: %d, workers: %d; variables over %s bytes split across them",
        servers,
        len(cluster["worker"]),
        f"{min_shard_bytes:,}",
    )
    return tf.distribute.experimental.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner
    )


def is_server_task(strategy_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True for a `worker` or `ps` task of a parameter-server cluster: it serves, not trains."""
    return strategy_name == PARAMETER_SERVER and task_type(environ) in SERVER_ROLES


def serve_cluster_task() -> None:
    """Runs this process's TF_CONFIG task (a worker or parameter server) until it is killed.

    The coordinator (chief) sends it the training steps and variables; it needs nothing else.
    """
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    logger.info(
        "serving as %s %d of the parameter-server cluster", resolver.task_type, resolver.task_id
    )
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    server.join()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run: no cluster, the `chief` task, or worker 0 of a
    cluster without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    kind, index = resolver.task_type, resolver.task_id
    return kind == "chief" or (
        kind == "worker" and index == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def shards_of(variable: tf.Variable) -> list[tf.Variable]:
    """The pieces of a variable split across parameter servers (a `ShardedVariable`), or the
    variable itself: what a model's `trainable_variables` list."""
    return list(getattr(variable, "variables", None) or [variable])


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)
