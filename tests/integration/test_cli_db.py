"""`asrctl db status|migrate` against real PostgreSQL, and every database command with PostgreSQL down."""

from __future__ import annotations

import json
import uuid

import pytest

from asr_daemon.ops import migrate
from tests import services
from tests.integration.ops_support import asrctl, assert_one_error_line, db

__all__ = ["db"]  # a fixture, imported for pytest

NAMES = [m.name for m in migrate.load()]


def test_db_status_of_a_migrated_database(db: str) -> None:
    """A migrated database: every migration listed as applied, none pending, exit 0."""
    result = asrctl("db", "status")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"applied  {n}" for n in NAMES]
    data = json.loads(asrctl("db", "status", "--json").stdout)
    assert data == {"applied": NAMES, "pending": []}


def test_db_status_of_an_empty_database_lists_pending_then_migrate_applies_them(
    pg: services.Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty database: every migration pending and exit 1; `db migrate` applies them all, once."""
    name = "empty_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {name}")
    monkeypatch.setenv("ASR_DATABASE_URL", pg.url(name))
    result = asrctl("db", "status")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"pending  {n}" for n in NAMES]
    assert json.loads(asrctl("db", "status", "--json").stdout) == {"applied": [], "pending": NAMES}
    first = asrctl("db", "migrate")
    assert first.exit_code == 0 and first.stdout.strip() == f"applied {len(NAMES)} migration(s): {', '.join(NAMES)}"
    assert asrctl("db", "migrate").stdout.strip() == "applied 0 migration(s)"
    assert asrctl("db", "status").exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("db", "migrate"),
        ("db", "status"),
        ("db", "status", "--json"),
        ("keys", "create", "--name", "ops"),
        ("keys", "ls"),
        ("keys", "revoke", "ops"),
    ],
    ids=" ".join,
)
def test_database_commands_with_postgresql_down(args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL unreachable: one human error line naming it, non-zero exit, no traceback, no password."""
    url = f"postgresql://asr:pw-s3cret@127.0.0.1:{services.free_port()}/asr"
    monkeypatch.setenv("ASR_DATABASE_URL", url)
    result = asrctl(*args)
    assert_one_error_line(result, "PostgreSQL (ASR_DATABASE_URL)")
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "pw-s3cret" not in result.stderr


def test_a_dsn_with_libpq_only_parameters_works_for_the_daemons_commands(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`?connect_timeout=…&keepalives=1` (libpq reads them, asyncpg would send them to the server, which
    refuses them): `db status` and `jobs ls` connect as pg_dump does."""
    monkeypatch.setenv("ASR_DATABASE_URL", db + ("&" if "?" in db else "?") + "connect_timeout=5&keepalives=1")
    assert asrctl("db", "status").exit_code == 0
    assert asrctl("jobs", "ls").exit_code == 0
