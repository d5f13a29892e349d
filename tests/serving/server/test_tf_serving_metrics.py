"""The embedded server's metrics page carries TF Serving's own series, so one dashboard (and
k8s/grafana/twotower-serving-dashboard.json) works against either server."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import grpc
import pytest

from serving.server.tf_serving_metrics import LATENCY_BUCKETS_US, TfServingMetrics

TIMEOUT = 30


def _page(server) -> str:
    url = f"http://127.0.0.1:{server.ports.rest}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        return reply.read().decode()


def _value(page: str, series: str) -> float:
    match = re.search(re.escape(series) + r" (\S+)\n", page)
    return float(match.group(1)) if match else 0.0


def test_requests_are_counted_under_tf_serving_names_and_labels(shared_server, shared_stubs, tiny):
    before = _page(shared_server)
    shared_stubs.prediction.Predict(tiny.predict_request(["alice"]), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        shared_stubs.prediction.Predict(tiny.predict_request(["a"] * 9), timeout=TIMEOUT)

    page = _page(shared_server)

    ok = ':tensorflow:serving:request_count{model_name="tiny",status="OK"}'
    bad = ':tensorflow:serving:request_count{model_name="tiny",status="INVALID_ARGUMENT"}'
    assert _value(page, ok) >= _value(before, ok) + 1
    assert _value(page, bad) == _value(before, bad) + 1
    latency = ':tensorflow:serving:request_latency_count{model_name="tiny",API="Predict",'
    assert _value(page, latency + 'entrypoint="GRPC"}') >= 2
    runtime = ':tensorflow:serving:runtime_latency_count{model_name="tiny",API="Predict",'
    assert _value(page, runtime + 'runtime="TF2"}') >= 1
    assert "# TYPE :tensorflow:serving:request_count counter" in page
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page
    assert ":tensorflow:serving:request_count_total" not in page


def test_histograms_are_cumulative_in_microseconds_with_tf_serving_buckets():
    metrics = TfServingMetrics()
    metrics.request("m", "Predict", "REST", "OK", latency_s=0.001, runtime_s=0.0005)
    metrics.warmup("/models/m/1", "OK", 2.0)

    page = metrics.exposition()

    assert len(LATENCY_BUCKETS_US) == 33 and LATENCY_BUCKETS_US[0] == 10
    assert (
        ':tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="REST"} 1000'
        in page
    )
    assert (
        ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",le="+Inf"} 1'
        in page
    )
    assert (
        ':tensorflow:serving:model_warmup_latency_count{model_path="/models/m/1",status="OK"} 1'
        in page
    )


DASHBOARD = (
    Path(__file__).resolve().parents[3] / "k8s" / "grafana" / "twotower-serving-dashboard.json"
)


def test_the_dashboard_queries_only_series_the_embedded_server_exports(
    shared_server, shared_stubs, tiny
):
    shared_stubs.prediction.Predict(tiny.predict_request(["alice"]), timeout=TIMEOUT)
    page = _page(shared_server)
    exported = set(re.findall(r"^(:tensorflow:serving:[a-z_]+)", page, re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]

    queried = {
        name for expr in expressions for name in re.findall(r":tensorflow:serving:[a-z_]+", expr)
    }

    assert queried, "the dashboard queries no TF Serving series"
    assert queried <= exported, queried - exported
    assert all(":tensorflow:serving:" in expr for expr in expressions)  # TF Serving names only
