"""PostgreSQL source against a real, throwaway server: defaults for the short-video schema,
chunked streaming, errors with redacted connection strings, and train -> export -> query."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfrs_model.data.postgres import PostgresConfig, read_query_chunks, redact
from tfrs_model.data.tabular import load_tabular
from tfrs_model.errors import DataError

pytestmark = pytest.mark.integration

USER = "twotower"
PASSWORD = "s3cret-pw"
DSN_ENV = "TWOTOWER_TEST_PG_DSN"


def _postgres_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's versioned layout."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Server:
    socket_dir: Path
    port: int

    def dsn(self, password: str = PASSWORD, dbname: str = "postgres") -> str:
        return (
            f"host={self.socket_dir} port={self.port} user={USER} password={password} "
            f"dbname={dbname}"
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A PostgreSQL cluster in a temporary directory, listening only on a unix socket there, with
    password (SCRAM) authentication. As root, initdb refuses to run, so the server runs as
    `nobody` (which needs a directory outside root's private pytest tree)."""
    bindir = _postgres_bin()
    if bindir is None:
        message = (
            "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install postgresql (`make setup` does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="pg-"))  # short: unix socket paths max out at ~107 bytes
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL unprivileged")
        as_user = [runuser, "-u", "nobody", "--"]
    data, sockets, pwfile, log = root / "data", root / "s", root / "pw", root / "log"
    sockets.mkdir()
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        for path in (root, sockets, pwfile):
            shutil.chown(path, "nobody")
    port = _free_port()
    initdb = [
        str(bindir / "initdb"),
        "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
        "--auth", "scram-sha-256", "--encoding", "UTF8", "--no-sync",
    ]  # fmt: skip
    run = dict(capture_output=True, text=True, timeout=120, cwd=root)
    result = subprocess.run(as_user + initdb, **run)
    assert result.returncode == 0, result.stderr
    options = f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    result = subprocess.run([*as_user, *pg_ctl, "-o", options, "-w", "start"], **run)
    assert result.returncode == 0, result.stderr + (log.read_text() if log.exists() else "")
    try:
        yield Server(sockets, port)
    finally:
        subprocess.run([*as_user, *pg_ctl, "-m", "immediate", "-w", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


# 30 users in 3 countries, each viewing the 12 posts of their parity (of 24). Post p<i> belongs to user u<i % 30>.
# Post countries: p0..p7 their own ("BR"); p8..p15 none (their owner's); p16..p23 none and
# owners u16..u23 have none either (the default country).
NUM_USERS, NUM_POSTS, VIEWS_PER_USER = 30, 24, 12


def _user_country(user: int) -> str | None:
    return None if 16 <= user <= 23 else ("FR", "US", "JP")[user % 3]


def _post_country(post: int) -> str | None:
    return "BR" if post < 8 else None


def _load_rows(dsn: str) -> None:
    import psycopg

    rng = np.random.default_rng(0)
    with psycopg.connect(dsn) as connection:
        connection.execute(
            "CREATE TABLE users (id text PRIMARY KEY, country text, supported_languages text[]);"
            "CREATE TABLE post (post_id bigint PRIMARY KEY, user_id text, country text, "
            "lang text);"
            "CREATE TABLE stream_viewer (user_id text, post_id bigint, likes int, "
            "view_count int, saved char(1), created_at timestamptz);"
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO users VALUES (%s, %s, %s)",
                [
                    (f"u{u}", _user_country(u), ["en", "fr"] if u % 2 else ["ja"])
                    for u in range(NUM_USERS)
                ],
            )
            cursor.executemany(
                "INSERT INTO post VALUES (%s, %s, %s, %s)",
                [(p, f"u{p % NUM_USERS}", _post_country(p), "en") for p in range(NUM_POSTS)],
            )
            rows = []
            for user in range(NUM_USERS):
                # Each user prefers posts of their own parity; all their views are positives
                # except the first, which nobody liked, saved or watched 3 times.
                posts = rng.choice(np.arange(user % 2, NUM_POSTS, 2), VIEWS_PER_USER, replace=False)
                for step, post in enumerate(posts):
                    liked = step > 0
                    rows.append(
                        (
                            f"u{user}",
                            int(post),
                            int(liked),
                            1,
                            "N",
                            f"2024-01-01 00:{step:02d}:00+00",
                        )
                    )
            cursor.executemany("INSERT INTO stream_viewer VALUES (%s, %s, %s, %s, %s, %s)", rows)


@pytest.fixture(scope="module")
def loaded(server: Server) -> Server:
    _load_rows(server.dsn())
    return server


def _dataset_config(tmp_path: Path, **postgres) -> Path:
    path = tmp_path / "pg.yaml"
    config = {
        "name": "short-video",
        "source": "postgres",
        "postgres": {"dsn_env": DSN_ENV, "itersize": 7, "default_country": "ZZ", **postgres},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_redact_hides_passwords():
    assert redact("postgresql://me:pa@ss@db:5432/x") == "postgresql://me:***@ss@db:5432/x"
    assert redact("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"
    assert redact("host=db password=secret user=me") == "host=db password=*** user=me"
    assert redact("host=db password='a b' user=me") == "host=db password=*** user=me"
    assert redact("postgresql://db/x?user=me&password=secret") == (
        "postgresql://db/x?user=me&password=***"
    )
    assert redact("host=db user=me") == "host=db user=me"


def test_default_queries_read_the_short_video_schema(loaded, tmp_path):
    data = load_tabular(_dataset_config(tmp_path), environ={DSN_ENV: loaded.dsn()})

    # One non-positive view per user is dropped by the default label rule.
    assert len(data.interactions) == NUM_USERS * (VIEWS_PER_USER - 1)
    assert not data.has_ratings
    items = data.items.set_index("item_id")
    assert items.loc["3", "country"] == "BR"  # its own
    assert items.loc["9", "country"] == _user_country(9)  # its owner's: u9 is in "FR"
    assert items.loc["20", "country"] == "ZZ"  # neither: the configured default
    assert items.loc["9", "owner"] == "u9"
    users = data.users.set_index("user_id")
    assert users.loc["u1", "languages"] == ("en", "fr")  # a text[] column
    assert users.loc["u16", "country"] == ""
    assert [f.name for f in data.user_features] == ["country", "languages"]


def test_streams_in_chunks_of_itersize(loaded):
    chunks = list(
        read_query_chunks(
            loaded.dsn(),
            "SELECT * FROM stream_viewer ORDER BY user_id, created_at",
            PostgresConfig(itersize=64),
            table="interactions",
        )
    )
    total = NUM_USERS * VIEWS_PER_USER  # 360 rows = 5 * 64 + 40
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 64, 40]
    assert list(chunks[0].columns) == [
        "user_id", "post_id", "likes", "view_count", "saved", "created_at",
    ]  # fmt: skip
    assert sum(len(c) for c in chunks) == total


def test_transaction_is_read_only(loaded):
    # A server-side cursor only runs SELECTs; the transaction itself is READ ONLY as well.
    (chunk,) = read_query_chunks(
        loaded.dsn(),
        "SELECT current_setting('transaction_read_only') AS read_only",
        PostgresConfig(),
        table="users",
    )
    assert chunk["read_only"].tolist() == ["on"]


def _custom(tmp_path: Path, table: str, query: str) -> Path:
    path = _dataset_config(tmp_path)
    values = yaml.safe_load(path.read_text())
    values[table] = {"query": query}
    if table != "interactions":
        values[table]["features"] = []
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("table", "query", "message"),
    [
        ("users", "SELECT id AS user_id FROM no_such_users", "users: .*does not exist.*no_such_users"),
        ("items", "SELECT post_id AS item_id, nope FROM post", "items: .*column .*nope"),
        ("users", "SELECT NULL::text AS user_id FROM users", r"users.user_id \(source column 'user_id'\) has \d+ NULL"),
        ("interactions", "SELECT * FROM stream_viewer WHERE false", "interactions: the query returned no rows"),
    ],
)  # fmt: skip
def test_bad_tables_are_data_errors_with_redacted_dsn(loaded, tmp_path, table, query, message):
    path = _custom(tmp_path, table, query)
    with pytest.raises(DataError, match=message) as error:
        load_tabular(path, environ={DSN_ENV: loaded.dsn()})
    assert PASSWORD not in str(error.value)


def test_wrong_password_is_a_data_error_without_the_password(loaded, tmp_path):
    with pytest.raises(DataError, match="password") as error:
        load_tabular(_dataset_config(tmp_path), dsn=loaded.dsn(password="wrong-pw-123"))
    assert "wrong-pw-123" not in str(error.value)
    assert "password=***" in str(error.value)


def test_unreachable_server_is_a_data_error(loaded, tmp_path):
    dsn = f"host={loaded.socket_dir} port={_free_port()} user={USER} password={PASSWORD}"
    with pytest.raises(
        DataError, match=r"cannot connect to PostgreSQL.*server is running"
    ) as error:
        load_tabular(_dataset_config(tmp_path, connect_timeout_s=2), dsn=dsn)
    assert PASSWORD not in str(error.value)


def test_train_export_and_query_end_to_end(loaded, tmp_path):
    import tensorflow as tf

    from export import contract
    from export.index import IndexConfig
    from export.loading import load_saved_model
    from export.savedmodel import ExportConfig, export_run
    from tfrs_model.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tfrs_model.training import train

    data = load_tabular(_dataset_config(tmp_path), environ={DSN_ENV: loaded.dsn()})
    config = RunConfig(
        data=DataConfig(
            dataset="tabular", history_length=4, test_fraction=0.25, validation_fraction=0.25
        ),
        model=ModelConfig(
            embedding_dim=8, id_embedding_dim=8, feature_embedding_dim=4, hidden_layers=()
        ),
        train=TrainConfig(epochs=1, batch_size=64, early_stopping_patience=0, tensorboard=False),
    )
    train(data, config, tmp_path / "run")
    result = export_run(
        ExportConfig(
            run_dir=str(tmp_path / "run"),
            model_base_path=str(tmp_path / "models"),
            index=IndexConfig(kind="brute-force", k=5),
            verify=False,
        )
    )
    model = load_saved_model(result.path)
    answer = model.signatures[contract.SERVING_DEFAULT](user_id=tf.constant(["u1", "u2"]))
    item_ids = answer[contract.ITEM_IDS].numpy()
    assert item_ids.shape == (2, 5)
    assert set(item_ids.reshape(-1).astype(str)) <= {str(p) for p in range(NUM_POSTS)}
    scores = answer[contract.SCORES].numpy()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
