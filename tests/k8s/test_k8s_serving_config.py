"""TF Serving's config files (k8s/base/config/) parse with TF Serving's own messages and fit the pod.

The files are read from the rendered ConfigMap, which is what the server mounts.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from k8s_render import SERVING_DEPLOYMENT, flags, get, mounted_file, render, server_container
from k8s_serving_protos import (
    batching_parameters_class,
    model_server_config_class,
    monitoring_config_class,
)

from export import contract

TARGETS = ("brute-force", "scann")  # the overlays that run TensorFlow Serving


def _config_text(target: str, flag: str) -> str:
    docs = render(target)
    server = server_container(docs)
    pod_spec = get(docs, "Deployment", SERVING_DEPLOYMENT)["spec"]["template"]["spec"]
    volume, key = mounted_file(pod_spec, server, flags(server["args"])[flag])
    return get(docs, "ConfigMap", volume["configMap"]["name"])["data"][key]


def _cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("target", TARGETS)
def test_model_config_parses_as_model_server_config(target):
    pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2", reason="needs tensorflow-serving-api"
    )
    config = text_format.Parse(
        _config_text(target, "model_config_file"), model_server_config_class()()
    )

    assert [model.name for model in config.model_config_list.config] == [
        contract.DEFAULT_MODEL_NAME
    ]
    (model,) = config.model_config_list.config
    assert model.model_version_policy.latest.num_versions == 1


@pytest.mark.parametrize("target", TARGETS)
def test_batching_config_parses_as_batching_parameters_and_fits_the_pod(target):
    params = text_format.Parse(
        _config_text(target, "batching_parameters_file"), batching_parameters_class()()
    )
    server = server_container(render(target))
    cpu_limit = _cpu_cores(server["resources"]["limits"]["cpu"])

    assert params.max_batch_size.value > 0
    assert 0 < params.batch_timeout_micros.value <= 10_000  # a batch waits at most 10 ms
    assert params.max_enqueued_batches.value > 0
    assert 1 <= params.num_batch_threads.value <= cpu_limit
    if params.allowed_batch_sizes:
        assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
        assert params.allowed_batch_sizes[-1] == params.max_batch_size.value


@pytest.mark.parametrize("target", TARGETS)
def test_monitoring_config_parses_and_enables_prometheus(target):
    monitoring = text_format.Parse(
        _config_text(target, "monitoring_config_file"), monitoring_config_class()()
    )

    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize("target", TARGETS)
def test_tensorflow_thread_pools_match_the_cpu_limit(target):
    server = server_container(render(target))
    args = flags(server["args"])
    cpu_limit = _cpu_cores(server["resources"]["limits"]["cpu"])

    assert int(args["tensorflow_intra_op_parallelism"]) == cpu_limit
    assert int(args["tensorflow_inter_op_parallelism"]) == cpu_limit


def test_a_misspelt_field_does_not_parse():
    with pytest.raises(text_format.ParseError, match="max_batch_sze"):
        text_format.Parse("max_batch_sze { value: 8 }", batching_parameters_class()())
