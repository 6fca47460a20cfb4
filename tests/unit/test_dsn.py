"""Connection strings parsed and built with libpq's rules (asr_daemon/dsn.py)."""

from __future__ import annotations

import pytest

from asr_daemon import dsn


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("postgresql:///asr", {"dbname": "asr"}),
        (
            "postgresql://user@/asr?host=/var/run/postgresql",
            {"user": "user", "dbname": "asr", "host": "/var/run/postgresql"},
        ),
        (
            "postgresql://u:p%40ss@db.example:5433/asr?sslmode=verify-full",
            {
                "user": "u",
                "password": "p@ss",
                "host": "db.example",
                "port": "5433",
                "dbname": "asr",
                "sslmode": "verify-full",
            },
        ),
        ("postgres://u@h/asr", {"user": "u", "host": "h", "dbname": "asr"}),
        (
            "postgresql://%2Fvar%2Frun%2Fpostgresql:5432/asr",
            {"host": "/var/run/postgresql", "port": "5432", "dbname": "asr"},
        ),
        ("postgresql://[::1]:5432/asr", {"host": "::1", "port": "5432", "dbname": "asr"}),
        ("postgresql://h1:1,h2/asr", {"host": "h1,h2", "port": "1,", "dbname": "asr"}),
        ("postgresql:///x?dbname=y", {"dbname": "y"}),  # libpq: the query overrides the path
        ("postgresql://h/asr?ssl=true", {"host": "h", "dbname": "asr", "sslmode": "require"}),
        (
            "host=/tmp port = 5433 dbname=asr user='a b' password='it\\'s'",
            {"host": "/tmp", "port": "5433", "dbname": "asr", "user": "a b", "password": "it's"},
        ),
        ("database=asr", {"dbname": "asr"}),
    ],
)
def test_parse_follows_libpq(text: str, params: dict[str, str]) -> None:
    """URIs (with or without a host) and key=value strings give libpq's keywords."""
    assert dsn.parse(text) == params


@pytest.mark.parametrize(
    "text",
    [
        "postgresql:///asr",
        "postgresql://user@/asr?host=/var/run/postgresql",
        "postgresql://u:p%40ss%3A%2F@db.example:5433/asr?sslmode=require",
        "postgres://u@h/asr",
        "postgresql://%2Ftmp:5433/asr",
        "postgresql://[::1]:5432/asr",
        "postgresql://h1:1,h2:2/asr",
        "host=/tmp port=5433 dbname='my db' user=x password='a+b c'",
    ],
)
def test_to_url_reads_back_the_same(text: str) -> None:
    """What `to_url` writes parses to the same keywords, and normalising twice changes nothing."""
    url = dsn.normalize(text)
    assert dsn.parse(url) == {k: v for k, v in dsn.parse(text).items()}
    assert dsn.normalize(url) == url
    assert url.startswith("postgresql://")


def test_with_dbname_keeps_the_double_slash_of_a_hostless_uri() -> None:
    """`postgresql:///asr` pointed at another database stays a URI (urlunsplit dropped the `//`)."""
    assert dsn.with_dbname("postgresql:///asr", "asr_copy") == "postgresql:///asr_copy"
    assert dsn.with_dbname("postgresql://u@/asr?host=/run/pg", "x") == "postgresql://u@/x?host=/run/pg"
    assert dsn.with_dbname("postgresql:///a?dbname=b", "c") == "postgresql:///c"
    assert dsn.with_dbname("host=/tmp dbname=a", "b") == "postgresql:///b?host=/tmp"


def test_socket_directories_go_to_the_query() -> None:
    """A socket directory is written as `?host=` (asyncpg and libpq read it alike), a host name in the URI."""
    assert dsn.to_url({"host": "/run/postgresql", "port": "5433", "dbname": "asr"}) == (
        "postgresql:///asr?host=/run/postgresql&port=5433"
    )
    assert dsn.to_url({"host": "db", "port": "5433", "dbname": "asr"}) == "postgresql://db:5433/asr"


def test_for_tools_keeps_the_password_off_the_command_line() -> None:
    """The tools get a key=value conninfo without the password; PGPASSWORD carries it."""
    conninfo, env = dsn.for_tools("postgresql://u:s3cr%27t@h:5433/asr?sslmode=require")
    assert conninfo == "user='u' host='h' port='5433' dbname='asr' sslmode='require'"
    assert env["PGPASSWORD"] == "s3cr't"
    quoted, _ = dsn.for_tools("host=/tmp dbname='it\\'s'")
    assert quoted == "host='/tmp' dbname='it\\'s'"


def test_dbname_falls_back_to_pgdatabase(monkeypatch: pytest.MonkeyPatch) -> None:
    """No database in the DSN: PGDATABASE, else None (libpq's user-name default is not guessed)."""
    monkeypatch.delenv("PGDATABASE", raising=False)
    assert dsn.dbname("postgresql://h") is None
    monkeypatch.setenv("PGDATABASE", "asr")
    assert dsn.dbname("postgresql://h") == "asr"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("mysql://root:s3cret@h/db", "not PostgreSQL's"),
        ("asr", "not a PostgreSQL connection string"),
        ("host=/tmp port", "missing '='"),
        ("host='/tmp", "unterminated"),
        ("postgresql://h/asr?sslmode", "not key=value"),
        ("postgresql://[::1/asr", "IPv6"),
        ("postgresql://u:s3cret@h/asr#frag", "'#'"),
        ("postgresql://u:s3cret@h:abc/asr", "port must be a number"),
        ("host=h port=99999 password=s3cret", "port must be a number"),
        ("postgresql://u:s3cret@h/asr?connect_timeout=soon", "connect_timeout"),
    ],
)
def test_bad_strings_get_a_message_without_the_string(text: str, fragment: str) -> None:
    """Unreadable DSNs raise DsnError naming the problem, never quoting a password."""
    with pytest.raises(dsn.DsnError, match=fragment) as info:
        dsn.parse(text)
    assert "s3cret" not in str(info.value)


def test_asyncpg_gets_neither_libpq_only_parameters_nor_their_errors() -> None:
    """Parameters only libpq knows (keepalives, connect_timeout…) are left out of asyncpg's URI (the server
    would refuse them as settings); connect_timeout becomes its timeout, at least libpq's 2 s."""
    url, timeout = dsn.for_asyncpg("host=/run/pg dbname=asr connect_timeout=5 keepalives=1 application_name=x", 10)
    assert dsn.parse(url) == {"host": "/run/pg", "dbname": "asr", "application_name": "x"} and timeout == 5
    assert dsn.for_asyncpg("postgresql:///asr?connect_timeout=1", 10)[1] == 2
    assert dsn.for_asyncpg("postgresql:///asr?connect_timeout=0", 10)[1] == 10  # 0: wait as long as we would
