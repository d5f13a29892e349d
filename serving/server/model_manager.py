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

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import grpc
import tensorflow as tf

from serving.server.batching import BatchScheduler, can_batch
from serving.server.config import ServingConfig
from serving.server.monitoring import ServingMetrics
from serving.server.requests import StatusError, invalid_argument
from serving.server.servable import Servable, load_servable
from serving.server.warmup import replay_warmup
from serving.status import VersionStatus, status_code
from tfrs_model.errors import ConfigError, ExportError

logger = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"[0-9]+")


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
        self._warmups: dict[int, int] = {}  # warm-up requests replayed, by available version
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

    def warmup_requests(self, version: int) -> int:
        """Warm-up requests replayed when `version` last loaded; 0 when it did not load."""
        with self._lock:
            return self._warmups.get(version, 0)

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

    def _warm_up(self, servable: Servable, path: Path) -> int:
        """Replays the version's warm-up requests, recording TF Serving's warm-up latency."""
        started = time.monotonic()
        status = "OK"
        try:
            return replay_warmup(servable, self._config.tensor_limits)
        except StatusError as error:
            status = error.code.name
            raise
        except Exception:
            status = grpc.StatusCode.INTERNAL.name
            raise
        finally:
            self._metrics.warmup_latency(str(path), status, time.monotonic() - started)

    def _load(self, version: int, path: Path) -> None:
        name = self._config.model_name
        self._set_status(VersionStatus(version, "LOADING"))
        logger.info("loading version %d of model %r from %s", version, name, path)
        started = time.monotonic()
        servable = None
        try:
            servable = load_servable(
                name,
                version,
                path,
                self._config.tensorflow_intra_op_parallelism,
                self._config.tensorflow_inter_op_parallelism,
            )
            if self._config.enable_batching:
                servable = self._with_batching(servable)
            warmups = self._warm_up(servable, path) if self._config.enable_warmup else 0
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
            with self._lock:
                self._warmups.pop(version, None)
            self._set_status(VersionStatus(version, "END", code, message))
            self._metrics.model_loaded(name, success=False)
            return
        with self._lock:
            self._available = {**self._available, version: servable}
            self._statuses[version] = VersionStatus(version, "AVAILABLE")
            self._warmups[version] = warmups
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
        return_freed_heap()

    def _set_status(self, status: VersionStatus) -> None:
        with self._lock:
            self._statuses[status.version] = status

    def _availability_changed(self) -> None:
        available = self._available
        self._metrics.available_version(self._config.model_name, max(available, default=None))
        if self._on_availability is not None:
            self._on_availability(bool(available))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_heap() -> None:
    """Hands the heap pages freed by an unloaded version back to the operating system.

    glibc keeps freed memory in its per-thread arenas for reuse; with dozens of serving threads,
    what a version's load and unload freed stayed resident, so a server swapping versions under
    load grew by tens of MB per swap in RSS (the soak in docs/serving.md) without leaking.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _load_error(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message GetModelStatus reports for a failed load."""
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
