"""What a PostgreSQL DSN makes asyncpg try, in words, for the one-line connect error (asr_daemon.db)."""

from __future__ import annotations

import pytest

from asr_daemon import db, dsn


@pytest.mark.parametrize(
    ("dsn", "env", "expected"),
    [
        ("postgresql:///asr", {}, [(h, "5432") for h in dsn.DEFAULT_HOSTS]),
        ("postgresql:///asr", {"PGPORT": "5433"}, [(h, "5433") for h in dsn.DEFAULT_HOSTS]),
        ("postgresql:///asr", {"PGHOST": "/srv/pg", "PGPORT": "6000"}, [("/srv/pg", "6000")]),
        ("postgresql:///asr?host=/var/run/postgresql&port=5433", {"PGPORT": "1"}, [("/var/run/postgresql", "5433")]),
        ("postgresql://asr:pw@db.internal:6432/asr", {}, [("db.internal", "6432")]),
        ("postgresql://u@h1:5432,h2:5433/asr", {}, [("h1", "5432"), ("h2", "5433")]),
        ("postgresql://u@[::1]:5499/asr", {}, [("::1", "5499")]),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql:5433/asr", {}, [("/var/run/postgresql", "5433")]),
        ("postgresql://u@db.internal/asr?port=7000", {}, [("db.internal", "7000")]),
    ],
)
def test_targets_follow_asyncpgs_rules(dsn: str, env: dict[str, str], expected: list[tuple[str, str]]) -> None:
    """The URL's hosts and ports first, then its host/port parameters, then PGHOST/PGPORT, then the defaults."""
    assert db.targets(dsn, env) == expected


def test_targets_in_words() -> None:
    """Socket directories and hosts on one port read as one phrase; mixed ports are named pair by pair."""
    assert db.describe_targets([("/run/postgresql", "5432"), ("/tmp", "5432"), ("localhost", "5432")]) == (
        "socket directories /run/postgresql, /tmp and host localhost, port 5432"
    )
    assert db.describe_targets([("/var/run/postgresql", "5433")]) == "socket directory /var/run/postgresql, port 5433"
    assert db.describe_targets([("h1", "5432"), ("h2", "5433")]) == "host h1 port 5432, host h2 port 5433"


def test_connect_error_never_shows_the_password() -> None:
    """The message names hosts and ports, never the DSN with its password."""
    msg = db.connect_error("postgresql://asr:s3cret@db.internal:6432/asr", ConnectionRefusedError(111, "refused"))
    assert "s3cret" not in msg and "host db.internal, port 6432" in msg
    assert "check the host and port in ASR_DATABASE_URL" in msg  # a remote server: not the local-cluster advice
