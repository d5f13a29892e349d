"""Typed configuration of the model server: what to serve, where to listen, and the limits.

One `ServingConfig` drives both servers: the embedded one (`serving.server.server`) reads it
directly and the launcher (`serving.server.launcher`) renders it into TensorFlow Serving's config
files and flags.
The module is pure Python: importing it does not import TensorFlow.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from export.contract import DEFAULT_MODEL_NAME, GRPC_PORT, REST_PORT
from tfrs_model.errors import ConfigError

# Model names and labels appear in REST paths (`/v1/models/<name>/labels/<label>`), so they may
# not contain '/' or ':' (TF Serving's path regex excludes both).
_NAME_PATTERN = re.compile(r"[^/:\s]+")


@dataclass(frozen=True)
class VersionPolicy:
    """Which numeric version directories under `model_base_path` are served.

    TF Serving's `ServableVersionPolicy`: `latest(n)` serves the n highest versions (default 1),
    `specific(1, 3)` exactly those, `all()` every version found. A version that fails to load is
    left out and the policy is applied to the remaining ones, so the version serving before keeps
    serving.

    Attributes:
      kind: "latest", "specific" or "all".
      num_versions: with "latest", how many of the highest versions to serve.
      versions: with "specific", the version numbers to serve.
    """

    kind: Literal["latest", "specific", "all"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "specific", "all"):
            raise ConfigError(f"version policy must be latest, specific or all, not {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ConfigError(f"latest:N needs N >= 1, got {self.num_versions}")
        if self.kind == "specific" and not self.versions:
            raise ConfigError("the specific version policy needs at least one version, e.g. 1,2")
        if any(version < 0 for version in self.versions):
            raise ConfigError(f"versions are non-negative integers, got {self.versions}")
        object.__setattr__(self, "versions", tuple(sorted(set(self.versions))))

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        return cls("latest", num_versions=num_versions)

    @classmethod
    def specific(cls, *versions: int) -> VersionPolicy:
        return cls("specific", versions=tuple(versions))

    @classmethod
    def all(cls) -> VersionPolicy:
        return cls("all")

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parses `latest`, `latest:N`, `all` or `specific:V1,V2,...` (the CLI's syntax).

        Raises:
          ConfigError: `text` is none of these.
        """
        kind, _, argument = text.strip().partition(":")
        try:
            if kind == "latest":
                return cls.latest(int(argument) if argument else 1)
            if kind == "specific":
                return cls.specific(*(int(v) for v in argument.split(",") if v.strip()))
        except ValueError:
            pass
        else:
            if kind == "all" and not argument:
                return cls.all()
        raise ConfigError(
            f"cannot parse version policy {text!r}: use latest, latest:N, all or specific:1,2"
        )

    def select(self, versions: Iterable[int]) -> set[int]:
        """The subset of the loadable `versions` this policy serves."""
        versions = set(versions)
        if self.kind == "latest":
            return set(sorted(versions)[-self.num_versions :])
        if self.kind == "specific":
            return versions & set(self.versions)
        return versions


@dataclass(frozen=True)
class TensorLimits:
    """Bounds on one request tensor, checked before it is decoded (`serving.server.limits`).

    Attributes:
      max_batch_size: largest dimension 0 of an input whose signature leaves it free.
      max_dim_size: largest size of any other dimension.
      max_tensor_elements: most elements (product of the dimensions) in one tensor.
      max_tensor_bytes: most bytes one tensor may take once decoded.
      max_rank: most dimensions in one tensor (JSON nesting depth on REST).
    """

    max_batch_size: int = 1024
    max_dim_size: int = 65_536
    max_tensor_elements: int = 1 << 22
    max_tensor_bytes: int = 256 * 1024 * 1024
    max_rank: int = 32


@dataclass(frozen=True)
class ServingConfig:
    """What the model server serves, where it listens, and its limits.

    Attributes:
      model_base_path: directory holding one numeric subdirectory per version (`<path>/<int>/`).
      model_name: the name clients put in `ModelSpec.name` and REST paths.
      host: interface both servers bind; 127.0.0.1 keeps them local, 0.0.0.0 exposes them.
      grpc_port: gRPC port (TF Serving's 8500); 0 picks a free port (embedded server only).
      rest_port: REST port (TF Serving's 8501); 0 picks a free port; None disables REST.
      version_policy: which versions are served; default the latest.
      version_labels: label -> version, for `ModelSpec.version_label` and `/labels/<label>`.
      poll_interval_s: seconds between scans of `model_base_path` for new versions.
      max_message_bytes: largest request accepted; bigger ones fail with INVALID_ARGUMENT (gRPC
        refuses messages over twice this size itself, with RESOURCE_EXHAUSTED, before reading them).
      max_batch_size: largest 0th dimension of any batched input; bigger fails INVALID_ARGUMENT.
      max_dim_size: largest size of any other input dimension; bigger fails INVALID_ARGUMENT.
      max_tensor_elements: most elements in one input tensor; more fails INVALID_ARGUMENT.
      max_tensor_bytes: most bytes one input tensor may decode to; more fails INVALID_ARGUMENT.
        All four are checked on the declared shape before anything is allocated.
      grpc_max_workers: threads answering gRPC calls.
      rest_max_workers: threads running REST requests (the HTTP server itself is one event loop).
      rest_max_connections: open REST connections at most; more are answered 503 and closed.
      rest_backlog: connections the kernel queues for the REST port before refusing them.
      rest_read_timeout_s: how long a REST request body may take to arrive; then 408.
      rest_keepalive_s: how long an idle REST keep-alive connection stays open.
      rest_timeout_s: REST predictions running longer than this fail with DEADLINE_EXCEEDED
        (TF Serving's --rest_api_timeout_in_ms); gRPC calls use the client's deadline.
      enable_warmup: replay `<version>/assets.extra/tf_serving_warmup_requests` before serving.
      drain_grace_s: on SIGTERM, how long in-flight requests may take before they are cancelled.
      enable_batching: merge concurrent Predict calls to the same signature into one model call
        (on by default: with `batch_timeout_micros` 0 it costs an idle server nothing, and at 32
        clients on 2 workers it answered 1.16x-1.43x the requests at a lower p99;
        docs/serving.md).
      batch_timeout_micros: with batching, how long a call waits for others to join its batch;
        0 (TF Serving's advice for online serving) batches only calls that queued up anyway.
      num_batch_threads: with batching, how many merged batches run at the same time.
      max_enqueued_batches: with batching, how many batches may wait; beyond, UNAVAILABLE.
      tensorflow_intra_op_parallelism: threads one TensorFlow op may use in a server process
        (TF Serving's --tensorflow_intra_op_parallelism).
      tensorflow_inter_op_parallelism: TensorFlow ops that may run at once in a server process
        (TF Serving's --tensorflow_inter_op_parallelism). For both, 0 means: TensorFlow's choice
        (one thread per core) in one process; with several embedded `workers`, each worker's
        share of the cores (`worker_threads`), since workers that each size their pools to
        every core only contend for them.
      workers: embedded server processes sharing the gRPC and REST ports (SO_REUSEPORT), each
        loading the model from `model_base_path` itself (`serving.server.supervisor`); 1 serves
        from one process.
      reuse_port: listen with SO_REUSEPORT so that several processes share the ports; the
        supervisor sets it for its workers.
      max_worker_restarts: with several workers, crashed workers restarted within one minute at
        most; one more crash stops the server with a non-zero exit status.
    """

    model_base_path: Path
    model_name: str = DEFAULT_MODEL_NAME
    host: str = "127.0.0.1"
    grpc_port: int = GRPC_PORT
    rest_port: int | None = REST_PORT
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: Mapping[str, int] = field(default_factory=dict)
    poll_interval_s: float = 1.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_batch_size: int = 1024
    max_dim_size: int = TensorLimits.max_dim_size
    max_tensor_elements: int = TensorLimits.max_tensor_elements
    max_tensor_bytes: int = TensorLimits.max_tensor_bytes
    grpc_max_workers: int = 16
    rest_max_workers: int = 16
    rest_max_connections: int = 1024
    rest_backlog: int = 1024
    rest_read_timeout_s: float = 30.0
    rest_keepalive_s: float = 30.0
    rest_timeout_s: float = 30.0
    enable_warmup: bool = True
    drain_grace_s: float = 20.0
    enable_batching: bool = True
    batch_timeout_micros: int = 0
    num_batch_threads: int = 2
    max_enqueued_batches: int = 64
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    workers: int = 1
    reuse_port: bool = False
    max_worker_restarts: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_base_path", Path(self.model_base_path))
        # A read-only copy, so the frozen config cannot change through the caller's dict.
        object.__setattr__(
            self, "version_labels", types.MappingProxyType(dict(self.version_labels))
        )
        if not _NAME_PATTERN.fullmatch(self.model_name):
            raise ConfigError(
                f"model_name must be non-empty without '/', ':' or spaces, got {self.model_name!r}"
            )
        for label, version in self.version_labels.items():
            if not _NAME_PATTERN.fullmatch(label) or label.isdigit():
                raise ConfigError(
                    f"version label {label!r} must be a non-numeric name without '/' or ':'"
                )
            if not isinstance(version, int) or version < 0:
                raise ConfigError(
                    f"version label {label!r} must map to a version number, not {version!r}"
                )
        if not self.host:
            raise ConfigError("host must be an interface address, e.g. 127.0.0.1 or 0.0.0.0")
        ports = [("grpc_port", self.grpc_port), ("rest_port", self.rest_port)]
        for name, port in ports:
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(
                    f"{name} must be in [0, 65535] (0 = pick a free port), got {port}"
                )
        if self.rest_port is not None and self.rest_port == self.grpc_port != 0:
            raise ConfigError(f"grpc_port and rest_port must differ, both are {self.grpc_port}")
        positive = {
            "poll_interval_s": self.poll_interval_s,
            "max_message_bytes": self.max_message_bytes,
            "max_batch_size": self.max_batch_size,
            "max_dim_size": self.max_dim_size,
            "max_tensor_elements": self.max_tensor_elements,
            "max_tensor_bytes": self.max_tensor_bytes,
            "grpc_max_workers": self.grpc_max_workers,
            "rest_max_workers": self.rest_max_workers,
            "rest_max_connections": self.rest_max_connections,
            "rest_backlog": self.rest_backlog,
            "rest_read_timeout_s": self.rest_read_timeout_s,
            "rest_keepalive_s": self.rest_keepalive_s,
            "rest_timeout_s": self.rest_timeout_s,
            "num_batch_threads": self.num_batch_threads,
            "max_enqueued_batches": self.max_enqueued_batches,
            "workers": self.workers,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.drain_grace_s < 0 or self.batch_timeout_micros < 0 or self.max_worker_restarts < 0:
            raise ConfigError(
                "drain_grace_s, batch_timeout_micros and max_worker_restarts must be >= 0"
            )
        for name in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name} must be >= 0 (0: TensorFlow's choice, or each worker's share of "
                    f"the cores), got {getattr(self, name)}"
                )

    def worker_threads(self, cores: int) -> tuple[int, int]:
        """(intra-op, inter-op) threads for each of `workers` processes on `cores` cores: the
        fields as set, or for 0 with several workers their share of the cores (at least 1),
        else 0 (TensorFlow's choice).

        Measured on 2 cores, 2 workers, 32 clients: sessions sized to every core (TensorFlow's
        default) answered 1,870-2,389 QPS, one thread each 2,452-2,616 (docs/serving.md).
        """
        share = max(1, cores // self.workers) if self.workers > 1 else 0
        return (
            self.tensorflow_intra_op_parallelism or share,
            self.tensorflow_inter_op_parallelism or share,
        )

    @property
    def tensor_limits(self) -> TensorLimits:
        """The limits every request tensor is checked against before it is decoded."""
        return TensorLimits(
            max_batch_size=self.max_batch_size,
            max_dim_size=self.max_dim_size,
            max_tensor_elements=self.max_tensor_elements,
            max_tensor_bytes=self.max_tensor_bytes,
        )


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def config_to_json(config: ServingConfig) -> dict[str, Any]:
    """`config` as JSON-serializable values, read back by `config_from_json` (in a worker)."""
    values: dict[str, Any] = {f.name: getattr(config, f.name) for f in fields(config)}
    values["model_base_path"] = str(config.model_base_path)
    values["version_labels"] = dict(config.version_labels)
    policy = config.version_policy
    values["version_policy"] = {
        "kind": policy.kind,
        "num_versions": policy.num_versions,
        "versions": list(policy.versions),
    }
    return values


def config_from_json(values: Mapping[str, Any]) -> ServingConfig:
    """The `ServingConfig` that `config_to_json` wrote.

    Raises:
      ConfigError: a value is invalid, or a field is unknown.
    """
    values = dict(values)
    known = {f.name for f in fields(ServingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown ServingConfig fields {unknown}")
    policy = values.pop("version_policy", None)
    if policy is not None:
        values["version_policy"] = VersionPolicy(
            kind=policy["kind"],
            num_versions=policy["num_versions"],
            versions=tuple(policy["versions"]),
        )
    return ServingConfig(**values)
