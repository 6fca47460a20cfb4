"""Backup, restore `--into`, `restore --verify` and `db status` through the CLI with every DSN form a
user may write, the README's default (`postgresql:///asr`, the local socket) first.

The session's PostgreSQL listens on a Unix socket in its own directory too, so the host-less forms
reach it the way they reach the host's server: the default DSN through libpq's environment (PGHOST
names the socket directory, as /var/run/postgresql is on a Debian host), the others by `?host=`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import services
from tests.integration.ops_support import asrctl, assert_one_error_line, seed, snapshot

#: each form builds ASR_DATABASE_URL for (cluster, database name); None: leave the variable unset
FORMS: dict[str, Callable[[services.Postgres, str], str] | None] = {
    "default postgresql:///asr": None,
    "socket postgresql:///NAME": lambda pg, name: f"postgresql:///{name}",
    "socket ?host=": lambda pg, name: f"postgresql://postgres@/{name}?host={pg.root}&port={pg.port}",
    "socket in the host part": lambda pg, name: (
        f"postgresql://postgres@{str(pg.root).replace('/', '%2F')}:{pg.port}/{name}"
    ),
    "tcp password sslmode": lambda pg, name: (
        f"postgresql://postgres:p%40ss%3Aw0rd@127.0.0.1:{pg.port}/{name}?sslmode=prefer&application_name=asr-test"
    ),
    "postgres:// scheme": lambda pg, name: f"postgres://postgres@localhost:{pg.port}/{name}",
    "libpq key=value": lambda pg, name: f"host={pg.root} port={pg.port} user=postgres dbname='{name}'",
}


@pytest.fixture
def form_db(
    request: pytest.FixtureRequest,
    pg: services.Postgres,
    template_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """A migrated database reached through the DSN form of the test's parameter; its name. libpq's
    environment names the cluster's socket directory, port and superuser (as a host's defaults do)."""
    build = FORMS[request.param]
    name = "asr" if build is None else "dsn_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    for key in ("ASR_DATABASE_URL", "ASR_REDIS_URL", "ASR_STATE_DIR", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PGHOST", str(pg.root))
    monkeypatch.setenv("PGPORT", str(pg.port))
    monkeypatch.setenv("PGUSER", "postgres")
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ASR_REDIS_URL", f"redis://127.0.0.1:{services.free_port()}/0")
    if build is not None:
        monkeypatch.setenv("ASR_DATABASE_URL", build(pg, name))
    try:
        yield name
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _databases(pg: services.Postgres) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database").split())


@pytest.mark.parametrize("form_db", list(FORMS), indirect=True)
def test_backup_restore_into_and_verify_with_each_dsn_form(form_db: str, pg: services.Postgres, tmp_path: Path) -> None:
    """Every DSN form: `db status`, backup, `restore --into` a new database and `restore --verify` work,
    and the scratch database is gone afterwards."""
    seed(pg, form_db, jobs=2)
    status = asrctl("db", "status", "--json")
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["pending"] == []
    made = asrctl("backup", "--json")
    assert made.exit_code == 0, made.stderr
    dump = json.loads(made.stdout)["file"]
    copy = form_db + "_copy"
    try:
        restored = asrctl("restore", dump, "--into", copy, "--json")
        assert restored.exit_code == 0, restored.stderr
        assert json.loads(restored.stdout)["database"] == copy
        assert snapshot(pg, copy) == snapshot(pg, form_db)
        before = _databases(pg)
        verified = asrctl("restore", dump, "--verify", "--json")
        assert verified.exit_code == 0, verified.stderr
        assert json.loads(verified.stdout)["tables"]["jobs"] == 2
        assert _databases(pg) == before
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)")


def _failing_psql(tmp_path: Path, pg: services.Postgres) -> Path:
    """A bin directory with the real pg_dump and pg_restore and a psql stand-in that fails (as a full
    disk or a killed session would) after the restore target was created."""
    bindir = tmp_path / "failbin"
    bindir.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        (bindir / tool).symlink_to(pg.bindir / tool)
    psql = bindir / "psql"
    psql.write_text('#!/bin/sh\ncat >/dev/null\necho "psql: error: injected failure" >&2\nexit 2\n')
    psql.chmod(0o755)
    return bindir


@pytest.mark.parametrize("form_db", ["default postgresql:///asr"], indirect=True)
def test_a_failed_restore_into_a_new_database_leaves_nothing_behind(
    form_db: str, pg: services.Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`restore --into NEW` that fails after creating NEW drops it again: no half-made database."""
    dump = json.loads(asrctl("backup", "--json").stdout)["file"]
    before = _databases(pg)
    monkeypatch.setenv("ASR_PG_BINDIR", str(_failing_psql(tmp_path, pg)))
    assert_one_error_line(asrctl("restore", dump, "--into", "asr_half"), "injected failure")
    assert _databases(pg) == before


def test_a_dsn_that_is_not_postgresql_gets_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A DSN of another scheme is refused with one line naming the variable, and no password in it."""
    monkeypatch.setenv("ASR_DATABASE_URL", "mysql://root:pw-s3cret@db/asr")
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    result = asrctl("backup")
    assert_one_error_line(result, "invalid ASR_DATABASE_URL")
    assert "pw-s3cret" not in result.stderr
