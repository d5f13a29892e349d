"""Renders the Kustomize targets under k8s/ with `kubectl kustomize`, once per test session.

A target is a serving overlay (`brute-force`, `scann`, `embedded`), a serving overlay combined
with an object-storage component (`scann+model-sync-gcs`: rendered from a throw-away
kustomization that lists both, as a user's own overlay would), or `training`.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
DOCKER_DIR = REPO_ROOT / "docker"

SERVING_OVERLAYS = ("brute-force", "scann", "embedded")
MODEL_SYNC_COMPONENTS = ("model-sync-gcs", "model-sync-s3")
SERVING_TARGETS = (
    *SERVING_OVERLAYS,
    *(
        f"{overlay}+{component}"
        for overlay in SERVING_OVERLAYS
        for component in MODEL_SYNC_COMPONENTS
    ),
)
TRAINING_TARGET = "training"
PARAMETER_SERVER_TARGET = "training-parameter-server"
ALL_TARGETS = (*SERVING_TARGETS, TRAINING_TARGET, PARAMETER_SERVER_TARGET)

SERVING_DEPLOYMENT = "twotower-serving"
SERVER_CONTAINER = "server"
MODEL_STORE_PVC = "twotower-models"
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def kubectl() -> str:
    """Path of kubectl; skips the calling test when it is missing."""
    path = shutil.which("kubectl") or (
        "/usr/bin/kubectl" if os.access("/usr/bin/kubectl", os.X_OK) else None
    )
    if path is None:
        pytest.skip(
            "kubectl not found: install it (`make setup` does, through system-deps) to render k8s/"
        )
    return path


def overlay_of(target: str) -> str:
    """The serving overlay of a serving target: `scann+model-sync-gcs` -> `scann`."""
    return target.split("+", 1)[0]


def uses_model_sync(target: str) -> bool:
    return "+" in target


def render(target: str) -> list[dict]:
    """The objects `kubectl kustomize` renders for `target`, as dicts (a fresh copy per call)."""
    return copy.deepcopy(list(_render(kubectl(), target)))


@functools.cache
def _render(kubectl_path: str, target: str) -> tuple[dict, ...]:
    if target in (TRAINING_TARGET, PARAMETER_SERVER_TARGET):
        return _kustomize(kubectl_path, K8S_DIR / target)
    if not uses_model_sync(target):
        return _kustomize(kubectl_path, K8S_DIR / "overlays" / target)
    overlay, component = target.split("+", 1)
    with tempfile.TemporaryDirectory(prefix="twotower-kustomize-") as tmp:
        # Kustomize refuses absolute paths to other kustomizations; relative ones may leave the root.
        k8s = os.path.relpath(K8S_DIR, tmp)
        Path(tmp, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            f"resources:\n  - {k8s}/overlays/{overlay}\n"
            f"components:\n  - {k8s}/components/{component}\n"
        )
        return _kustomize(kubectl_path, Path(tmp))


def _kustomize(kubectl_path: str, directory: Path) -> tuple[dict, ...]:
    result = subprocess.run(
        [kubectl_path, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of `kind` (and `name`, ignoring the hash suffix of generated ConfigMaps)."""
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or _base_name(doc, name) == name)
    ]


def get(docs: list[dict], kind: str, name: str) -> dict:
    """The one object of `kind` named `name`; fails the test when there is not exactly one."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _base_name(doc: dict, name: str) -> str:
    actual = doc["metadata"]["name"]
    if doc["kind"] == "ConfigMap" and actual.startswith(f"{name}-"):
        return name  # configMapGenerator appends -<hash>
    return actual


def pod_specs(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, pod spec) for every object with a pod template."""
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            yield doc, doc["spec"]["template"]["spec"]


def containers(pod_spec: dict) -> list[dict]:
    """Init containers (sidecars included) and containers of a pod spec."""
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def server_container(docs: list[dict]) -> dict:
    pod_spec = get(docs, "Deployment", SERVING_DEPLOYMENT)["spec"]["template"]["spec"]
    (server,) = [c for c in pod_spec["containers"] if c["name"] == SERVER_CONTAINER]
    return server


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}; a bare `--name` maps to ""."""
    parsed = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            parsed[name] = value
    return parsed


def config_map_data(docs: list[dict], configmap_name: str) -> dict[str, str]:
    """The data of the rendered ConfigMap whose (possibly hashed) name is `configmap_name`."""
    (configmap,) = [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == configmap_name
    ]
    return configmap.get("data", {})


def mounted_file(pod_spec: dict, container: dict, path: str) -> tuple[dict, str] | None:
    """For a file path inside `container`: (its volume, the path relative to the mount), or None."""
    mounts = sorted(
        container.get("volumeMounts", []), key=lambda m: len(m["mountPath"]), reverse=True
    )
    for mount in mounts:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
            return volume, path[len(prefix) :]
    return None
