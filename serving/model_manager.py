"""Model versions on disk -> loaded, warmed-up servables, with TF Serving's lifecycle.

`ModelManager` watches `model_base_path`: every numeric subdirectory is a version (names starting
with '.' are ignored: the exporter builds a version in a hidden sibling, then renames it). The
version policy picks the versions to serve; each new one is loaded, its warm-up requests replayed,
and only then marked AVAILABLE, after which versions the policy no longer wants are unloaded.
A version that fails (no saved_model.pb, a load error, a failing warm-up request) is logged,
recorded with its error in `status()`, and skipped until its directory changes, while the
versions serving before keep serving.

Requests hold a reference to the `Servable` they resolved, so unloading a version never fails a
request in flight: the old version is freed when its last request finishes.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from export.contract import ASSETS_EXTRA, SERVING_DEFAULT, WARMUP_FILE
from export.loading import load_saved_model
from serving.batching import BatchScheduler, can_batch
from serving.config import ServingConfig
from serving.monitoring import ServingMetrics
from serving.tensors import (
    StatusError,
    TensorSpec,
    check_output_filter,
    decode_inputs,
    invalid_argument,
    status_code,
)
from tfrs_model.errors import ConfigError, ExportError

logger = logging.getLogger(__name__)

# TF Serving refuses warm-up files with more records than this (kMaxNumRecords in warmup_util).
MAX_WARMUP_RECORDS = 1000
_SERVE_TAG = "serve"
_VERSION_DIR = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Signature:
    """One callable signature of a loaded SavedModel.

    Attributes:
      name: the signature key, e.g. "serving_default".
      inputs, outputs: tensor key -> declared dtype and shape.
      function: the loaded concrete function, called with one tensor per input key.
      batcher: merges concurrent calls when batching is on and the signature allows it.
    """

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    function: Callable[..., Mapping[str, Any]] = field(repr=False)
    batcher: BatchScheduler | None = field(default=None, repr=False)

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs the signature on checked inputs (see `serving.tensors.decode_inputs`).

        Args:
          inputs: one array per input key, of the declared dtype and a compatible shape.
          output_filter: the output keys to return; empty returns all.
          deadline: `time.monotonic()` value after which the answer is of no use.

        Returns:
          The requested outputs as numpy arrays (DT_STRING as object arrays of bytes).

        Raises:
          StatusError: INVALID_ARGUMENT for a bad output_filter or inputs the model rejects,
            DEADLINE_EXCEEDED when `deadline` passed, or the model's own error code.
        """
        names = check_output_filter(self.name, self.outputs, output_filter)
        check_deadline(deadline, f"before running signature {self.name!r}")
        if self.batcher is not None:
            outputs = self.batcher(inputs, deadline)
        else:
            outputs = self.call(inputs, names)
        check_deadline(deadline, f"while running signature {self.name!r}")
        return {key: outputs[key] for key in names}

    def call(
        self, inputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Calls the model once, unbatched; returns the outputs `names` (default all).

        Raises:
          StatusError: the model's error code, or INVALID_ARGUMENT for inputs it rejects.
        """
        import tensorflow as tf

        tensors = {
            key: tf.constant(array, dtype=tf.dtypes.as_dtype(self.inputs[key].dtype))
            for key, array in inputs.items()
        }
        try:
            result = self.function(**tensors)
        except tf.errors.OpError as error:
            raise StatusError(
                status_code(error.error_code), f"signature {self.name!r}: {error.message}"
            ) from None
        except (TypeError, ValueError) as error:  # raised before the graph runs, on bad inputs
            raise invalid_argument(f"signature {self.name!r}: {error}") from None
        return {key: result[key].numpy() for key in (self.outputs if names is None else names)}


@dataclass(frozen=True)
class Servable:
    """One loaded, warmed-up version of the model.

    Attributes:
      name, version, path: the model name, the version number and its directory.
      signatures: callable signatures by key.
      signature_def_map: the SavedModel's SignatureDefs as written, for GetModelMetadata.
      model: the loaded object; holding it keeps its variables and functions alive.
    """

    name: str
    version: int
    path: Path
    signatures: Mapping[str, Signature]
    signature_def_map: get_model_metadata_pb2.SignatureDefMap = field(repr=False)
    model: Any = field(repr=False)

    def signature(self, name: str) -> Signature:
        """The signature `name`; "" means "serving_default", as in TF Serving.

        Raises:
          StatusError: FAILED_PRECONDITION, the model has no such signature.
        """
        key = name or SERVING_DEFAULT
        signature = self.signatures.get(key)
        if signature is None:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{key}" not found. Version {self.version} of model '
                f"{self.name!r} has signatures: {', '.join(sorted(self.signatures))}",
            )
        return signature

    def close(self) -> None:
        """Stops the batch schedulers; calls still arriving then run unbatched."""
        for signature in self.signatures.values():
            if signature.batcher is not None:
                signature.batcher.close()


@dataclass(frozen=True)
class VersionStatus:
    """The state of one version, as GetModelStatus reports it.

    Attributes:
      version: the version number.
      state: a `ModelVersionStatus.State` name: "LOADING", "AVAILABLE" or "END" (unloaded, or
        failed to load when `error_code` is not OK).
      error_code, error_message: why loading failed; OK and "" otherwise.
      warmup_requests: warm-up requests replayed when the version was loaded.
    """

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    warmup_requests: int = 0


def check_deadline(deadline: float | None, stage: str) -> None:
    """Raises StatusError DEADLINE_EXCEEDED when the `time.monotonic()` deadline has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded {stage}")


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Loads the SavedModel in the version directory `path` (ScaNN ops registered first).

    Raises:
      ExportError: `path` holds no saved_model.pb.
      Exception: whatever TensorFlow raises for a SavedModel it cannot load.
    """
    model = load_saved_model(path)
    signatures = {key: _signature(key, function) for key, function in model.signatures.items()}
    return Servable(
        name=name,
        version=version,
        path=path,
        signatures=signatures,
        signature_def_map=read_signature_defs(path),
        model=model,
    )


def read_signature_defs(path: Path) -> get_model_metadata_pb2.SignatureDefMap:
    """The SignatureDefs of the "serve" MetaGraph in `path/saved_model.pb`, as TF Serving sends.

    They include `__saved_model_init_op` and the graph tensor names, exactly as written.
    """
    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    meta_graphs = list(saved_model.meta_graphs)
    meta_graph = next((m for m in meta_graphs if _SERVE_TAG in m.meta_info_def.tags), None)
    if meta_graph is None:
        raise ExportError(f"{path}/saved_model.pb has no MetaGraph tagged {_SERVE_TAG!r}")
    return get_model_metadata_pb2.SignatureDefMap(signature_def=dict(meta_graph.signature_def))


def replay_warmup(servable: Servable, max_batch_size: int) -> int:
    """Replays `<version>/assets.extra/tf_serving_warmup_requests`; returns how many it ran.

    The file is a TFRecord of `tensorflow.serving.PredictionLog`; each `predict_log.request` is
    run against `servable` (its model_spec name and version are ignored, as in TF Serving).

    Raises:
      StatusError: a record is not a predict_log, a request fails, or there are more than
        MAX_WARMUP_RECORDS records; the message names the record.
    """
    import tensorflow as tf

    path = servable.path / ASSETS_EXTRA / WARMUP_FILE
    if not path.is_file():
        return 0
    count = 0
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if index >= MAX_WARMUP_RECORDS:
                raise invalid_argument(f"more than {MAX_WARMUP_RECORDS} records (TF's limit)")
            try:
                _replay_record(servable, record, max_batch_size)
            except StatusError as error:
                raise StatusError(error.code, f"record {index}: {error.message}") from None
            count += 1
    except StatusError as error:
        raise StatusError(error.code, f"warm-up file {path}: {error.message}") from None
    except tf.errors.OpError as error:  # e.g. DataLossError for a corrupt TFRecord
        raise StatusError(
            status_code(error.error_code), f"warm-up file {path}: {error.message}"
        ) from None
    return count


def _replay_record(servable: Servable, record: bytes, max_batch_size: int) -> None:
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    if kind != "predict_log":
        raise invalid_argument(f"a {kind} record; only predict_log records are replayed")
    request = log.predict_log.request
    signature = servable.signature(request.model_spec.signature_name)
    inputs = decode_inputs(signature.name, signature.inputs, request.inputs, max_batch_size)
    signature.run(inputs, request.output_filter)


class ModelManager:
    """Loads, serves and unloads the versions of one model as they appear under its base path.

    Args:
      config: the model name, base path, version policy, labels, poll interval and limits.
      metrics: where loads, warm-ups and the available version are counted.
      on_availability: called with True when a first version becomes available and with False
        when none is left, e.g. to set the gRPC health status.
    """

    def __init__(
        self,
        config: ServingConfig,
        metrics: ServingMetrics | None = None,
        on_availability: Callable[[bool], None] | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics or ServingMetrics()
        self._on_availability = on_availability
        self._lock = threading.Lock()
        # Replaced, never changed in place: a request reads one consistent snapshot without locking.
        self._available: Mapping[int, Servable] = {}
        self._statuses: dict[int, VersionStatus] = {}
        # Versions that failed, with their directory's fingerprint then; retried when it changes.
        self._failed: dict[int, tuple] = {}
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> ServingConfig:
        return self._config

    @property
    def available_versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._available))

    def start(self) -> None:
        """Loads what the policy wants now, then polls in a background thread.

        Raises:
          ConfigError: `model_base_path` does not exist.
        """
        base = self._config.model_base_path
        if not base.is_dir():
            raise ConfigError(
                f"model_base_path {base} is not a directory; export a model first (`twotower "
                "export`) and pass the directory that holds its numeric version directories"
            )
        self.poll()
        if not self._available:
            logger.warning(
                "no loadable version of model %r under %s yet; polling every %.1f s",
                self._config.model_name,
                base,
                self._config.poll_interval_s,
            )
        self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling (waits for a load in progress) and the batch schedulers."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        for servable in self._available.values():
            servable.close()

    def poll(self) -> None:
        """Scans the base path once: loads the versions the policy wants, then unloads the rest."""
        with self._poll_lock:
            found = self._scan()
            if found is None:
                return
            self._forget_changed_failures(found)
            while True:
                loadable = [version for version in found if version not in self._failed]
                wanted = self._config.version_policy.select(loadable)
                missing = sorted(wanted - set(self._available), reverse=True)
                if not missing:
                    break
                # A failure adds to _failed, which changes what the policy wants next round.
                self._load(missing[0], found[missing[0]])
            for version in sorted(set(self._available) - wanted):
                self._unload(version, reason="not wanted by the version policy any more")
            if not found:
                logger.warning("no version directories under %s", self._config.model_base_path)

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request asks for: a version, a labelled version, or the latest.

        Raises:
          StatusError: INVALID_ARGUMENT for an empty name or an unknown label; NOT_FOUND for
            another model or a version that is not available.
        """
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        if label:
            version = self._version_for_label(label)
            request = f"Specific({name}, {version}) (label {label!r})"
        available = self._available
        if name != self._config.model_name:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {request}; this server serves model "
                f"{self._config.model_name!r}",
            )
        if version is None and available:
            return available[max(available)]
        servable = available.get(version) if version is not None else None
        if servable is None:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {request}; available versions: "
                f"{sorted(available) or 'none yet (GetModelStatus shows why)'}",
            )
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """The states of all known versions (highest first), or of one version or label.

        Raises:
          StatusError: INVALID_ARGUMENT for an unknown label; NOT_FOUND for another model, an
            unknown version, or a model with no version seen yet.
        """
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        if name != self._config.model_name:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        if label:
            version = self._version_for_label(label)
        with self._lock:
            statuses = dict(self._statuses)
        if version is not None:
            if version not in statuses:
                raise StatusError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [statuses[version]]
        if not statuses:
            raise StatusError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def _version_for_label(self, label: str) -> int:
        version = self._config.version_labels.get(label)
        if version is None:
            known = ", ".join(sorted(self._config.version_labels)) or "none configured"
            raise invalid_argument(
                f"Unrecognized servable version label: {label} (labels: {known})"
            )
        return version

    def _poll_forever(self) -> None:
        while not self._stopping.wait(self._config.poll_interval_s):
            try:
                self.poll()
            except Exception:  # keep serving what is loaded; the next poll tries again
                logger.exception("polling %s failed", self._config.model_base_path)

    def _scan(self) -> dict[int, Path] | None:
        """Version number -> directory; None when the base path cannot be listed."""
        base = self._config.model_base_path
        try:
            entries = list(os.scandir(base))
        except OSError as error:
            # TF Serving keeps its versions when the base path vanishes (e.g. a remount).
            logger.error("cannot list %s (%s); keeping the loaded versions", base, error)
            return None
        found = {}
        for entry in sorted(entries, key=lambda e: e.name):
            if _VERSION_DIR.fullmatch(entry.name) and entry.is_dir():
                found.setdefault(int(entry.name), Path(entry.path))
        return found

    def _forget_changed_failures(self, found: Mapping[int, Path]) -> None:
        for version, fingerprint in list(self._failed.items()):
            if version not in found or _fingerprint(found[version]) != fingerprint:
                del self._failed[version]

    def _load(self, version: int, path: Path) -> None:
        name = self._config.model_name
        self._set_status(VersionStatus(version, "LOADING"))
        logger.info("loading version %d of model %r from %s", version, name, path)
        started = time.monotonic()
        servable = None
        try:
            servable = load_servable(name, version, path)
            if self._config.enable_batching:
                servable = self._with_batching(servable)
            warmups = (
                replay_warmup(servable, self._config.max_batch_size)
                if self._config.enable_warmup
                else 0
            )
        except Exception as error:
            if servable is not None:
                servable.close()
            code, message = _load_error(error)
            logger.error(
                "version %d of model %r failed to load and is skipped until %s changes: %s",
                version,
                name,
                path,
                message,
            )
            self._failed[version] = _fingerprint(path)
            self._set_status(VersionStatus(version, "END", code, message))
            self._metrics.model_loaded(name, success=False)
            return
        with self._lock:
            self._available = {**self._available, version: servable}
            self._statuses[version] = VersionStatus(version, "AVAILABLE", warmup_requests=warmups)
        self._metrics.model_loaded(name, success=True)
        self._metrics.warmup_replayed(name, warmups)
        logger.info(
            "version %d of model %r is AVAILABLE (loaded in %.1f s, %d warm-up requests), "
            "signatures: %s",
            version,
            name,
            time.monotonic() - started,
            warmups,
            ", ".join(sorted(servable.signatures)),
        )
        self._availability_changed()

    def _with_batching(self, servable: Servable) -> Servable:
        config = self._config
        signatures = {}
        for key, signature in servable.signatures.items():
            if can_batch(signature.inputs, signature.outputs):
                batcher = BatchScheduler(
                    signature.call,
                    max_batch_size=config.max_batch_size,
                    batch_timeout_s=config.batch_timeout_micros / 1e6,
                    num_threads=config.num_batch_threads,
                    max_enqueued_batches=config.max_enqueued_batches,
                    on_batch=lambda rows, key=key: self._metrics.batch_run(
                        servable.name, key, rows
                    ),
                )
                signature = replace(signature, batcher=batcher)
            signatures[key] = signature
        return replace(servable, signatures=signatures)

    def _unload(self, version: int, reason: str) -> None:
        with self._lock:
            servable = self._available[version]
            self._available = {v: s for v, s in self._available.items() if v != version}
            self._statuses[version] = VersionStatus(version, "END")
        servable.close()
        logger.info("unloaded version %d of model %r: %s", version, self._config.model_name, reason)
        self._availability_changed()
        # Loaded SavedModels hold reference cycles; collect now so the memory goes back soon.
        gc.collect()

    def _set_status(self, status: VersionStatus) -> None:
        with self._lock:
            self._statuses[status.version] = status

    def _availability_changed(self) -> None:
        available = self._available
        self._metrics.available_version(self._config.model_name, max(available, default=None))
        if self._on_availability is not None:
            self._on_availability(bool(available))


def _signature(key: str, function: Any) -> Signature:
    _, kwargs = function.structured_input_signature
    return Signature(
        name=key,
        inputs={name: _spec(spec) for name, spec in kwargs.items()},
        outputs={name: _spec(spec) for name, spec in function.structured_outputs.items()},
        function=function,
    )


def _spec(tf_spec: Any) -> TensorSpec:
    shape = None if tf_spec.shape.rank is None else tuple(tf_spec.shape.as_list())
    return TensorSpec(dtype=tf_spec.dtype.as_datatype_enum, shape=shape)


def _load_error(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message GetModelStatus reports for a failed load."""
    import tensorflow as tf

    if isinstance(error, StatusError):
        return error.code, error.message
    if isinstance(error, ExportError):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, tf.errors.OpError):
        return status_code(error.error_code), error.message
    return grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"


def _fingerprint(path: Path) -> tuple:
    """Names, sizes and modification times of the files under `path`: changes when it does."""
    return tuple(sorted(_file_stats(path)))


def _file_stats(path: Path) -> Iterator[tuple[str, int, int]]:
    for root, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            yield os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns
