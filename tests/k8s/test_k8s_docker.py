"""Static checks of the Dockerfiles in docker/ (no Docker engine needed) and of the shell scripts.

Images must be pinned, run as a non-root user, and agree with the manifests and the project:
the same TF Serving release everywhere, every Python package of the project copied in.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from k8s_render import DOCKER_DIR, K8S_DIR, REPO_ROOT, render, server_container

from export import contract

DOCKERFILES = ("Dockerfile", "tf-serving-scann.Dockerfile")
SHELL_SCRIPTS = (
    DOCKER_DIR / "entrypoint-train.sh",
    K8S_DIR / "components" / "model-sync" / "sync-models.sh",
)


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, heredoc bodies skipped."""
    lines = (DOCKER_DIR / name).read_text().splitlines()
    instructions, current, heredoc = [], "", None
    for line in lines:
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if line.endswith("\\"):
            continue
        keyword, _, arguments = current.strip().partition(" ")
        instructions.append((keyword.upper(), arguments))
        match = re.search(r"<<-?'?\"?(\w+)", arguments)
        heredoc = match.group(1) if match else None
        current = ""
    return instructions


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name] = value.strip().strip('"')
    return defaults


def _expand(text: str, defaults: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], text)


def _base_images(name: str) -> list[str]:
    instructions = _instructions(name)
    defaults = _arg_defaults(instructions)
    return [
        _expand(arguments.split()[0], defaults)
        for keyword, arguments in instructions
        if keyword == "FROM"
    ]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name):
    for image in _base_images(name):
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert "latest" not in tag and "nightly" not in tag, f"{name}: {image} is not pinned"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_a_numeric_non_root_user(name):
    instructions = _instructions(name)
    defaults = _arg_defaults(instructions)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    users = [
        _expand(arguments, defaults)
        for keyword, arguments in instructions[last_from:]
        if keyword == "USER"
    ]

    assert users, f"{name}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]}"
    # The manifests run the pods as this user too.
    assert int(uid) == 65532


def test_project_image_runs_twotower_with_keras_2_on_the_contract_ports():
    instructions = _instructions("Dockerfile")
    env = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    exposed = {
        int(port)
        for keyword, arguments in instructions
        if keyword == "EXPOSE"
        for port in arguments.split()
    }

    assert "TF_USE_LEGACY_KERAS=1" in env
    assert ("ENTRYPOINT", '["twotower"]') in instructions
    assert exposed == {contract.GRPC_PORT, contract.REST_PORT}


def test_project_image_copies_every_package_of_the_project():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = [
        pattern.rstrip("*")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = {
        arguments.split()[0]
        for keyword, arguments in _instructions("Dockerfile")
        if keyword == "COPY"
    }

    assert {"pyproject.toml", *packages} <= copied


def test_scann_image_links_the_scann_ops_and_runs_where_the_manifests_expect():
    text = (DOCKER_DIR / "tf-serving-scann.Dockerfile").read_text()
    instructions = _instructions("tf-serving-scann.Dockerfile")

    assert "SUPPORTED_TENSORFLOW_OPS = " in text
    assert "@com_google_scann//scann/scann_ops/cc:scann_ops_static" in text
    assert "alwayslink = 1" in text  # without it the linker drops the op registrations
    assert ("ENTRYPOINT", '["/usr/bin/tensorflow_model_server"]') in instructions
    assert server_container(render("scann"))["command"] == ["/usr/bin/tensorflow_model_server"]


def test_one_tf_serving_release_everywhere():
    """Stock image, ScaNN build, its image tag and tensorflow-serving-api are the same release."""
    defaults = _arg_defaults(_instructions("tf-serving-scann.Dockerfile"))
    release = defaults["TF_SERVING_VERSION"]
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    api = re.search(r'"tensorflow-serving-api==([\d.]+)\.\*"', pyproject)

    assert api and release.startswith(f"{api.group(1)}.")
    assert server_container(render("brute-force"))["image"] == f"tensorflow/serving:{release}"
    assert server_container(render("scann"))["image"].endswith(f"/tf-serving-scann:{release}")
    assert _base_images("tf-serving-scann.Dockerfile")[0] == f"tensorflow/serving:{release}-devel"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_scripts_parse_with_posix_sh(script):
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_is_filtered(name):
    """BuildKit reads <Dockerfile>.dockerignore; without it the context would include .venv."""
    ignore = (DOCKER_DIR / f"{name}.dockerignore").read_text().splitlines()

    assert "*" in ignore
