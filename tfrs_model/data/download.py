"""Downloads, verifies and extracts the GroupLens MovieLens archives into a local cache.

`fetch_movielens(name, cache_dir)` returns `cache_dir/<directory inside the archive>` (e.g.
`cache_dir/ml-100k`). A directory published there carries a marker file recording the digests
it was verified against; while that marker matches the registry, no network is used.

Layout of `cache_dir`:
- `ml-100k/`, `ml-1m/`, ...: extracted, verified archives, each with `.twotower-verified`.
- `ml-100k.zip`, ...: optional, placed there by hand on an offline machine; verified and
  extracted instead of downloading.
- `.ml-100k.zip.*.part`, `.ml-100k.*.extract`: transient; removed on success and on failure.

Nothing here reads `os.environ`: the CLI calls `default_cache_dir(os.environ)`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import types
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from tfrs_model.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
DATA_HOME_ENV = "TWOTOWER_DATA_HOME"
MARKER_NAME = ".twotower-verified"

_CHUNK_BYTES = 1 << 20


def _unsafe_member(name: str) -> bool:
    """Whether a zip member name could land outside the extraction directory."""
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    return (
        path.is_absolute()
        or ".." in path.parts
        or (len(normalized) >= 2 and normalized[1] == ":")  # Windows drive letter
        or "\0" in name
    )


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable archive and what it must hash to.

    Attributes:
      name: dataset name used on the command line (`movielens-100k`).
      url: where GroupLens publishes the zip; its last path segment is the file name.
      directory: the single top-level directory inside the zip (`ml-100k`); the extracted
        dataset lives at `cache_dir/directory`.
      sha256: lower-case hex SHA-256 of the zip, or None where no published value is known.
      size: size of the zip in bytes, or None where unknown.
      md5: lower-case hex MD5 as GroupLens publishes it next to the zip (`<url>.md5`), or None.
        Every digest that is not None is checked; with neither sha256 nor md5 the archive is
        checked by size only, and a warning is logged.
    """

    name: str
    url: str
    directory: str
    sha256: str | None
    size: int | None
    md5: str | None = None

    def __post_init__(self) -> None:
        for key, length in (("sha256", 64), ("md5", 32)):
            value = getattr(self, key)
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise ConfigError(
                    f"{self.name}: {key} must be {length} lower-case hex digits, got {value!r}"
                )
        if self.size is not None and self.size <= 0:
            raise ConfigError(f"{self.name}: size must be a positive byte count, got {self.size}")
        if not self.directory or _unsafe_member(self.directory) or "/" in self.directory:
            raise ConfigError(
                f"{self.name}: directory must be one plain name, got {self.directory!r}"
            )

    @property
    def filename(self) -> str:
        """The zip's file name, the last segment of `url` (`ml-100k.zip`)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def _grouplens(
    name: str, directory: str, sha256: str | None, size: int | None, md5: str | None
) -> ArchiveSpec:
    return ArchiveSpec(
        name=name,
        url=f"{GROUPLENS_BASE_URL}/{directory}.zip",
        directory=directory,
        sha256=sha256,
        size=size,
        md5=md5,
    )


# Sources of the digests and sizes below. None was computed by this project (GroupLens was not
# reachable when they were recorded); each is copied from the public source named:
# - sha256 and size of ml-100k, ml-1m, ml-latest-small, ml-20m, ml-25m: TensorFlow Datasets,
#   tensorflow/datasets tensorflow_datasets/url_checksums/movielens.txt (commit 1c076ac3).
# - sha256 and size of ml-32m: not in that TFDS file. The sha256 is pinned in ankane/disco-cli
#   (src/download.rs, the version that adds MovieLens 32M) and, with size 238950008, in several
#   unrelated public projects' data manifests; the size 238950008 is also recorded next to the
#   GroupLens MD5 in another.
# - md5 of ml-100k, ml-1m, ml-20m, ml-25m: GroupLens' `<url>.md5` files, as quoted in
#   eli-osherovich/papers_with_code datasets/movielens/dl_config.py and in public verify
#   scripts that copy them from `curl <url>.md5`. md5 of ml-32m: GroupLens'
#   ml-32m.zip.md5, as quoted by several public download scripts (e.g. pooch
#   `known_hash="md5:..."`). No published MD5 was found for ml-latest-small.
_ARCHIVES = (
    _grouplens(
        "movielens-100k",
        "ml-100k",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        size=4924029,
        md5="0e33842e24a9c977be4e0107933c0723",
    ),
    _grouplens(
        "movielens-1m",
        "ml-1m",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        size=5917549,
        md5="c4d9eecfca2ab87c1945afe126590906",
    ),
    _grouplens(
        "movielens-latest-small",
        "ml-latest-small",
        sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        size=978202,
        md5=None,
    ),
    _grouplens(
        "movielens-20m",
        "ml-20m",
        sha256="96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        size=198702078,
        md5="cd245b17a1ae2cc31bb14903e1204af3",
    ),
    _grouplens(
        "movielens-25m",
        "ml-25m",
        sha256="8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        size=261978986,
        md5="6b51fb2759a8657d3bfcbfc42b592ada",
    ),
    _grouplens(
        "movielens-32m",
        "ml-32m",
        sha256="e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee",
        size=238950008,
        md5="d472be332d4daa821edc399621853b57",
    ),
)

# Read-only view: the registry is configuration, not state.
MOVIELENS_ARCHIVES: Mapping[str, ArchiveSpec] = types.MappingProxyType(
    {spec.name: spec for spec in _ARCHIVES}
)


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where downloads go: `$TWOTOWER_DATA_HOME` if set and non-empty, else `~/.cache/twotower`.

    Args:
      environ: the environment to read, normally `os.environ` (passed by the CLI).
    """
    configured = environ.get(DATA_HOME_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".cache" / "twotower"


def fetch_movielens(
    name: str,
    cache_dir: Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    registry: Mapping[str, ArchiveSpec] = MOVIELENS_ARCHIVES,
) -> Path:
    """Returns the extracted directory of MovieLens dataset `name`, downloading it if needed.

    Args:
      name: a key of `registry` (`movielens-100k`, `movielens-1m`, ...).
      cache_dir: directory holding extracted datasets; created if missing.
      base_url: fetch `<base_url>/<file name>` instead of the GroupLens URL (a mirror, or a
        local server in tests). Default None: the registry URL.
      progress: show a tqdm progress bar (bytes) on stderr while downloading. Default True.
      timeout: seconds to wait for the connection and for each read. Default 30.
      registry: dataset name to archive; default `MOVIELENS_ARCHIVES`.

    Returns:
      `cache_dir / spec.directory`, e.g. `cache_dir/ml-100k`.

    Raises:
      DataError: unknown name (the message lists the known ones); the machine is offline or the
        server failed (the message says how to supply the data by hand); the archive does not
        match its checksum or size, or holds unsafe or unexpected members; an unverified
        directory is in the way.
    """
    spec = registry.get(name)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(registry)}")
    return fetch_archive(spec, cache_dir, base_url=base_url, progress=progress, timeout=timeout)


def fetch_archive(
    spec: ArchiveSpec,
    cache_dir: Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """`fetch_movielens` for an explicit `ArchiveSpec`; see there for arguments and errors."""
    cache_dir = Path(cache_dir)
    target = cache_dir / spec.directory
    if target.exists():
        if _marker_matches(target / MARKER_NAME, spec):
            logger.debug("%s: using verified %s", spec.name, target)
            return target
        raise DataError(
            f"{target} exists but was not verified for {spec.name} (no matching "
            f"{MARKER_NAME}: it was put there by hand, or the registry's checksum changed). "
            f"Use it as is with --data-dir {target}, or delete it to download again"
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    url = spec.url if base_url is None else f"{base_url.rstrip('/')}/{spec.filename}"
    local = cache_dir / spec.filename
    if local.is_file():
        # Placed by hand (offline machines): verify it like a download, but never delete it.
        logger.info("%s: using %s instead of downloading", spec.name, local)
        digests = _digest_file(local)
        _check(spec, digests, source=str(local), delete_hint=f"delete or replace {local}")
        return _install(spec, local, digests, cache_dir, url=str(local))

    archive, digests = _download(spec, url, cache_dir, progress=progress, timeout=timeout)
    try:
        _check(spec, digests, source=url, delete_hint="the download was deleted")
        return _install(spec, archive, digests, cache_dir, url=url)
    finally:
        archive.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Digests:
    sha256: str
    md5: str
    size: int


class _Hasher:
    """SHA-256, MD5 and byte count of a stream, fed chunk by chunk."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        self._md5.update(chunk)
        self._size += len(chunk)

    def digests(self) -> _Digests:
        return _Digests(self._sha256.hexdigest(), self._md5.hexdigest(), self._size)


def _digest_file(path: Path) -> _Digests:
    hasher = _Hasher()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.digests()


def _manual_hint(spec: ArchiveSpec, cache_dir: Path) -> str:
    """How to supply the archive without this machine downloading it."""
    return (
        f"Download {spec.url} on a machine with internet access, extract it, and pass "
        f"--data-dir path/to/{spec.directory} (the extracted {spec.directory} directory itself); "
        f"or put {spec.filename} in {cache_dir}, or set {DATA_HOME_ENV} to a directory that "
        f"holds {spec.filename} or a twotower cache that already has {spec.directory}"
    )


def _download(
    spec: ArchiveSpec, url: str, cache_dir: Path, *, progress: bool, timeout: float
) -> tuple[Path, _Digests]:
    """Streams `url` into a fresh temporary file in `cache_dir`, hashing it on the way.

    Returns:
      The temporary file's path and its digests.

    Raises:
      DataError: HTTP error status, or no network (refused, DNS, timeout, dropped connection).
        The temporary file is removed.
    """
    fd, name = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.filename}.", suffix=".part")
    path = Path(name)
    done = False
    try:
        with os.fdopen(fd, "wb") as handle:
            request = urllib.request.Request(url, headers={"User-Agent": "twotower"})
            logger.info("%s: downloading %s", spec.name, url)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                declared = int(length) if length and length.isdigit() else None
                hasher = _Hasher()
                with tqdm(
                    total=declared if declared is not None else spec.size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=spec.filename,
                    disable=not progress,
                ) as bar:
                    while chunk := response.read(_CHUNK_BYTES):
                        handle.write(chunk)
                        hasher.update(chunk)
                        bar.update(len(chunk))
        digests = hasher.digests()
        if declared is not None and digests.size != declared:
            # urllib returns a short body silently when the connection drops mid-transfer.
            raise DataError(
                f"downloading {spec.name} from {url} stopped after {digests.size} of {declared} "
                "bytes; the connection dropped. Retry, or: " + _manual_hint(spec, cache_dir)
            )
        done = True
        return path, digests
    except urllib.error.HTTPError as error:
        raise DataError(
            f"downloading {spec.name} failed: {url} answered HTTP {error.code} {error.reason}. "
            + _manual_hint(spec, cache_dir)
        ) from error
    except (
        urllib.error.URLError,
        TimeoutError,
        ConnectionError,
        http.client.HTTPException,
    ) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(
            f"cannot download {spec.name} from {url} ({reason}); this machine seems offline "
            "or cannot reach the server. " + _manual_hint(spec, cache_dir)
        ) from error
    finally:
        if not done:
            path.unlink(missing_ok=True)


def _check(spec: ArchiveSpec, digests: _Digests, *, source: str, delete_hint: str) -> None:
    """Compares `digests` with every value `spec` knows.

    Raises:
      DataError: any mismatch; the message gives expected and actual values.
    """
    expected = {"sha256": spec.sha256, "md5": spec.md5, "size": spec.size}
    got = {"sha256": digests.sha256, "md5": digests.md5, "size": digests.size}
    wrong = [
        f"{key} expected {value}, got {got[key]}"
        for key, value in expected.items()
        if value is not None and value != got[key]
    ]
    if wrong:
        raise DataError(
            f"{spec.filename} from {source} failed verification: {'; '.join(wrong)}. The file "
            f"may be corrupt (an interrupted or altered download) or changed upstream; "
            f"{delete_hint}. Retry, and if GroupLens republished the archive, update its entry "
            "in tfrs_model/data/download.py"
        )
    if spec.sha256 is None and spec.md5 is None:
        logger.warning(
            "%s: no published checksum is known for %s; it was checked by size only "
            "(%s bytes, sha256 %s)",
            spec.name,
            spec.filename,
            digests.size,
            digests.sha256,
        )


def _install(
    spec: ArchiveSpec, archive: Path, digests: _Digests, cache_dir: Path, *, url: str
) -> Path:
    """Extracts a verified `archive` into a temporary directory, then renames it into place.

    The marker is written before the rename, so `cache_dir/spec.directory` appears complete
    and verified, or not at all.

    Raises:
      DataError: not a zip, an unsafe member (absolute path, `..`), or no `spec.directory`.
    """
    target = cache_dir / spec.directory
    scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{spec.directory}.", suffix=".extract"))
    try:
        try:
            with zipfile.ZipFile(archive) as bundle:
                unsafe = [m for m in bundle.namelist() if _unsafe_member(m)]
                if unsafe:
                    raise DataError(
                        f"{spec.filename} from {url} holds members that would be written outside "
                        f"the extraction directory ({', '.join(map(repr, unsafe[:5]))}); refusing "
                        "to extract it"
                    )
                bundle.extractall(scratch)
        except zipfile.BadZipFile as error:
            raise DataError(f"{spec.filename} from {url} is not a valid zip: {error}") from error
        extracted = scratch / spec.directory
        if not extracted.is_dir():
            found = sorted(p.name for p in scratch.iterdir())
            raise DataError(
                f"{spec.filename} from {url} has no top-level {spec.directory}/ directory "
                f"(found: {', '.join(found) or 'nothing'}); is the registry entry right?"
            )
        marker = {
            "dataset": spec.name,
            "archive": spec.filename,
            "url": url,
            "sha256": digests.sha256,
            "md5": digests.md5,
            "size": digests.size,
        }
        (extracted / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(extracted, target)
        except OSError:
            # Another process published the same dataset first; keep theirs if it is verified.
            if _marker_matches(target / MARKER_NAME, spec):
                return target
            raise
        logger.info("%s: extracted to %s", spec.name, target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _marker_matches(marker: Path, spec: ArchiveSpec) -> bool:
    """Whether `marker` records digests equal to every value `spec` knows."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    expected = {"sha256": spec.sha256, "md5": spec.md5, "size": spec.size}
    known = {key: value for key, value in expected.items() if value is not None}
    if not known:
        return "size" in recorded
    return all(recorded.get(key) == value for key, value in known.items())
