"""Every Kustomize target renders, and every rendered object is valid Kubernetes.

Validation uses the OpenAPI-derived JSON schemas that `kubernetes-validate` ships, in strict mode
(an unknown field, such as a misspelt one, is an error), offline.
"""

from __future__ import annotations

import json

import pytest
from k8s_render import ALL_TARGETS, render

# The oldest Kubernetes the manifests support (native sidecars and preStop `sleep` are on by
# default from 1.30; PodDisruptionBudget unhealthyPodEvictionPolicy is GA in 1.31) and a newer
# one, to catch removals. Both must be among the schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.34.0")

# (version, object as JSON) already validated: identical objects recur across targets.
_validated: set[tuple[str, str]] = set()


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_target_renders_uniquely_named_objects(target):
    docs = render(target)

    assert docs, f"{target} rendered nothing"
    keys = [(doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(keys) == len(set(keys)), f"duplicate objects in {target}: {keys}"
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        name = doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name") == "twotower", name
        assert labels.get("app.kubernetes.io/part-of") == "twotower-recommender", name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_objects_validate_against_kubernetes_schemas(target, version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (in the project's dev extra)"
    )
    for doc in render(target):
        key = (version, json.dumps(doc, sort_keys=True))
        if key in _validated:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            pytest.fail(
                f"{target}: {doc['kind']} {doc['metadata']['name']} at {path}: {error.message}"
            )
        _validated.add(key)
