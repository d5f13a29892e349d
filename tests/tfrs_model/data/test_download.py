"""Tests for `tfrs_model.data.download` against a real HTTP server on 127.0.0.1.

Each test builds a tiny zip in memory, serves it from `http.server` on an ephemeral port and
registers it under `movielens-100k` with its real digests, so the code path is the production
one except for `base_url` and `registry`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tfrs_model.data.download import (
    DATA_HOME_ENV,
    GROUPLENS_BASE_URL,
    MARKER_NAME,
    MOVIELENS_ARCHIVES,
    ArchiveSpec,
    default_cache_dir,
    fetch_archive,
    fetch_movielens,
)
from tfrs_model.errors import ConfigError, DataError

# A few lines in the 100K layouts: u.data is tab-separated, the others `|`-separated.
_U_DATA = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
_U_ITEM = b"242|Kolya (1996)|24-Jan-1997||http://x|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
_U_USER = b"196|49|M|writer|55105\n186|39|F|executive|00000\n"
_FAKE_100K = {
    "ml-100k/u.data": _U_DATA,
    "ml-100k/u.item": _U_ITEM,
    "ml-100k/u.user": _U_USER,
    "ml-100k/README": b"fake\n",
}


def _zip(members: dict[str, bytes]) -> bytes:
    """A zip archive, in memory, holding `members` (name -> content) as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def _spec(archive: bytes, **overrides: object) -> ArchiveSpec:
    """The ml-100k entry, with the true digests of `archive` unless overridden."""
    spec = ArchiveSpec(
        name="movielens-100k",
        url=f"{GROUPLENS_BASE_URL}/ml-100k.zip",
        directory="ml-100k",
        sha256=hashlib.sha256(archive).hexdigest(),
        size=len(archive),
        md5=hashlib.md5(archive).hexdigest(),
    )
    return replace(spec, **overrides)


@dataclass
class _Server:
    """What a test sees of the server: where it is, what it serves, what it was asked."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    truncate: bool = False

    def serve(self, filename: str, body: bytes) -> None:
        self.files[f"/mirror/{filename}"] = body


@pytest.fixture
def server() -> Iterator[_Server]:
    """An HTTP server on 127.0.0.1:<free port> serving `files` under `/mirror/`."""
    state = _Server(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            # A truncated response announces more bytes than it sends, then hangs up.
            length = len(body) + 100 if state.truncate else len(body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fetch(spec: ArchiveSpec, cache: Path, base_url: str, **kwargs: object) -> Path:
    return fetch_movielens(
        spec.name,
        cache,
        base_url=base_url,
        registry={spec.name: spec},
        progress=False,
        **kwargs,
    )


def test_download_verifies_extracts_and_writes_marker(
    tmp_path: Path, server: _Server, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    spec = _spec(archive)
    cache = tmp_path / "cache"  # does not exist yet: fetch creates it

    path = fetch_movielens(
        "movielens-100k",
        cache,
        base_url=server.base_url + "/",  # a trailing slash is tolerated
        registry={spec.name: spec},
        progress=True,
    )

    assert path == cache / "ml-100k"
    assert (path / "u.data").read_bytes() == _U_DATA
    assert (path / "u.user").read_bytes() == _U_USER
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["sha256"] == spec.sha256
    assert marker["size"] == len(archive)
    assert marker["dataset"] == "movielens-100k"
    assert server.requests == ["/mirror/ml-100k.zip"]
    # Only the extracted directory is left: no zip, no .part, no .extract scratch.
    assert os.listdir(cache) == ["ml-100k"]
    # The progress bar went to stderr, labelled with the file name.
    assert "ml-100k.zip" in capsys.readouterr().err


def test_second_call_uses_the_cache_without_network(tmp_path: Path, server: _Server) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    spec = _spec(archive)

    first = _fetch(spec, tmp_path, server.base_url)
    # A dead mirror proves the second call does not even try the network.
    second = _fetch(spec, tmp_path, f"http://127.0.0.1:{_closed_port()}")
    third = _fetch(spec, tmp_path, server.base_url)

    assert first == second == third == tmp_path / "ml-100k"
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("override", "expected_text"),
    [
        ({"sha256": "0" * 64}, "sha256 expected " + "0" * 64),
        ({"size": 12345}, "size expected 12345"),
        ({"md5": "f" * 32}, "md5 expected " + "f" * 32),
    ],
    ids=["sha256", "size", "md5"],
)
def test_checksum_mismatch_deletes_everything(
    tmp_path: Path, server: _Server, override: dict[str, object], expected_text: str
) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    spec = _spec(archive, **override)

    with pytest.raises(DataError) as raised:
        _fetch(spec, tmp_path, server.base_url)

    message = str(raised.value)
    assert expected_text in message
    assert "got " in message
    assert "corrupt" in message and "changed upstream" in message
    assert os.listdir(tmp_path) == []  # no partial directory, no temp file


def test_truncated_download_is_an_error_and_leaves_nothing(tmp_path: Path, server: _Server) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    server.truncate = True

    with pytest.raises(DataError, match=r"stopped after \d+ of \d+ bytes") as raised:
        _fetch(_spec(archive), tmp_path, server.base_url)

    assert "--data-dir path/to/ml-100k" in str(raised.value)

    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("evil", ["../evil", "ml-100k/../../evil", "/evil", "..\\evil", "C:/evil"])
def test_zip_with_escaping_member_is_rejected(tmp_path: Path, server: _Server, evil: str) -> None:
    archive = _zip({**_FAKE_100K, evil: b"pwned\n"})
    server.serve("ml-100k.zip", archive)
    cache = tmp_path / "cache"

    with pytest.raises(DataError, match="outside the extraction directory") as raised:
        _fetch(_spec(archive), cache, server.base_url)

    assert repr(evil) in str(raised.value)
    assert os.listdir(cache) == []
    assert sorted(os.listdir(tmp_path)) == ["cache"]  # nothing written beside the cache


def test_archive_without_the_expected_directory_is_rejected(
    tmp_path: Path, server: _Server
) -> None:
    archive = _zip({"other/u.data": _U_DATA})
    server.serve("ml-100k.zip", archive)

    with pytest.raises(DataError, match=r"no top-level ml-100k/ directory \(found: other\)"):
        _fetch(_spec(archive), tmp_path, server.base_url)

    assert os.listdir(tmp_path) == []


def test_file_that_is_not_a_zip_is_rejected(tmp_path: Path, server: _Server) -> None:
    archive = b"<html>maintenance page</html>"
    server.serve("ml-100k.zip", archive)

    with pytest.raises(DataError, match="not a valid zip"):
        _fetch(_spec(archive), tmp_path, server.base_url)

    assert os.listdir(tmp_path) == []


def _assert_offline_help(message: str, url: str) -> None:
    assert url in message
    assert "offline" in message
    assert "--data-dir path/to/ml-100k" in message
    assert DATA_HOME_ENV in message


def test_closed_port_reports_offline_with_manual_instructions(tmp_path: Path) -> None:
    spec = _spec(_zip(_FAKE_100K))
    base_url = f"http://127.0.0.1:{_closed_port()}"

    with pytest.raises(DataError) as raised:
        _fetch(spec, tmp_path, base_url)

    _assert_offline_help(str(raised.value), f"{base_url}/ml-100k.zip")
    assert os.listdir(tmp_path) == []


def test_server_that_never_answers_times_out(tmp_path: Path) -> None:
    spec = _spec(_zip(_FAKE_100K))
    with socket.socket() as silent:  # accepts connections into its backlog, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(DataError) as raised:
            _fetch(spec, tmp_path, base_url, timeout=0.2)
        elapsed = time.monotonic() - started

    _assert_offline_help(str(raised.value), f"{base_url}/ml-100k.zip")
    assert elapsed < 5.0
    assert os.listdir(tmp_path) == []


def test_http_error_names_status_and_url(tmp_path: Path, server: _Server) -> None:
    spec = _spec(_zip(_FAKE_100K))  # nothing served: 404

    with pytest.raises(DataError, match=r"answered HTTP 404") as raised:
        _fetch(spec, tmp_path, server.base_url)

    assert f"{server.base_url}/ml-100k.zip" in str(raised.value)
    assert "--data-dir path/to/ml-100k" in str(raised.value)
    assert os.listdir(tmp_path) == []


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'movielens-7k'") as raised:
        fetch_movielens("movielens-7k", tmp_path, progress=False)

    for name in MOVIELENS_ARCHIVES:
        assert name in str(raised.value)
    assert os.listdir(tmp_path) == []


def test_archive_placed_in_the_cache_by_hand_is_used_offline(tmp_path: Path) -> None:
    archive = _zip(_FAKE_100K)
    (tmp_path / "ml-100k.zip").write_bytes(archive)

    path = _fetch(_spec(archive), tmp_path, f"http://127.0.0.1:{_closed_port()}")

    assert (path / "u.data").read_bytes() == _U_DATA
    assert (path / MARKER_NAME).is_file()
    assert sorted(os.listdir(tmp_path)) == ["ml-100k", "ml-100k.zip"]  # the user's zip is kept


def test_archive_placed_by_hand_with_wrong_checksum_is_kept_and_reported(tmp_path: Path) -> None:
    archive = _zip(_FAKE_100K)
    (tmp_path / "ml-100k.zip").write_bytes(archive)

    with pytest.raises(DataError, match="sha256 expected"):
        _fetch(_spec(archive, sha256="1" * 64), tmp_path, f"http://127.0.0.1:{_closed_port()}")

    assert os.listdir(tmp_path) == ["ml-100k.zip"]


@pytest.mark.parametrize(
    "marker", [None, '{"sha256": "' + "2" * 64 + '"}', "not json"], ids=["none", "stale", "junk"]
)
def test_unverified_directory_is_not_overwritten(
    tmp_path: Path, server: _Server, marker: str | None
) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    existing = tmp_path / "ml-100k"
    existing.mkdir()
    (existing / "u.data").write_bytes(b"mine\n")
    if marker is not None:
        (existing / MARKER_NAME).write_text(marker)

    with pytest.raises(DataError, match=r"not verified.*--data-dir .*ml-100k"):
        _fetch(_spec(archive), tmp_path, server.base_url)

    assert (existing / "u.data").read_bytes() == b"mine\n"
    assert server.requests == []


def test_md5_only_entry_is_verified_by_md5(tmp_path: Path, server: _Server) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)

    path = _fetch(_spec(archive, sha256=None), tmp_path, server.base_url)

    assert json.loads((path / MARKER_NAME).read_text())["md5"] == hashlib.md5(archive).hexdigest()


def test_entry_without_checksum_is_checked_by_size_and_warns(
    tmp_path: Path, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _zip(_FAKE_100K)
    server.serve("ml-100k.zip", archive)
    spec = _spec(archive, sha256=None, md5=None)

    with caplog.at_level(logging.WARNING, logger="tfrs_model.data.download"):
        path = _fetch(spec, tmp_path, server.base_url)
        _fetch(spec, tmp_path, server.base_url)  # cached: no second warning, no request

    assert (path / "u.data").read_bytes() == _U_DATA
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checked by size only" in warnings[0]
    assert len(server.requests) == 1


def test_fetch_archive_takes_a_spec_directly(tmp_path: Path, server: _Server) -> None:
    archive = _zip({"ml-mini/ratings.csv": b"userId,movieId,rating,timestamp\n1,2,4.0,3\n"})
    server.serve("ml-mini.zip", archive)
    spec = _spec(archive, name="movielens-mini", url="https://example.invalid/x/ml-mini.zip")
    spec = replace(spec, directory="ml-mini")

    path = fetch_archive(spec, tmp_path, base_url=server.base_url, progress=False)

    assert path == tmp_path / "ml-mini"
    assert server.requests == ["/mirror/ml-mini.zip"]


def test_registry_lists_the_grouplens_archives() -> None:
    directories = {name: spec.directory for name, spec in MOVIELENS_ARCHIVES.items()}
    assert directories == {
        "movielens-100k": "ml-100k",
        "movielens-1m": "ml-1m",
        "movielens-latest-small": "ml-latest-small",
        "movielens-20m": "ml-20m",
        "movielens-25m": "ml-25m",
        "movielens-32m": "ml-32m",
    }
    for spec in MOVIELENS_ARCHIVES.values():
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{spec.directory}.zip"
        assert spec.filename == f"{spec.directory}.zip"
        assert spec.sha256 is not None and spec.size is not None
    with pytest.raises(TypeError):
        MOVIELENS_ARCHIVES["movielens-7k"] = MOVIELENS_ARCHIVES["movielens-1m"]  # type: ignore[index]


@pytest.mark.parametrize(
    "override",
    [{"sha256": "ABC"}, {"sha256": "A" * 64}, {"md5": "0" * 31}, {"size": 0}, {"directory": ".."}],
)
def test_archive_spec_rejects_malformed_values(override: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _spec(b"x", **override)


def test_default_cache_dir() -> None:
    assert default_cache_dir({DATA_HOME_ENV: "/data/tt", "HOME": "/home/u"}) == Path("/data/tt")
    assert default_cache_dir({DATA_HOME_ENV: "", "HOME": "/home/u"}) == Path(
        "/home/u/.cache/twotower"
    )
    assert default_cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/twotower")
