"""TF Serving's own Prometheus series, with its names, labels and units, for shared dashboards.

TF Serving registers these monitoring metrics (names as in its source, tensorflow_serving/
servables/tensorflow/util.cc and saved_model_warmup_util.cc):
  /tensorflow/serving/request_count{model_name,status}           counter
  /tensorflow/serving/request_latency{model_name,API,entrypoint}  histogram, microseconds
  /tensorflow/serving/runtime_latency{model_name,API,runtime}     histogram, microseconds
  /tensorflow/serving/model_warmup_latency{model_path,status}     histogram, microseconds
and its Prometheus exporter (monitoring/prometheus_exporter.cc) writes each name with '/'
replaced by ':' (":tensorflow:serving:request_count"), counters without a "_total" suffix and
histograms as _bucket/_sum/_count. Latency buckets follow TF Serving's
`Buckets::Exponential(10, 1.8, 33)` microseconds. Label values as TF Serving writes them:
status "OK" or the error code's name; API "Predict", "GetModelMetadata", ...; entrypoint "GRPC"
or "REST". `runtime` is "TF2" here (TF Serving writes "TF1" for its session runtime).

prometheus_client would render counters as "<name>_total", so these series are rendered here.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
MODEL_WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
RUNTIME = "TF2"
LATENCY_BUCKETS_US = tuple(10 * 1.8**power for power in range(33))

_HELP = {
    REQUEST_COUNT: ("counter", "The total number of requests."),
    REQUEST_LATENCY: (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ),
    RUNTIME_LATENCY: (
        "histogram",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ),
    MODEL_WARMUP_LATENCY: (
        "histogram",
        "Distribution of wall time (in microseconds) for warming up the model.",
    ),
}
_LABELS = {
    REQUEST_COUNT: ("model_name", "status"),
    REQUEST_LATENCY: ("model_name", "API", "entrypoint"),
    RUNTIME_LATENCY: ("model_name", "API", "runtime"),
    MODEL_WARMUP_LATENCY: ("model_path", "status"),
}


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_US) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next(
            (i for i, bound in enumerate(LATENCY_BUCKETS_US) if value <= bound),
            len(LATENCY_BUCKETS_US),
        )
        self.counts[index] += 1
        self.total += value


class TfServingMetrics:
    """TF Serving's request, runtime and warm-up series; thread-safe, rendered by `exposition`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], float] = defaultdict(float)
        self._histograms: dict[str, dict[tuple[str, ...], _Histogram]] = {
            name: defaultdict(_Histogram)
            for name in (REQUEST_LATENCY, RUNTIME_LATENCY, MODEL_WARMUP_LATENCY)
        }

    def request(
        self,
        model_name: str,
        api: str,
        entrypoint: str,
        status: str,
        latency_s: float,
        runtime_s: float | None,
    ) -> None:
        """One answered request; `runtime_s` is the model's share (None: the model did not run)."""
        with self._lock:
            self._counts[(model_name, status)] += 1
            self._histograms[REQUEST_LATENCY][(model_name, api, entrypoint)].observe(
                latency_s * 1e6
            )
            if runtime_s is not None:
                self._histograms[RUNTIME_LATENCY][(model_name, api, RUNTIME)].observe(
                    runtime_s * 1e6
                )

    def warmup(self, model_path: str, status: str, latency_s: float) -> None:
        """One version's warm-up, as TF Serving records it per model path."""
        with self._lock:
            self._histograms[MODEL_WARMUP_LATENCY][(model_path, status)].observe(latency_s * 1e6)

    def exposition(self) -> str:
        """The series in Prometheus text format, as TF Serving's exporter names them."""
        lines: list[str] = []
        with self._lock:
            _header(lines, REQUEST_COUNT)
            for labels, value in sorted(self._counts.items()):
                lines.append(f"{REQUEST_COUNT}{_labels(REQUEST_COUNT, labels)} {_number(value)}")
            for name, series in self._histograms.items():
                _header(lines, name)
                for labels, histogram in sorted(series.items()):
                    cumulative = 0
                    for bound, count in zip(
                        (*LATENCY_BUCKETS_US, math.inf), histogram.counts, strict=True
                    ):
                        cumulative += count
                        le = "+Inf" if bound == math.inf else _number(bound)
                        lines.append(f"{name}_bucket{_labels(name, labels, le=le)} {cumulative}")
                    lines.append(f"{name}_sum{_labels(name, labels)} {_number(histogram.total)}")
                    lines.append(f"{name}_count{_labels(name, labels)} {cumulative}")
        return "\n".join(lines) + "\n"


def _header(lines: list[str], name: str) -> None:
    kind, text = _HELP[name]
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def _labels(name: str, values: tuple[str, ...], **extra: str) -> str:
    pairs = [*zip(_LABELS[name], values, strict=True), *extra.items()]
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"
