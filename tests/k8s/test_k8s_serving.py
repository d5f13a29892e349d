"""The rendered serving manifests agree with the serving contract and with themselves.

Ports, model name and metrics path come from export/contract.py; the server's config files,
probes, selectors and volumes are checked against what the server reads and serves.
"""

from __future__ import annotations

import posixpath

import pytest
from google.protobuf import text_format
from k8s_render import (
    MODEL_STORE_PVC,
    SERVING_DEPLOYMENT,
    SERVING_TARGETS,
    containers,
    flags,
    get,
    mounted_file,
    overlay_of,
    pod_specs,
    render,
    server_container,
    uses_model_sync,
)

from export import contract

pytestmark = pytest.mark.parametrize("target", SERVING_TARGETS)

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
MODELS_MOUNT = "/models"
# Flags TF Serving must get (values checked below); each *_file one names a mounted config file.
TF_SERVING_FLAGS = (
    "port",
    "rest_api_port",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "enable_model_warmup",
    "file_system_poll_wait_seconds",
)


def _is_tf_serving(target: str) -> bool:
    return overlay_of(target) != "embedded"


def _deployment(docs: list[dict]) -> dict:
    return get(docs, "Deployment", SERVING_DEPLOYMENT)


def _pod_spec(docs: list[dict]) -> dict:
    return _deployment(docs)["spec"]["template"]["spec"]


def _rest_paths() -> set[str]:
    """GET paths the server answers on its REST port."""
    # TF Serving and `twotower serve --embedded` (serving/server/rest.py) answer the same paths.
    model = f"/v1/models/{contract.DEFAULT_MODEL_NAME}"
    return {model, f"{model}/metadata", PROMETHEUS_PATH}


def _config_file(docs: list[dict], target: str, flag: str) -> str:
    """Text of the config file a TF Serving `--<flag>=PATH` names, read from its ConfigMap."""
    server = server_container(docs)
    path = flags(server["args"])[flag]
    found = mounted_file(_pod_spec(docs), server, path)
    assert found is not None, f"{target}: --{flag}={path} is not on a mounted volume"
    volume, key = found
    assert "configMap" in volume, (
        f"{target}: --{flag} is on volume {volume['name']}, not a ConfigMap"
    )
    configmap = get(docs, "ConfigMap", volume["configMap"]["name"])
    assert key in configmap.get("data", {}), f"{target}: ConfigMap has no key {key} for --{flag}"
    return configmap["data"][key]


def _model_config(docs: list[dict], target: str):
    from k8s_serving_protos import model_server_config_class

    pytest.importorskip("tensorflow_serving.config.model_server_config_pb2")
    text = _config_file(docs, target, "model_config_file")
    return text_format.Parse(text, model_server_config_class()())


def _model_base_path(docs: list[dict], target: str) -> str:
    if _is_tf_serving(target):
        (model,) = _model_config(docs, target).model_config_list.config
        return model.base_path
    return flags(server_container(docs)["args"])["model-base-path"]


def test_server_ports_are_the_contract_ports(target):
    ports = {port["name"]: port for port in server_container(render(target))["ports"]}

    assert ports["grpc"]["containerPort"] == contract.GRPC_PORT
    assert ports["http"]["containerPort"] == contract.REST_PORT


def test_server_arguments_match_the_contract(target):
    server = server_container(render(target))
    args = flags(server["args"])

    if _is_tf_serving(target):
        assert server["command"] == ["/usr/bin/tensorflow_model_server"]
        missing = [flag for flag in TF_SERVING_FLAGS if flag not in args]
        assert not missing, f"TF Serving flags missing: {missing}"
        assert int(args["port"]) == contract.GRPC_PORT
        assert int(args["rest_api_port"]) == contract.REST_PORT
        assert args["enable_batching"] == "true"
        assert args["enable_model_warmup"] == "true"
        assert int(args["file_system_poll_wait_seconds"]) > 0
        # The model list comes from the config file alone.
        assert "model_name" not in args and "model_base_path" not in args
    else:
        assert server["command"] == ["twotower"]
        assert server["args"][0] == "serve" and "embedded" in args
        assert args["model-name"] == contract.DEFAULT_MODEL_NAME
        assert int(args["port"]) == contract.GRPC_PORT
        assert int(args["rest-api-port"]) == contract.REST_PORT
        assert args["host"] == "0.0.0.0"


def test_every_config_file_flag_names_a_key_of_a_mounted_config_map(target):
    docs = render(target)
    file_flags = [flag for flag in flags(server_container(docs)["args"]) if flag.endswith("_file")]

    if _is_tf_serving(target):
        assert set(file_flags) >= {
            "model_config_file",
            "batching_parameters_file",
            "monitoring_config_file",
        }
    for flag in file_flags:
        _config_file(docs, target, flag)


def test_model_config_serves_the_contract_model_from_the_model_store(target):
    docs = render(target)
    if not _is_tf_serving(target):
        pytest.skip("the embedded server takes its model from flags (checked above)")
    config = _model_config(docs, target)

    (model,) = config.model_config_list.config
    assert model.name == contract.DEFAULT_MODEL_NAME
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") is not None
    assert posixpath.dirname(model.base_path) == MODELS_MOUNT


def test_model_store_is_mounted_read_only_where_the_server_looks(target):
    docs = render(target)
    pod_spec = _pod_spec(docs)
    server = server_container(docs)
    base_path = _model_base_path(docs, target)

    found = mounted_file(pod_spec, server, f"{base_path}/1/saved_model.pb")
    assert found is not None, f"model base path {base_path} is not on a mounted volume"
    volume, _ = found
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    if uses_model_sync(target):
        assert "emptyDir" in volume and "persistentVolumeClaim" not in volume
        assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        sync = {c["name"]: c for c in pod_spec["initContainers"]}
        assert "restartPolicy" not in sync["model-sync-init"]
        assert sync["model-sync"]["restartPolicy"] == "Always"  # native sidecar
        for container in sync.values():
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["MODEL_BASE_PATH"] == base_path
            assert any(
                m["name"] == volume["name"] and not m.get("readOnly")
                for m in container["volumeMounts"]
            )
    else:
        assert volume["persistentVolumeClaim"] == {"claimName": MODEL_STORE_PVC, "readOnly": True}
        pvc = get(docs, "PersistentVolumeClaim", MODEL_STORE_PVC)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_probes_ask_endpoints_the_server_serves(target):
    server = server_container(render(target))
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = server.get(kind)
        assert probe is not None, f"{kind} missing"
        handlers = {"httpGet", "grpc", "tcpSocket", "exec"} & probe.keys()
        assert len(handlers) == 1, f"{kind} has handlers {handlers}"
        if "httpGet" in probe:
            port = probe["httpGet"]["port"]
            assert ports.get(port, port) == contract.REST_PORT, f"{kind} asks port {port}"
            assert probe["httpGet"]["path"] in _rest_paths(), (
                f"{kind} asks {probe['httpGet']['path']}"
            )
        else:
            # TF Serving implements no grpc.health.v1; the embedded server does.
            assert "grpc" in probe and not _is_tf_serving(target), f"{kind}: {probe}"
            assert probe["grpc"]["port"] == contract.GRPC_PORT
    if _is_tf_serving(target):
        # /v1/models/<name> answers 200 for a version still LOADING; only .../metadata waits
        # for one to be AVAILABLE.
        assert server["readinessProbe"]["httpGet"]["path"].endswith("/metadata")


def test_every_container_is_locked_down(target):
    for workload, pod_spec in pod_specs(render(target)):
        name = workload["metadata"]["name"]
        pod_security = pod_spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        tmp_volumes = {v["name"] for v in pod_spec["volumes"] if "emptyDir" in v}
        for container in containers(pod_spec):
            where = f"{name}/{container['name']}"
            security = container.get("securityContext")
            assert security, f"{where}: no securityContext"
            assert security["runAsNonRoot"] is True, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security["seccompProfile"]["type"] == "RuntimeDefault", where
            assert any(
                m["mountPath"] == "/tmp" and m["name"] in tmp_volumes
                for m in container["volumeMounts"]
            ), f"{where}: read-only root but no emptyDir on /tmp"
            assert container["resources"]["requests"] and container["resources"]["limits"], where


def test_every_container_selects_keras_2(target):
    for _, pod_spec in pod_specs(render(target)):
        for container in containers(pod_spec):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("TF_USE_LEGACY_KERAS") == "1", container["name"]


def test_every_image_is_pinned(target):
    for _, pod_spec in pod_specs(render(target)):
        for container in containers(pod_spec):
            image = container["image"]
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{container['name']}: {image} has no tag"
            assert tag != "latest", f"{container['name']}: {image} is not pinned"


def test_prometheus_scrapes_the_metrics_endpoint(target):
    docs = render(target)
    annotations = _deployment(docs)["spec"]["template"]["metadata"]["annotations"]

    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == contract.REST_PORT
    assert annotations["prometheus.io/path"] == PROMETHEUS_PATH
    if _is_tf_serving(target):
        from k8s_serving_protos import monitoring_config_class

        text = _config_file(docs, target, "monitoring_config_file")
        monitoring = text_format.Parse(text, monitoring_config_class()())
        assert monitoring.prometheus_config.enable
        assert monitoring.prometheus_config.path == PROMETHEUS_PATH


def test_services_expose_grpc_and_http_by_name(target):
    docs = render(target)
    services = [d for d in docs if d["kind"] == "Service"]
    pod_labels = _deployment(docs)["spec"]["template"]["metadata"]["labels"]

    assert any(
        s["spec"].get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in s["spec"]
        for s in services
    )
    for service in services:
        ports = {port["name"]: port for port in service["spec"]["ports"]}
        assert ports["grpc"]["port"] == contract.GRPC_PORT
        assert ports["grpc"]["targetPort"] == "grpc"
        assert ports["http"]["port"] == contract.REST_PORT
        assert ports["http"]["targetPort"] == "http"
        assert service["spec"]["selector"].items() <= pod_labels.items()


def test_selectors_of_deployment_pdb_and_network_policy_match_the_pods(target):
    docs = render(target)
    deployment = _deployment(docs)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget": get(docs, "PodDisruptionBudget", SERVING_DEPLOYMENT)["spec"][
            "selector"
        ]["matchLabels"],
        "NetworkPolicy": get(docs, "NetworkPolicy", SERVING_DEPLOYMENT)["spec"]["podSelector"][
            "matchLabels"
        ],
    }
    for kind, selector in selectors.items():
        assert selector and selector.items() <= pod_labels.items(), kind


def test_network_policy_admits_clients_and_prometheus_to_the_server_ports(target):
    docs = render(target)
    policy = get(docs, "NetworkPolicy", SERVING_DEPLOYMENT)
    port_names = {port["name"] for port in server_container(docs)["ports"]}

    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = {}
    for rule in policy["spec"]["ingress"]:
        ports = {port["port"] for port in rule["ports"]}
        assert ports <= port_names
        for peer in rule["from"]:
            admitted[str(peer)] = ports
    client = {"podSelector": {"matchLabels": {"twotower.io/client": "true"}}}
    assert admitted[str(client)] == {"grpc", "http"}
    prometheus = [ports for peer, ports in admitted.items() if "namespaceSelector" in peer]
    assert prometheus == [{"http"}]


def test_autoscaler_targets_the_deployment_and_owns_its_replicas(target):
    docs = render(target)
    hpa = get(docs, "HorizontalPodAutoscaler", SERVING_DEPLOYMENT)

    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": SERVING_DEPLOYMENT,
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2  # so the PodDisruptionBudget can let one go
    assert "replicas" not in _deployment(docs)["spec"]
    assert server_container(docs)["resources"]["requests"]["cpu"]
