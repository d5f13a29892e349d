"""k8s/components/model-sync/sync-models.sh, run for real against a stand-in `gcloud`.

The stand-in mirrors a local directory for `gs://store`, so each test arranges the object store
as directories and checks what the server would see under the model base path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from k8s_render import K8S_DIR

SCRIPT = K8S_DIR / "components" / "model-sync" / "sync-models.sh"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "bucket"
    path.mkdir()
    return path


def _version(store: Path, version: str, complete: bool = True) -> None:
    directory = store / version
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"pb")
    (directory / "variables" / "variables.index").write_bytes(b"index")
    if complete:
        (directory / "_COMPLETE").touch()


def _sync(tmp_path: Path, store: Path, mode: str = "once") -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    # `gcloud storage rsync ... gs://store DST` makes DST a copy of $STORE.
    gcloud.write_text(
        "#!/bin/sh\n"
        "for dst; do :; done\n"
        'rm -rf "$dst" && mkdir -p "$dst" && cp -R "$STORE"/. "$dst"\n'
    )
    gcloud.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STORE": str(store),
        "MODEL_STORE_URI": "gs://store",
        "MODEL_BASE_PATH": str(tmp_path / "models" / "twotower"),
    }
    return subprocess.run(
        ["sh", str(SCRIPT), mode], env=env, capture_output=True, text=True, timeout=30
    )


def _served(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "models" / "twotower").iterdir())


def test_publishes_complete_versions_only(tmp_path, store):
    _version(store, "1")
    _version(store, "2", complete=False)  # still uploading
    (store / "notes").mkdir()  # not a version

    result = _sync(tmp_path, store)

    assert result.returncode == 0, result.stderr
    assert _served(tmp_path) == ["1"]
    assert (
        tmp_path / "models" / "twotower" / "1" / "variables" / "variables.index"
    ).read_bytes() == b"index"
    assert "version 2 is not complete" in result.stderr


def test_publishes_new_versions_and_removes_deleted_ones(tmp_path, store):
    _version(store, "1")
    assert _sync(tmp_path, store).returncode == 0
    _version(store, "2")
    assert _sync(tmp_path, store).returncode == 0
    assert _served(tmp_path) == ["1", "2"]

    shutil.rmtree(store / "2")  # roll back: delete version 2 from the store
    result = _sync(tmp_path, store)

    assert result.returncode == 0, result.stderr
    assert _served(tmp_path) == ["1"]


def test_first_sync_fails_without_a_complete_version(tmp_path, store):
    _version(store, "1", complete=False)

    result = _sync(tmp_path, store)

    assert result.returncode == 1
    assert "no complete version" in result.stderr
    assert _served(tmp_path) == []


def test_refuses_an_unknown_store_scheme(tmp_path, store):
    result = subprocess.run(
        ["sh", str(SCRIPT), "once"],
        env={
            **os.environ,
            "MODEL_STORE_URI": "ftp://store",
            "MODEL_BASE_PATH": str(tmp_path / "m" / "twotower"),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode != 0
    assert "gs:// or s3://" in result.stderr
