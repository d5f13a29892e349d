"""Prometheus metrics of one model server, exposed at TF Serving's `/monitoring/prometheus/metrics`.

Every `ServingMetrics` owns its own `CollectorRegistry` (never prometheus_client's global one), so
two servers in one process, as in the tests, count separately.

Series (labels in braces):
  serving_requests_total{model,signature,api,protocol}: requests answered, whatever the outcome.
  serving_request_errors_total{model,signature,api,protocol,code}: failed requests by gRPC code.
  serving_request_latency_seconds{model,signature,api,protocol}: histogram of handling time.
  serving_requests_in_flight{protocol}: requests being handled now.
  serving_model_loads_total{model,outcome}: version loads, outcome "success" or "failure".
  serving_model_available_version{model}: the highest available version, 0 while none is.
  serving_warmup_requests_total{model}: warm-up requests replayed.
  serving_batch_size{model,signature}: rows per model call when batching is on.
  serving_process_info{pid}: 1, naming the process that answered the scrape. With
    `--workers N` every worker process keeps its own series and a scrape of the shared port
    reaches one of them (the kernel picks), so sum over `pid` (e.g. scrape each worker's
    connection until every pid was seen) or serve one worker per pod when a scrape must
    see everything.

TF Serving's own series (":tensorflow:serving:request_count", request_latency, runtime_latency,
model_warmup_latency, with its labels; `serving.server.tf_serving_metrics`) are on the same page,
so dashboards and alerts written for TF Serving work against the embedded server too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving.server.tf_serving_metrics import TfServingMetrics

# TF Serving's default path for the Prometheus exporter (PrometheusExporter::kPrometheusPath).
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# Label values for names that match nothing served, so random names cannot grow the series.
UNKNOWN = "_unknown"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class RequestRecord:
    """Labels of one request, filled in while it is handled.

    Attributes:
      model: the model name once it matched the served model; UNKNOWN before.
      signature: the signature key once it resolved; "" for calls without one.
      code: the gRPC status name the request ended with.
      runtime_s: seconds the model itself ran for this request; None when it did not run.
    """

    model: str = UNKNOWN
    signature: str = ""
    code: str = "OK"
    runtime_s: float | None = None


class ServingMetrics:
    """The counters, gauges and histograms of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tf_serving = TfServingMetrics()
        request_labels = ("model", "signature", "api", "protocol")
        self._requests = Counter(
            "serving_requests",
            "Requests answered, whatever the outcome.",
            request_labels,
            registry=self.registry,
        )
        self._errors = Counter(
            "serving_request_errors",
            "Failed requests by gRPC status code.",
            (*request_labels, "code"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "serving_request_latency_seconds",
            "Time from receiving a request to answering it.",
            request_labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "serving_requests_in_flight",
            "Requests being handled now.",
            ("protocol",),
            registry=self.registry,
        )
        self._loads = Counter(
            "serving_model_loads",
            "Model version loads by outcome.",
            ("model", "outcome"),
            registry=self.registry,
        )
        self._available_version = Gauge(
            "serving_model_available_version",
            "The highest available model version; 0 while none is available.",
            ("model",),
            registry=self.registry,
        )
        self._warmup = Counter(
            "serving_warmup_requests",
            "Warm-up requests replayed before versions became available.",
            ("model",),
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "serving_batch_size",
            "Rows per model call when concurrent requests are batched.",
            ("model", "signature"),
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "serving_process_info",
            "1 for the server process that answered this scrape (one of --workers).",
            ("pid",),
            registry=self.registry,
        ).labels(str(os.getpid())).set(1)

    @contextmanager
    def request(self, api: str, protocol: str) -> Iterator[RequestRecord]:
        """Counts and times the request handled inside the block.

        The caller fills in the yielded record's labels, and sets `code` when the request fails.
        """
        record = RequestRecord()
        in_flight = self._in_flight.labels(protocol)
        in_flight.inc()
        started = time.perf_counter()
        try:
            yield record
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            labels = (record.model, record.signature, api, protocol)
            self._requests.labels(*labels).inc()
            self._latency.labels(*labels).observe(elapsed)
            self.tf_serving.request(
                record.model, api, protocol.upper(), record.code, elapsed, record.runtime_s
            )
            if record.code != "OK":
                self._errors.labels(*labels, record.code).inc()

    def model_loaded(self, model: str, success: bool) -> None:
        self._loads.labels(model, "success" if success else "failure").inc()

    def available_version(self, model: str, version: int | None) -> None:
        self._available_version.labels(model).set(version or 0)

    def warmup_replayed(self, model: str, count: int) -> None:
        self._warmup.labels(model).inc(count)

    def warmup_latency(self, model_path: str, status: str, seconds: float) -> None:
        self.tf_serving.warmup(model_path, status, seconds)

    def batch_run(self, model: str, signature: str, rows: int) -> None:
        self._batch_size.labels(model, signature).observe(rows)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of all series, and its Content-Type."""
        page = generate_latest(self.registry) + self.tf_serving.exposition().encode()
        return page, CONTENT_TYPE_LATEST
