"""Closed-loop gRPC load test of a served model, and the in-process SavedModel baseline.

`run_load_test` starts `concurrency` workers that each send batch-1 Predict requests back to back
(a closed loop: a worker sends its next request when the previous one is answered) over one shared
channel, either as threads (`mode="threads"`) or as grpc.aio coroutines (`mode="aio"`). Requests
started during the warm-up are not counted; the run stops at the deadline or after `max_requests`.
`measure_in_process` times the same requests as direct calls of the SavedModel's signature, so a
report can show what gRPC and serialization add (`run_benchmark` does both).

Threads or aio: on a 2-core box with the embedded server in another process, both reached the
same throughput (~950 QPS, the server being the limit) at concurrency 4 to 16, within run-to-run
noise; against a server answering a canned response, aio was ahead at concurrency 16 in one series
and behind in another. Threads spent slightly less client CPU per request (~300 vs ~340 us), so
`twotower bench serve` defaults to threads; aio stays available for many-connection clients.

Both modes open their own channel here (`open_channel`), plaintext or TLS as the client config
says. The client config's retries are turned off (`without_retries`): every failed request is
counted under its status code, none is resent. Latency percentiles are those of `benchmarks.stats` (linear interpolation), as in the index
benchmark.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks.report import markdown_table
from benchmarks.stats import percentiles
from export import contract
from serving.client import (
    ClientConfig,
    ServingError,
    SignatureDescription,
    TwoTowerClient,
    build_predict_request,
    channel_options,
    fit_inputs,
)
from tfrs_model.errors import ConfigError

MODES = ("threads", "aio")
# Distinct prebuilt requests at most; workers cycle through them.
_MAX_DISTINCT_REQUESTS = 10_000


@dataclass(frozen=True)
class LoadTestConfig:
    """One load test.

    Attributes:
      client: the target, model, TLS and the per-request deadline (`timeout_s`); retries are not
        used (every failure is counted under its status code).
      ids: the ids to send, one per request, cycled: user ids, or item ids for `similar_items`,
        `candidate_embedding` and `item_titles`.
      concurrency: number of workers, each with one request in flight.
      duration_s: length of the measured window in seconds.
      warmup_s: seconds of requests sent before the window and not counted.
      signature: the signature to call.
      mode: "threads" (threads sharing one channel) or "aio" (coroutines on one grpc.aio channel).
      max_requests: stop after this many requests in all (warm-up included), whatever the time.
      channels: connections the workers are spread over (worker i uses channel i mod channels).
        One channel is one HTTP/2 connection, which a server running several processes on one
        port (`twotower serve --workers N`) hands to one of them, so spreading the load over N
        processes needs at least N connections, as N separate clients would have.
    """

    client: ClientConfig
    ids: tuple[str, ...]
    concurrency: int = 4
    duration_s: float = 10.0
    warmup_s: float = 1.0
    signature: str = contract.SERVING_DEFAULT
    mode: str = "threads"
    max_requests: int = 1_000_000
    channels: int = 1

    def __post_init__(self) -> None:
        if not self.ids:
            raise ConfigError("the load test needs at least one id to send")
        if self.concurrency < 1 or self.max_requests < 1 or self.channels < 1:
            raise ConfigError("concurrency, max_requests and channels must be at least 1")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ConfigError("duration_s must be positive and warmup_s not negative")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")


@dataclass(frozen=True)
class LatencySummary:
    """Latency statistics in milliseconds over `count` calls (all zero when count is 0)."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    """Mean, p50, p95, p99 and max of latencies given in seconds, reported in milliseconds.

    Percentiles are `benchmarks.stats.percentiles` (linear interpolation between ranks).
    """
    if not latencies_s:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    values_ms = [s * 1000.0 for s in latencies_s]
    p50, p95, p99 = percentiles(values_ms, (50, 95, 99))
    return LatencySummary(
        count=len(values_ms),
        mean_ms=sum(values_ms) / len(values_ms),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=max(values_ms),
    )


@dataclass(frozen=True)
class LoadTestResult:
    """What a load test measured.

    Attributes:
      duration_s: the measured window, from the end of the warm-up to the last answer.
      requests: requests started in the window and answered (successes and errors).
      errors: failed requests by gRPC status code name.
      qps: successful requests per second of the window.
      latency: latency of the successful requests.
    """

    target: str
    model_name: str
    signature: str
    mode: str
    concurrency: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    qps: float
    latency: LatencySummary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _strings(values: Sequence[Any]) -> np.ndarray:
    """UTF-8 bytes in an object array, TensorFlow's DT_STRING layout (nested lists keep rank)."""
    encode = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])
    return encode(np.asarray(values, dtype=object))


def request_inputs(signature: SignatureDescription, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The inputs of `signature` for a batch of ids, by the keys of `export.contract`.

    The ids go to ITEM_IDS as [batch, 1] when the signature takes it (`item_titles`), else to
    ITEM_ID [batch] (`similar_items`, `candidate_embedding`), else to USER_ID [batch]; the other
    inputs (history, exclude, user features: DT_STRING of rank 1 or 2) are padding, as the client
    pads them (`fit_inputs`).

    Raises:
      ConfigError: the signature takes none of those keys, or another input that is not a string
        of rank 1 or 2.
    """
    specs = signature.inputs
    if contract.ITEM_IDS in specs:
        given = {contract.ITEM_IDS: _strings([[i] for i in ids])}
    elif contract.ITEM_ID in specs:
        given = {contract.ITEM_ID: _strings(list(ids))}
    elif contract.USER_ID in specs:
        given = {contract.USER_ID: _strings(list(ids))}
    else:
        raise ConfigError(
            f"signature {signature.name!r} takes {sorted(specs)}: none of "
            f"{contract.USER_ID}, {contract.ITEM_ID}, {contract.ITEM_IDS}"
        )
    return fit_inputs(signature, given, len(ids))


def without_retries(client: ClientConfig) -> ClientConfig:
    """`client` with one attempt per call: nothing is resent, every failure is counted as it
    happens (and a target with no server answers UNAVAILABLE, not a deadline spent retrying)."""
    return replace(client, retry=replace(client.retry, max_attempts=1))


def open_channel(config: ClientConfig, *, aio: bool = False, own_connection: bool = False) -> Any:
    """A channel to `config.target`: a `grpc.Channel`, or a `grpc.aio.Channel` if `aio`.

    Plaintext, or TLS with the credentials of `config.tls`; options from `channel_options`, as
    the client's own channel has them. An aio channel must be opened inside the event loop that
    uses it. With `own_connection`, the channel does not share its connection with other
    channels of this process to the same target (gRPC's global subchannel pool would).

    Raises:
      ConfigError: a TLS file cannot be read.
    """
    module: Any = grpc.aio if aio else grpc
    options = channel_options(config)
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if config.tls is None:
        return module.insecure_channel(config.target, options=options)
    return module.secure_channel(config.target, config.tls.credentials(), options=options)


@dataclass(frozen=True)
class _Window:
    """When counting starts and sending stops (time.perf_counter seconds), and a request budget."""

    count_from: float
    stop_at: float
    budget: int


@dataclass
class _WorkerLog:
    """One worker's record; merged after the run, so workers never share mutable state."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    last_answer: float = 0.0

    def record(self, window: _Window, started: float, code: str | None) -> None:
        """Counts one answer: `code` None for a success, else the gRPC code (or HTTP_<n>)."""
        finished = time.perf_counter()
        self.sent += 1
        if started < window.count_from:
            return
        self.last_answer = finished
        if code is None:
            self.latencies_s.append(finished - started)
        else:
            self.errors[code] += 1

    def more(self, window: _Window) -> bool:
        return self.sent < window.budget and time.perf_counter() < window.stop_at


def _thread_worker(
    predict: Callable[..., Any], requests: list[Any], first: int, window: _Window, timeout_s: float
) -> _WorkerLog:
    log, n = _WorkerLog(), first
    while log.more(window):
        started, code = time.perf_counter(), None
        try:
            predict(requests[n % len(requests)], timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code().name
        log.record(window, started, code)
        n += 1
    return log


async def _aio_worker(
    predict: Callable[..., Any], requests: list[Any], first: int, window: _Window, timeout_s: float
) -> _WorkerLog:
    log, n = _WorkerLog(), first
    while log.more(window):
        started, code = time.perf_counter(), None
        try:
            await predict(requests[n % len(requests)], timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code().name
        log.record(window, started, code)
        n += 1
    return log


def _window(config: LoadTestConfig) -> _Window:
    count_from = time.perf_counter() + config.warmup_s
    budget = max(1, config.max_requests // config.concurrency)
    return _Window(count_from, count_from + config.duration_s, budget)


def _not_ready(config: LoadTestConfig) -> ServingError:
    return ServingError(
        "Connect",
        grpc.StatusCode.UNAVAILABLE,
        f"no connection within {config.client.timeout_s}s",
        config.client.target,
    )


def _run_threads(config: LoadTestConfig, requests: list[Any]) -> tuple[_Window, list[_WorkerLog]]:
    count = min(config.channels, config.concurrency)
    channels = [open_channel(config.client, own_connection=count > 1) for _ in range(count)]
    try:
        for channel in channels:
            try:
                grpc.channel_ready_future(channel).result(timeout=config.client.timeout_s)
            except grpc.FutureTimeoutError as error:
                raise _not_ready(config) from error
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c).Predict for c in channels]
        window, stride = _window(config), len(requests) // config.concurrency
        with futures.ThreadPoolExecutor(config.concurrency, thread_name_prefix="loadtest") as pool:
            logs = [
                pool.submit(
                    _thread_worker,
                    stubs[i % count],
                    requests,
                    i * stride,
                    window,
                    config.client.timeout_s,
                )
                for i in range(config.concurrency)
            ]
            return window, [log.result() for log in logs]
    finally:
        for channel in channels:
            channel.close()


async def _run_aio(config: LoadTestConfig, requests: list[Any]) -> tuple[_Window, list[_WorkerLog]]:
    count = min(config.channels, config.concurrency)
    channels = [
        open_channel(config.client, aio=True, own_connection=count > 1) for _ in range(count)
    ]
    try:
        for channel in channels:
            try:
                await asyncio.wait_for(channel.channel_ready(), config.client.timeout_s)
            except TimeoutError as error:
                raise _not_ready(config) from error
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c).Predict for c in channels]
        window, stride = _window(config), len(requests) // config.concurrency
        workers = [
            _aio_worker(stubs[i % count], requests, i * stride, window, config.client.timeout_s)
            for i in range(config.concurrency)
        ]
        return window, list(await asyncio.gather(*workers))
    finally:
        for channel in channels:
            await channel.close()


def run_load_test(config: LoadTestConfig) -> LoadTestResult:
    """Runs the closed-loop load test `config` describes against `config.client.target`.

    Reads the signature's inputs with GetModelMetadata first, then blocks for about
    `warmup_s + duration_s` seconds (less when `max_requests` runs out first). No call is
    retried, whatever `config.client.retry` says (`without_retries`).

    Raises:
      ServingError: the metadata call failed, or no connection within the client's timeout.
      ConfigError: the model has no such signature, or its inputs cannot be built from ids.
    """
    config = replace(config, client=without_retries(config.client))
    signature = _signature(config)
    requests = [
        build_predict_request(config.client, request_inputs(signature, [i]), config.signature)
        for i in config.ids[:_MAX_DISTINCT_REQUESTS]
    ]
    if config.mode == "aio":
        window, logs = asyncio.run(_run_aio(config, requests))
    else:
        window, logs = _run_threads(config, requests)
    return _result(config, config.client.target, config.mode, window, logs)


def _signature(config: LoadTestConfig) -> SignatureDescription:
    """The signature to call, as GetModelMetadata describes it."""
    with TwoTowerClient(config.client) as client:
        metadata = client.metadata()
    signature = metadata.signatures.get(config.signature)
    if signature is None:
        raise ConfigError(
            f"model {metadata.model_name!r} (version {metadata.version}) has no signature "
            f"{config.signature!r}; it has {sorted(metadata.signatures)}"
        )
    return signature


def _result(
    config: LoadTestConfig, target: str, mode: str, window: _Window, logs: list[_WorkerLog]
) -> LoadTestResult:
    latencies = [s for log in logs for s in log.latencies_s]
    errors = sum((log.errors for log in logs), Counter())
    last_answer = max(log.last_answer for log in logs)
    elapsed = max(last_answer - window.count_from, 0.0)
    return LoadTestResult(
        target=target,
        model_name=config.client.model_name,
        signature=config.signature,
        mode=mode,
        concurrency=config.concurrency,
        duration_s=elapsed,
        requests=len(latencies) + errors.total(),
        errors=dict(sorted(errors.items())),
        qps=len(latencies) / elapsed if elapsed > 0 else 0.0,
        latency=summarize(latencies),
    )


def rest_predict_body(signature: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """TF Serving's REST Predict body in the columnar format: {"signature_name", "inputs"}."""

    def plain(value: Any) -> Any:
        return value.decode() if isinstance(value, bytes) else value

    columns = {
        key: np.vectorize(plain, otypes=[object])(array).tolist() if array.dtype == object
        else array.tolist()
        for key, array in inputs.items()
    }  # fmt: skip
    return json.dumps({"signature_name": signature, "inputs": columns}).encode()


def run_rest_load_test(config: LoadTestConfig, rest_target: str) -> LoadTestResult:
    """The load test of `config` over TF Serving's REST API at `rest_target` (host:port).

    The signature's inputs are read over gRPC (`config.client`) first; then `concurrency`
    threads each POST batch-1 requests to /v1/models/<name>:predict back to back over a
    keep-alive connection of their own. Failures are counted as HTTP_<status> (HTTP_0: the
    connection failed); the result's mode is "rest".

    Raises:
      ServingError, ConfigError: as for `run_load_test`.
    """
    config = replace(config, client=without_retries(config.client))
    signature = _signature(config)
    bodies = [
        rest_predict_body(config.signature, request_inputs(signature, [i]))
        for i in config.ids[:_MAX_DISTINCT_REQUESTS]
    ]
    host, _, port = rest_target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"the REST target must be host:port, not {rest_target!r}")
    path = f"/v1/models/{config.client.model_name}:predict"
    window, stride = _window(config), len(bodies) // config.concurrency
    with futures.ThreadPoolExecutor(config.concurrency, thread_name_prefix="rest-load") as pool:
        logs = [
            pool.submit(
                _rest_worker,
                (host.strip("[]"), int(port), path, config.client.timeout_s),
                bodies,
                i * stride,
                window,
            )
            for i in range(config.concurrency)
        ]
        logs = [log.result() for log in logs]
    return _result(config, rest_target, "rest", window, logs)


def _rest_worker(
    endpoint: tuple[str, int, str, float], bodies: list[bytes], first: int, window: _Window
) -> _WorkerLog:
    host, port, path, timeout_s = endpoint
    log, n = _WorkerLog(), first
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    headers = {"Content-Type": "application/json"}
    try:
        while log.more(window):
            started, code = time.perf_counter(), None
            try:
                connection.request("POST", path, bodies[n % len(bodies)], headers)
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    code = f"HTTP_{reply.status}"
                if reply.will_close:
                    connection.close()
            except (OSError, http.client.HTTPException):
                code = "HTTP_0"
                connection.close()
            log.record(window, started, code)
            n += 1
    finally:
        connection.close()
    return log


def measure_in_process(
    saved_model: str | Path,
    signature: str,
    ids: Sequence[str],
    duration_s: float = 5.0,
    max_calls: int = 10_000,
    warmup_calls: int = 20,
) -> LatencySummary:
    """Times batch-1 calls of the SavedModel's `signature` in this process, one at a time.

    The requests are those `run_load_test` sends (`request_inputs`), prebuilt as arrays, run
    through the session the embedded server runs (`export.session_bundle`, TF Serving's loader
    path), so the numbers are the model's own latency without gRPC, serialization or queueing.

    Args:
      saved_model: a version directory (model_base_path/<version>).
      signature: the signature to call.
      ids: ids to cycle through, one per call.
      duration_s: stop timing after this long ...
      max_calls: ... or after this many calls.
      warmup_calls: untimed calls first (tracing, first-touch allocations).

    Raises:
      ExportError: `saved_model` is not a SavedModel directory (or lacks the ScaNN ops it needs).
      ConfigError: the SavedModel has no such signature, or no ids are given.
    """
    from export.loading import load_session_bundle

    if not ids:
        raise ConfigError("measure_in_process needs at least one id")
    bundle = load_session_bundle(saved_model)
    if signature not in bundle.signatures:
        raise ConfigError(
            f"{saved_model} has no signature {signature!r}; it has {sorted(bundle.signatures)}"
        )
    specs = bundle.signatures[signature].specs
    description = SignatureDescription(
        name=signature, method_name="", inputs=dict(specs.inputs), outputs=dict(specs.outputs)
    )
    outputs = list(specs.outputs)
    calls = [request_inputs(description, [i]) for i in ids[:_MAX_DISTINCT_REQUESTS]]
    for n in range(warmup_calls):
        bundle.run(signature, calls[n % len(calls)], outputs)
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s
    while len(latencies) < max_calls and time.perf_counter() < stop_at:
        inputs = calls[len(latencies) % len(calls)]
        started = time.perf_counter()
        bundle.run(signature, inputs, outputs)
        latencies.append(time.perf_counter() - started)
    return summarize(latencies)


@dataclass(frozen=True)
class ServeBenchmark:
    """A load test and, when a SavedModel was given, the in-process latency of the same requests."""

    load: LoadTestResult
    in_process: LatencySummary | None = None
    rest: LoadTestResult | None = None

    def to_dict(self) -> dict[str, Any]:
        result = self.load.to_dict()
        result["in_process_latency"] = None if self.in_process is None else asdict(self.in_process)
        if self.rest is not None:
            result["rest"] = self.rest.to_dict()
        return result

    def markdown(self, name: str) -> str:
        """A section for docs/benchmarks.md: one row for gRPC and one for the in-process baseline."""
        load = self.load
        errors = ", ".join(f"{code}: {n}" for code, n in load.errors.items()) or "none"
        rows = [_row(f"gRPC ({load.mode})", load.concurrency, load.qps, load.latency)]
        rest_note = ""
        if self.rest is not None:
            rest = self.rest
            rows.append(_row("REST", rest.concurrency, rest.qps, rest.latency))
            rest_errors = ", ".join(f"{code}: {n}" for code, n in rest.errors.items()) or "none"
            rest_note = (
                f" Then REST at `{rest.target}`, the same workers for {rest.duration_s:.1f} s: "
                f"{rest.requests} requests, errors: {rest_errors}."
            )
        if self.in_process is not None:
            mean_s = self.in_process.mean_ms / 1000
            rows.append(
                _row("in-process SavedModel", 1, 1 / mean_s if mean_s else 0.0, self.in_process)
            )
        return (
            f"## {name}\n\n"
            f"Batch-1 `Predict` on `{load.signature}` of model `{load.model_name}` at "
            f"`{load.target}`: {load.concurrency} closed-loop workers for {load.duration_s:.1f} s; "
            f"{load.requests} requests, errors: {errors}.{rest_note}\n\n"
            + markdown_table(
                ["path", "concurrency", "calls", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                rows,
            )
        )


def _row(path: str, concurrency: int, qps: float, latency: LatencySummary) -> list[Any]:
    return [
        path,
        concurrency,
        latency.count,
        qps,
        latency.p50_ms,
        latency.p95_ms,
        latency.p99_ms,
        latency.max_ms,
    ]


def run_benchmark(
    config: LoadTestConfig,
    saved_model: str | Path | None = None,
    rest_target: str | None = None,
) -> ServeBenchmark:
    """Runs the gRPC load test; then the same over REST at `rest_target` if given; then, if
    `saved_model` is given, times the same requests in process, all in this one run.

    Raises:
      ServingError: as for `run_load_test`.
      ExportError, ConfigError: as for `measure_in_process`.
    """
    load = run_load_test(config)
    rest = None if rest_target is None else run_rest_load_test(config, rest_target)
    if saved_model is None:
        return ServeBenchmark(load, rest=rest)
    in_process = measure_in_process(
        saved_model, config.signature, config.ids, duration_s=min(config.duration_s, 10.0)
    )
    return ServeBenchmark(load, in_process, rest)


# --- soak: hours of load in minutes, with version swaps and malformed requests mixed in --------

# A key no signature takes: a request carrying it fails INVALID_ARGUMENT (HTTP 400 over REST).
MALFORMED_KEY = "soak_not_an_input"


@dataclass(frozen=True)
class SoakConfig:
    """A soak: the load test `load` for `load.duration_s` seconds, with swaps and bad requests.

    Attributes:
      load: the gRPC load (threads mode); its duration is the soak's.
      model_base_path: where a new version (a copy of the highest, renamed into place
        atomically, as the exporter publishes) appears every `swap_every_s`; None: no swaps.
      swap_every_s: seconds between published versions.
      malformed_every: every K-th request of each worker carries an input no signature takes,
        expected to fail INVALID_ARGUMENT and counted apart from the good requests; 0: none.
      server_pids: processes whose resident memory (with their descendants: the workers of a
        supervisor) is sampled every `rss_every_s` seconds; empty: not sampled.
      keep_versions: published versions kept on disk; older ones the soak made are removed.
    """

    load: LoadTestConfig
    model_base_path: Path | None = None
    swap_every_s: float = 60.0
    malformed_every: int = 0
    server_pids: tuple[int, ...] = ()
    rss_every_s: float = 1.0
    keep_versions: int = 2

    def __post_init__(self) -> None:
        if self.swap_every_s <= 0 or self.rss_every_s <= 0:
            raise ConfigError("swap_every_s and rss_every_s must be positive")
        if self.malformed_every < 0 or self.keep_versions < 1:
            raise ConfigError("malformed_every must be >= 0 and keep_versions >= 1")


@dataclass(frozen=True)
class RssSummary:
    """Resident memory of the server processes (summed), in MiB, over `samples` samples.

    Attributes:
      trend_mib: the median of each tenth of the soak, in order: growth that stops after the
        first tenths (caches, allocator arenas of the serving threads) is warm-up; growth that
        goes on to the last tenth is a leak.
    """

    samples: int
    start_mib: float
    end_mib: float
    max_mib: float
    trend_mib: tuple[float, ...] = ()

    @classmethod
    def of(cls, samples: Sequence[int], parts: int = 10) -> RssSummary:
        """The summary of byte `samples` taken at a fixed interval."""
        mib = [sample / 2**20 for sample in samples]
        chunks = [chunk for chunk in np.array_split(np.asarray(mib), parts) if len(chunk)]
        trend = tuple(round(float(np.median(chunk)), 1) for chunk in chunks)
        return cls(len(mib), mib[0], mib[-1], max(mib), trend)


@dataclass(frozen=True)
class SoakResult:
    """What a soak measured; `load` counts the good requests only.

    Attributes:
      malformed: answers to the malformed requests by status code (INVALID_ARGUMENT expected).
      published: the versions published during the soak, in order.
      versions_answered: good answers by the version that gave them.
      rss: the server's memory over the soak; None when no pid was given.
    """

    load: LoadTestResult
    malformed: dict[str, int]
    published: tuple[int, ...]
    versions_answered: dict[int, int]
    rss: RssSummary | None

    @property
    def failed_good_requests(self) -> int:
        return sum(self.load.errors.values())

    @property
    def unexpected_malformed(self) -> int:
        """Malformed requests that did not fail INVALID_ARGUMENT."""
        return sum(n for code, n in self.malformed.items() if code != "INVALID_ARGUMENT")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.load.to_dict(),
            "failed_good_requests": self.failed_good_requests,
            "malformed": self.malformed,
            "published_versions": list(self.published),
            "versions_answered": {str(v): n for v, n in self.versions_answered.items()},
            "rss": None if self.rss is None else asdict(self.rss),
        }

    def markdown(self, name: str) -> str:
        load, rss = self.load, self.rss
        memory = (
            "not sampled"
            if rss is None
            else f"{rss.start_mib:,.0f} MiB at the start, {rss.end_mib:,.0f} MiB at the end, "
            f"{rss.max_mib:,.0f} MiB at most ({rss.samples} samples); median of each tenth of "
            f"the soak: {', '.join(f'{mib:,.0f}' for mib in rss.trend_mib)} MiB"
        )
        malformed = ", ".join(f"{code}: {n}" for code, n in self.malformed.items()) or "none"
        return (
            f"## {name}\n\n"
            f"Soak: batch-1 `Predict` on `{load.signature}` of model `{load.model_name}` at "
            f"`{load.target}`, {load.concurrency} closed-loop workers for {load.duration_s:.0f} s; "
            f"{len(self.published)} versions published under load "
            f"({', '.join(map(str, self.published)) or 'none'}); malformed requests mixed in: "
            f"{malformed}.\n\n"
            f"**Failed good requests: {self.failed_good_requests}** of {load.requests}. "
            f"Server RSS (all processes): {memory}.\n\n"
            + markdown_table(
                ["path", "concurrency", "calls", "QPS", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                [_row(f"gRPC ({load.mode})", load.concurrency, load.qps, load.latency)],
            )
        )


def publish_copy(base: Path) -> int:
    """Publishes a copy of the highest version under `base` as the next one; returns it.

    The copy is made in a hidden sibling and renamed into place, so the server never sees a
    partial version (as `twotower export` publishes).

    Raises:
      ConfigError: `base` holds no numeric version directory.
    """
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())
    if not versions:
        raise ConfigError(f"{base} holds no version directory to copy")
    new = versions[-1] + 1
    staging = base / f".soak-{new}-{os.getpid()}"
    shutil.copytree(base / str(versions[-1]), staging)
    os.rename(staging, base / str(new))
    return new


def remove_version(base: Path, version: int) -> None:
    """Removes a version directory: renamed to a hidden name first, then deleted."""
    hidden = base / f".soak-removed-{version}-{os.getpid()}"
    os.rename(base / str(version), hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def process_tree_rss(pids: Sequence[int]) -> int:
    """Resident bytes of `pids` and all their descendants (Linux /proc); gone ones count 0."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    total, todo, seen = 0, list(pids), set()
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
        try:
            total += int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * page
        except OSError:
            continue
    return total


def run_soak(config: SoakConfig) -> SoakResult:
    """Runs the soak `config` describes; blocks for about its duration.

    Raises:
      ServingError, ConfigError: as for `run_load_test`; ConfigError also when a version cannot
        be published.
    """
    load = replace(config.load, client=without_retries(config.load.client), mode="threads")
    signature = _signature(load)
    good = [
        build_predict_request(load.client, request_inputs(signature, [i]), load.signature)
        for i in load.ids[:_MAX_DISTINCT_REQUESTS]
    ]
    bad = type(good[0])()
    bad.CopyFrom(good[0])
    bad.inputs[MALFORMED_KEY].CopyFrom(good[0].inputs[next(iter(good[0].inputs))])
    stop = threading.Event()
    published: list[int] = []
    samples: list[int] = []
    helpers = [threading.Thread(target=_sample_rss, args=(config, samples, stop), daemon=True)]
    if config.model_base_path is not None:
        helpers.append(threading.Thread(target=_swap, args=(config, published, stop), daemon=True))
    for helper in helpers:
        helper.start()
    try:
        window, logs = _run_soak_threads(load, good, bad, config.malformed_every)
    finally:
        stop.set()
        for helper in helpers:
            helper.join()
    malformed = sum((log.malformed for log in logs), Counter())
    versions = sum((log.versions for log in logs), Counter())
    rss = RssSummary.of(samples) if samples else None
    return SoakResult(
        load=_result(load, load.client.target, load.mode, window, logs),
        malformed=dict(sorted(malformed.items())),
        published=tuple(published),
        versions_answered=dict(sorted(versions.items())),
        rss=rss,
    )


@dataclass
class _SoakLog(_WorkerLog):
    malformed: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)


def _run_soak_threads(
    config: LoadTestConfig, good: list[Any], bad: Any, every: int
) -> tuple[_Window, list[_SoakLog]]:
    count = min(config.channels, config.concurrency)
    channels = [open_channel(config.client, own_connection=count > 1) for _ in range(count)]
    try:
        stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c).Predict for c in channels]
        window, stride = _window(config), len(good) // config.concurrency
        with futures.ThreadPoolExecutor(config.concurrency, thread_name_prefix="soak") as pool:
            logs = [
                pool.submit(
                    _soak_worker,
                    stubs[i % count],
                    (good, bad, every),
                    i * stride,
                    window,
                    config.client.timeout_s,
                )
                for i in range(config.concurrency)
            ]
            return window, [log.result() for log in logs]
    finally:
        for channel in channels:
            channel.close()


def _soak_worker(
    predict: Callable[..., Any],
    requests: tuple[list[Any], Any, int],
    first: int,
    window: _Window,
    timeout_s: float,
) -> _SoakLog:
    good, bad, every = requests
    log, n = _SoakLog(), first
    while log.more(window):
        if every and n % every == every - 1:
            try:
                predict(bad, timeout=timeout_s)
                log.malformed["OK"] += 1
            except grpc.RpcError as error:
                log.malformed[error.code().name] += 1
            n += 1
            continue
        started, code = time.perf_counter(), None
        try:
            reply = predict(good[n % len(good)], timeout=timeout_s)
            log.versions[reply.model_spec.version.value] += 1
        except grpc.RpcError as error:
            code = error.code().name
        log.record(window, started, code)
        n += 1
    return log


def _swap(config: SoakConfig, published: list[int], stop: threading.Event) -> None:
    assert config.model_base_path is not None
    while not stop.wait(config.swap_every_s):
        published.append(publish_copy(config.model_base_path))
        for old in published[: -config.keep_versions]:
            if (config.model_base_path / str(old)).exists():
                remove_version(config.model_base_path, old)


def _sample_rss(config: SoakConfig, samples: list[int], stop: threading.Event) -> None:
    if not config.server_pids:
        return
    while True:
        samples.append(process_tree_rss(config.server_pids))
        if stop.wait(config.rss_every_s):
            return
