"""When ASR_DATABASE_URL cannot be used, `asrctl` says in one line what it tried and the likely fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import services
from tests.integration.ops_support import asrctl, assert_one_error_line


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ASR_REDIS_URL", f"redis://127.0.0.1:{services.free_port()}/0")


@pytest.mark.parametrize("args", [("db", "migrate"), ("db", "status"), ("status",), ("jobs", "ls")], ids=" ".join)
def test_a_cluster_that_is_not_where_the_url_points(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing listens on the socket directory and port of the URL: both named, and how to find the right ones."""
    port = services.free_port()
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql:///asr?host={tmp_path}&port={port}")
    result = asrctl(*args)
    assert_one_error_line(result, f"unreachable: tried socket directory {tmp_path}, port {port}")
    assert "pg_lsclusters" in result.stderr and "host=/var/run/postgresql&port=5433" in result.stderr


def test_the_default_url_names_every_place_asyncpg_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`postgresql:///asr` with nothing on port PGPORT: the default socket directories and localhost, that port."""
    port = services.free_port()
    monkeypatch.setenv("ASR_DATABASE_URL", "postgresql:///asr")
    monkeypatch.setenv("PGPORT", str(port))
    result = asrctl("db", "migrate")
    assert_one_error_line(
        result,
        f"socket directories /run/postgresql, /var/run/postgresql, /tmp, /private/tmp and host localhost, port {port}",
    )


def test_a_missing_database_says_how_to_create_it(pg: services.Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster answers but has no such database: where it looked, and createdb as the fix."""
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{pg.port}/no_such_db")
    result = asrctl("db", "migrate")
    assert_one_error_line(result, f'host 127.0.0.1, port {pg.port}): database "no_such_db" does not exist: create it')


def test_a_missing_role_says_the_login_was_refused(pg: services.Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster answers but knows no such role: the login refused, with the role and pg_hba.conf as the fix."""
    monkeypatch.setenv("ASR_DATABASE_URL", f"postgresql://nobody_here:pw-s3cret@127.0.0.1:{pg.port}/postgres")
    result = asrctl("db", "status")
    assert_one_error_line(result, "refused the login")
    assert "pg_hba.conf" in result.stderr and "pw-s3cret" not in result.stderr
