"""The multi-worker training Job (k8s/training) and its entry point (docker/entrypoint-train.sh).

The manifests are checked against each other and against the serving side's model store; the
entry point is run for real, with a stand-in `twotower` that records how it was called.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
from pathlib import Path

import pytest
from k8s_render import (
    DOCKER_DIR,
    MODEL_STORE_PVC,
    PARAMETER_SERVER_TARGET,
    TRAINING_TARGET,
    containers,
    flags,
    get,
    render,
    server_container,
)

ENTRYPOINT = DOCKER_DIR / "entrypoint-train.sh"
JOB = "twotower-train"


def _job() -> dict:
    return get(render(TRAINING_TARGET), "Job", JOB)


def _trainer() -> dict:
    (trainer,) = _job()["spec"]["template"]["spec"]["containers"]
    return trainer


def _env() -> dict[str, dict]:
    return {e["name"]: e for e in _trainer()["env"]}


def test_job_is_indexed_with_one_pod_per_worker():
    spec = _job()["spec"]
    num_workers = int(_env()["NUM_WORKERS"]["value"])

    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == num_workers
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_workers_are_addressable_through_the_headless_service():
    docs = render(TRAINING_TARGET)
    pod = _job()["spec"]["template"]
    env = _env()
    service = get(docs, "Service", env["WORKER_SERVICE"]["value"])

    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (container_port,) = _trainer()["ports"]
    assert port["port"] == container_port["containerPort"] == int(env["WORKER_PORT"]["value"])
    assert port["targetPort"] == container_port["name"]
    # Worker hostnames are <job name>-<index>: the entry point must get the Job's name.
    assert (
        env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['batch.kubernetes.io/job-name']"
    )


def test_network_policy_lets_workers_reach_each_other():
    docs = render(TRAINING_TARGET)
    policy = get(docs, "NetworkPolicy", JOB)
    pod_labels = _job()["spec"]["template"]["metadata"]["labels"]

    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert [p["port"] for p in rule["ports"]] == [_trainer()["ports"][0]["name"]]


@pytest.mark.parametrize("serving_target", ["brute-force", "scann", "embedded"])
def test_chief_exports_where_the_servers_look(serving_target):
    """MODEL_BASE_PATH in the trainer is the servers' model base path, on the same PVC."""
    serving = render(serving_target)
    server = server_container(serving)
    pod_spec = _job()["spec"]["template"]["spec"]
    env = _env()

    (volume,) = [v for v in pod_spec["volumes"] if v.get("persistentVolumeClaim")]
    assert volume["persistentVolumeClaim"]["claimName"] == MODEL_STORE_PVC
    get(serving, "PersistentVolumeClaim", MODEL_STORE_PVC)  # created by the serving overlays
    (train_mount,) = [m for m in _trainer()["volumeMounts"] if m["name"] == volume["name"]]
    (serve_mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/models"]
    assert not train_mount.get("subPath") and not serve_mount.get("subPath")
    export_path = posixpath.relpath(env["MODEL_BASE_PATH"]["value"], train_mount["mountPath"])
    serving_base = flags(server["args"]).get("model-base-path", "/models/twotower")
    assert export_path == posixpath.relpath(serving_base, serve_mount["mountPath"])
    assert env["INDEX"]["value"] in ("brute-force", "scann")


def test_trainer_runs_the_entrypoint_the_image_installs():
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()

    assert _trainer()["command"] == ["/usr/local/bin/entrypoint-train.sh"]
    assert "docker/entrypoint-train.sh /usr/local/bin/entrypoint-train.sh" in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK)
    for container in containers(_job()["spec"]["template"]["spec"]):
        assert container["image"].startswith("ghcr.io/your-org/twotower:")


def _run_entrypoint(
    tmp_path: Path, index: int, num_workers: int = 3, **extra: str
) -> tuple[subprocess.CompletedProcess, list[tuple[str, dict]]]:
    """Runs the entry point as pod `index` (`extra`: more environment, e.g. STRATEGY);
    returns the process and the recorded calls.

    Each call is (its arguments joined by spaces, the TF_CONFIG it saw, parsed, or None).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / f"calls-{index}"
    stub = bin_dir / "twotower"
    stub.write_text('#!/bin/sh\nprintf "%s\\t%s\\n" "$*" "$TF_CONFIG" >> "$CALLS"\n')
    stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "JOB_COMPLETION_INDEX": str(index),
        "NUM_WORKERS": str(num_workers),
        "JOB_NAME": "twotower-train",
        "WORKER_SERVICE": "twotower-train",
        "WORKER_PORT": "12345",
        "RUN_DIR": "/store/runs/r1",
        "MODEL_BASE_PATH": "/store/twotower",
        "INDEX": "scann",
        "PEER_DNS_TIMEOUT_SECONDS": "0",
        **extra,
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    recorded = [
        (args, json.loads(tf_config) if tf_config else None)
        for args, tf_config in (line.split("\t") for line in lines)
    ]
    return result, recorded


def _train_call(strategy: str) -> str:
    return f"train --dataset movielens-100k --out /store/runs/r1 --strategy {strategy}"


def _chief_calls(strategy: str) -> list[str]:
    """What the chief runs: training, then evaluation and export of the run."""
    return [
        _train_call(strategy),
        "evaluate --run /store/runs/r1 --split test --json /store/runs/r1/eval-test.json",
        "export --run /store/runs/r1 --model-base-path /store/twotower --index scann",
    ]


def test_chief_trains_evaluates_and_exports(tmp_path):
    result, calls = _run_entrypoint(tmp_path, index=0)

    assert result.returncode == 0, result.stderr
    assert [args for args, _ in calls] == _chief_calls("multi-worker")
    # Every worker is <job>-<i>.<service>:<port>, in index order; the chief is worker 0.
    assert calls[0][1] == {
        "cluster": {
            "worker": [
                "twotower-train-0.twotower-train:12345",
                "twotower-train-1.twotower-train:12345",
                "twotower-train-2.twotower-train:12345",
            ]
        },
        "task": {"type": "worker", "index": 0},
    }
    # Evaluation and export run on the chief alone, outside the cluster.
    assert [tf_config for _, tf_config in calls[1:]] == [None, None]


def test_other_workers_only_train(tmp_path):
    result, calls = _run_entrypoint(tmp_path, index=2)

    assert result.returncode == 0, result.stderr
    assert [args.split()[0] for args, _ in calls] == ["train"]
    assert calls[0][1]["task"] == {"type": "worker", "index": 2}


def test_an_index_beyond_the_worker_count_is_refused(tmp_path):
    result, calls = _run_entrypoint(tmp_path, index=3, num_workers=3)

    assert result.returncode == 2
    assert "NUM_WORKERS" in result.stderr
    assert calls == []


def _ps_entrypoint(tmp_path: Path, index: int, **extra: str):
    return _run_entrypoint(
        tmp_path, index, num_workers=2, STRATEGY="parameter-server", NUM_PS="2", **extra
    )


PS_CLUSTER = {
    "chief": ["twotower-train-0.twotower-train:12345"],
    "ps": ["twotower-train-1.twotower-train:12345", "twotower-train-2.twotower-train:12345"],
    "worker": ["twotower-train-3.twotower-train:12345", "twotower-train-4.twotower-train:12345"],
}


def test_parameter_server_chief_coordinates_then_evaluates_and_exports(tmp_path):
    result, calls = _ps_entrypoint(tmp_path, index=0)

    assert result.returncode == 0, result.stderr
    assert [args for args, _ in calls] == _chief_calls("parameter-server")
    assert calls[0][1] == {"cluster": PS_CLUSTER, "task": {"type": "chief", "index": 0}}


@pytest.mark.parametrize(("index", "task"), [(1, ("ps", 0)), (2, ("ps", 1)), (4, ("worker", 1))])
def test_parameter_servers_and_workers_only_serve(tmp_path, index, task):
    result, calls = _ps_entrypoint(tmp_path, index=index)

    assert result.returncode == 0, result.stderr
    assert [args for args, _ in calls] == [_train_call("parameter-server")]
    assert calls[0][1] == {"cluster": PS_CLUSTER, "task": {"type": task[0], "index": task[1]}}


def test_parameter_server_mode_refuses_a_pod_beyond_the_cluster_or_no_servers(tmp_path):
    beyond, calls = _ps_entrypoint(tmp_path, index=5)
    assert beyond.returncode == 2 and "5 pods" in beyond.stderr and calls == []
    no_servers, calls = _run_entrypoint(tmp_path, 0, STRATEGY="parameter-server", NUM_PS="0")
    assert no_servers.returncode == 2 and "NUM_PS >= 1" in no_servers.stderr and calls == []


def test_parameter_server_job_has_one_pod_per_task_and_ends_with_the_chief():
    job = get(render(PARAMETER_SERVER_TARGET), "Job", JOB)
    spec = job["spec"]
    (trainer,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    pods = 1 + int(env["NUM_PS"]) + int(env["NUM_WORKERS"])

    assert env["STRATEGY"] == "parameter-server"
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == pods
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
